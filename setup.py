"""Package discovery for the hwnas distribution (the rest of its metadata is in pyproject.toml).

pyproject.toml alone can either find packages or list them, not both: every ``hwnas.*`` package is
found here (a new subpackage ships without anyone listing it), and ``hwnas._devices``, the top-level
``devices/`` folder mapped by ``package-dir`` there, is added by name since no search can find it.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["hwnas", "hwnas.*"]), "hwnas._devices"])
