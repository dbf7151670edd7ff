"""Issue 24 items 1, 2.4 and 2.15: the README's install and token lines work as written.

The quick start's install commands install hwnas-agent (hwnas's dependency, not on PyPI) from the
checkout; the CPU-only torch line names PyTorch's CPU index and hwnas's own torch range; the
agent section's token lines, run as written in an empty HOME, leave a private token file where the
device file in the same section reads it.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_quick_start_installs_the_agent_with_hwnas() -> None:
    lines = [line for block in _blocks(_section("Quick start"), "bash") for line in block.splitlines()]
    installs = [line for line in lines if "pip install" in line and re.search(r"-e '?\.(?:[\[' ]|$)", line)]
    assert len(installs) == 3, lines  # commands 1, 2 and 3 (your own images)
    for line in installs:
        # In the same pip command as hwnas, so pip resolves the hwnas-agent==0.1.0 requirement locally.
        assert re.search(r"pip install -e \./agent -e '?\.", line), line


def test_quick_start_names_the_cpu_torch_index_and_hwnas_torch_range() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [d for d in deps if re.match(r"torch\b", d)]
    torch_range = torch_req.removeprefix("torch")
    text = _section("Quick start")
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert f"`{torch_range}`" in text, f"the README should state hwnas's torch range {torch_range}"


def test_agent_token_lines_work_in_an_empty_home(tmp_path: Path) -> None:
    section = _section("Measuring on the device you ship to: the agent")
    (device_block,) = _blocks(section, "sh")
    # The lines that make the token (the venv, pip and server lines are the agent tests' business).
    token_lines = [line for line in device_block.splitlines() if line.startswith(("mkdir", "python -c"))]
    assert any("token" in line for line in token_lines), device_block
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(token_lines)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # The device file in the same section reads the token from where the lines wrote it.
    (token_file,) = re.findall(r'token_file = "~/(.*?)"', section)
    token = home / token_file
    assert len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
