#!/usr/bin/env python3
"""Check that hwnas works as installed from its wheels, not only from a checkout (CI runs it).

    python tools/check_wheel.py [--torch "torch==2.13.0"] [--keep]

Run with the Python of a development install (pip install -e ./agent -e '.[dev]'): it builds
the hwnas and hwnas-agent wheels from a clean copy of the checkout (its tracked and untracked,
not ignored files; no stale build/ folder can leak into them), installs them into a fresh venv
(torch first, from ``--torch``: on a machine without PyTorch's CPU wheel at hand pass
``--torch "torch --index-url https://download.pytorch.org/whl/cpu"``), then, from a temporary
folder outside the checkout, with a fresh HOME and no PYTHONPATH:

- imports every module of the installed hwnas and hwnas_agent packages and checks that each one
  comes from the venv's site-packages, never from the checkout;
- checks that hwnas_agent has one owner (no file of it in the hwnas distribution's RECORD);
- runs ``python -m hwnas --help``, ``hwnas-agent --help`` and a table-device search
  (``hwnas search --device pixel3 --latency 5ms --trials 20``), which must exit 0 and write
  best.onnx and report.json.

Prints one line of what it checked and how long each part took; any failure prints what failed
and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run inside the fresh venv: import every module, say where each came from.
_IMPORT_ALL = r"""
import importlib, importlib.metadata, json, pkgutil, sys, sysconfig
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"]).resolve()
checkout = Path(sys.argv[1]).resolve()
bad, names = [], []
for top in ("hwnas", "hwnas_agent"):
    pkg = importlib.import_module(top)
    mods = [top] + [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".")]
    for name in mods:
        if name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing it runs the command line; the caller runs `python -m` instead
        path = Path(importlib.import_module(name).__file__).resolve()
        names.append(name)
        if not path.is_relative_to(site) or path.is_relative_to(checkout):
            bad.append(f"{name} from {path}")
owned = [str(f) for f in importlib.metadata.files("hwnas") or [] if str(f).startswith("hwnas_agent")]
print(json.dumps({"modules": names, "bad": bad, "agent_files_in_hwnas": owned}))
"""


class CheckFailed(Exception):
    """One check failed; its message says which and what it printed."""


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; its stdout, or CheckFailed with its output when it exits non-zero."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise CheckFailed(f"{shlex.join(cmd)} exited {proc.returncode} (in {cwd}):\n{tail}")
    return proc.stdout


def clean_copy(dest: Path) -> Path:
    """Copy the checkout's tracked and untracked, not ignored files to ``dest`` (what a fresh clone
    plus the developer's new files would hold); the copy's root."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # a file deleted but not yet staged is still listed
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_wheels(src: Path, out: Path) -> tuple[Path, Path]:
    """Build the hwnas and hwnas-agent wheels of the source tree ``src`` into ``out`` (offline: no
    build isolation, so this Python's setuptools builds them); (hwnas wheel, hwnas-agent wheel)."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*pip_wheel, "-w", str(out), str(src), str(src / "agent")], cwd=src)
    (hwnas,) = out.glob("hwnas-*.whl")
    (agent,) = out.glob("hwnas_agent-*.whl")
    return hwnas, agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--torch", default="torch==2.13.0", help="pip arguments that install torch first (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="hwnas-wheel-check-"))
    times: dict[str, float] = {}
    start = last = time.monotonic()

    def lap(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        times[name] = now - last
        last = now

    try:
        hwnas_whl, agent_whl = build_wheels(clean_copy(tmp / "src"), tmp / "dist")
        lap("build")

        venv = tmp / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
        py, bindir = venv / "bin" / "python", venv / "bin"
        # --no-compile: byte-compiling all of torch took over half the install (117 s against 50 s on
        # 2 busy cores); the modules the checks import are compiled as they are imported.
        pip = [str(py), "-m", "pip", "install", "--quiet", "--no-compile"]
        _run([*pip, *shlex.split(args.torch)], cwd=tmp)
        _run([*pip, str(agent_whl), str(hwnas_whl)], cwd=tmp)
        lap("install")

        # A new user's shell: outside the checkout, fresh HOME, nothing on PYTHONPATH, no hwnas settings.
        outside, home = tmp / "outside", tmp / "home"
        outside.mkdir()
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("HWNAS_")}
        env.update(HOME=str(home), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
        env.pop("XDG_CACHE_HOME", None)
        env.pop("XDG_DATA_HOME", None)

        found = json.loads(_run([str(py), "-c", _IMPORT_ALL, str(REPO)], cwd=outside, env=env))
        if found["bad"]:
            raise CheckFailed("modules not imported from the venv's site-packages: " + "; ".join(found["bad"]))
        if found["agent_files_in_hwnas"]:
            raise CheckFailed("the hwnas distribution ships hwnas_agent files too: " + ", ".join(found["agent_files_in_hwnas"][:5]))
        if "hwnas.search" not in found["modules"]:
            raise CheckFailed(f"hwnas.search not among the installed modules: {found['modules']}")
        _run([str(py), "-m", "hwnas", "--help"], cwd=outside, env=env)
        _run([str(bindir / "hwnas-agent"), "--help"], cwd=outside, env=env)
        lap("imports")

        run = outside / "run"
        search = ["search", "--device", "pixel3", "--latency", "5ms", "--trials", "20", "--out", str(run)]
        _run([str(bindir / "hwnas"), *search], cwd=outside, env=env)
        missing = [name for name in ("best.onnx", "report.json") if not (run / name).is_file()]
        if missing:
            raise CheckFailed(f"hwnas search exited 0 but wrote no {' or '.join(missing)} in {run}")
        lap("search")
    except CheckFailed as exc:
        print(f"wheel check FAILED: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        return 1

    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)  # a venv of 1.3 GB: tens of seconds on a busy disk
        lap("cleanup")
    parts = ", ".join(f"{name} {secs:.0f} s" for name, secs in times.items())
    print(
        f"wheel check: built {hwnas_whl.name} and {agent_whl.name}, installed them in a fresh venv, imported "
        f"{len(found['modules'])} modules from its site-packages outside the checkout (hwnas_agent owned by hwnas-agent only), "
        f"'hwnas search --device pixel3 --latency 5ms --trials 20' wrote best.onnx and report.json; "
        f"{time.monotonic() - start:.0f} s ({parts})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
