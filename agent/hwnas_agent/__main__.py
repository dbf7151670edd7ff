"""``python -m hwnas_agent``."""

import sys

from hwnas_agent.cli import main

sys.exit(main())
