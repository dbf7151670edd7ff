"""Issue 24 item 1: the built wheels hold every package and data file, and hwnas_agent has one owner.

The wheels are built the way CI's wheel check (tools/check_wheel.py) builds them: from a clean copy
of the checkout, offline, with this Python's setuptools (about 5 s for both). The check that they
also install and run outside the checkout is that script's, run by .ci/run.
"""

from __future__ import annotations

import importlib.util
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _check_wheel() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "tools" / "check_wheel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the clean copy the wheels were built from, the hwnas wheel, the hwnas-agent wheel)."""
    check = _check_wheel()
    tmp = tmp_path_factory.mktemp("wheels")
    src = check.clean_copy(tmp / "src")
    hwnas_whl, agent_whl = check.build_wheels(src, tmp / "dist")
    return src, hwnas_whl, agent_whl


def _files(root: Path, package: str) -> set[str]:
    """Every file under ``root/package`` as a path inside a wheel (caches left out)."""
    return {
        p.relative_to(root).as_posix()
        for p in (root / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def _version(pyproject: Path) -> str:
    return str(tomllib.loads(pyproject.read_text())["project"]["version"])


def test_hwnas_wheel_holds_every_package_and_data_file(built: tuple[Path, Path, Path]) -> None:
    src, hwnas_whl, _ = built
    names = _names(hwnas_whl)
    packages = {p.parent.relative_to(src).as_posix() for p in (src / "hwnas").rglob("__init__.py")}
    assert "hwnas/search" in packages  # the package the hand-written list left out
    missing_packages = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing_packages, f"packages missing from {hwnas_whl.name}: {missing_packages}"
    # Every module and data file (py.typed, data/*.npz, SHA256SUMS, NOTICE.md, licenses/).
    missing = sorted(_files(src, "hwnas") - names)
    assert not missing, f"files missing from {hwnas_whl.name}: {missing}"
    assert {"hwnas/py.typed", "hwnas/data/nb201.npz", "hwnas/data/SHA256SUMS"} <= names
    # The top-level devices/ folder ships as hwnas/_devices (where an installed hwnas looks for it).
    devices = {f"hwnas/_devices/{p.name}" for p in (src / "devices").glob("*.toml")}
    assert "hwnas/_devices/pixel3.toml" in devices
    assert devices <= names, f"device files missing from {hwnas_whl.name}: {sorted(devices - names)}"


def test_hwnas_agent_has_one_owner(built: tuple[Path, Path, Path]) -> None:
    src, hwnas_whl, agent_whl = built
    hwnas_names, agent_names = _names(hwnas_whl), _names(agent_whl)
    version = _version(src / "pyproject.toml")
    assert {n.split("/", 1)[0] for n in hwnas_names} == {"hwnas", f"hwnas-{version}.dist-info"}
    assert not [n for n in hwnas_names if n.startswith("hwnas_agent")]
    # The agent's own wheel holds all of it, and nothing else at the top level.
    agent_version = _version(src / "agent" / "pyproject.toml")
    missing = sorted(_files(src / "agent", "hwnas_agent") - agent_names)
    assert not missing, f"files missing from {agent_whl.name}: {missing}"
    assert {n.split("/", 1)[0] for n in agent_names} == {"hwnas_agent", f"hwnas_agent-{agent_version}.dist-info"}
    # hwnas imports hwnas_agent (its timing core), so it depends on that distribution, at its version.
    with zipfile.ZipFile(hwnas_whl) as z:
        metadata = Parser().parsestr(z.read(f"hwnas-{version}.dist-info/METADATA").decode())
    requires = [r.replace(" ", "") for r in metadata.get_all("Requires-Dist") or []]
    assert f"hwnas-agent=={agent_version}" in requires, requires
