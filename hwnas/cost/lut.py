"""Latency lookup tables: measured block latencies plus a calibration fitted on whole networks.

A table is one JSON file (schema below) built by ``hwnas profile`` for one device, space and
runtime. Prediction is a dot product: ``latency = coef . features(arch)``, where the features
are the sum of the arch's block latencies from the table and, per space, what makes latency
non-additive (NB201: node counts of ORT's optimised cell graph). Nothing is guessed: a block
missing from the table is an error that names the key and the command that measures it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import HwnasError, UsageError
from hwnas.spaces import Arch, SearchSpace

SCHEMA = "hwnas.latency_table"
SCHEMA_VERSION = 1
#: Fingerprint fields that must match for a table to describe this machine.
FINGERPRINT_KEYS = ("machine", "cpu", "isa", "gpu")
#: Larger files are refused unread (an nb201 table is about 2 MB, most of it cell-structure features).
MAX_TABLE_BYTES = 256 * 2**20
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


# -- where tables live --------------------------------------------------------------
#: The environment variable that names the one folder of lookup tables (else :func:`tables_dir`'s default).
TABLES_ENV = "HWNAS_TABLES"
#: Where ``hwnas profile`` wrote tables before they had a per-user folder (relative to the working directory).
LEGACY_DIR = Path("latency_tables")


def tables_dir() -> Path:
    """The one folder of lookup tables: ``hwnas profile`` writes there, ``hwnas search`` reads there.

    ``$HWNAS_TABLES`` where set, else the platform's per-user data folder: on Linux
    ``$XDG_DATA_HOME/hwnas/latency_tables`` (default ``~/.local/share/hwnas/latency_tables``), on
    macOS ``~/Library/Application Support/hwnas/latency_tables``, on Windows
    ``%LOCALAPPDATA%\\hwnas\\latency_tables``. One folder for every working directory: a table built
    in one folder serves a search started in any other.
    """
    env = os.environ.get(TABLES_ENV, "")
    if env:
        return Path(env).expanduser()
    import sys

    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"  # XDG: a relative value is ignored
    return base / "hwnas" / "latency_tables"


def shown(path: Path) -> str:
    """``path`` for messages, with the home folder as ``~``."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def table_name(device: str, space: str, precision: str = "fp32") -> str:
    """``<device>-<space>.json`` (fp32, as tables always were), ``<device>-<space>-<precision>.json`` otherwise."""
    return f"{device}-{space}.json" if precision == "fp32" else f"{device}-{space}-{precision}.json"


def find_table(device: str, space: str, precision: str = "fp32") -> Path | None:
    """The table of ``device``, ``space`` and ``precision`` in :func:`tables_dir`, None where there is none."""
    p = tables_dir() / table_name(device, space, precision)
    return p if p.is_file() else None


def legacy_table(device: str, space: str, precision: str = "fp32") -> Path | None:
    """A table where an older ``hwnas profile`` wrote it (``./latency_tables``), which is no longer read by itself."""
    p = LEGACY_DIR / table_name(device, space, precision)
    if not p.is_file():
        return None
    try:
        if p.resolve().parent == tables_dir().resolve():
            return None
    except OSError:
        pass
    return p


# -- this machine -----------------------------------------------------------------
@cache
def fingerprint(provider: str) -> dict[str, Any]:
    """What identifies the hardware a table was measured on."""
    cpu: str = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu in ("unknown", "", platform.machine()):
                cpu = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    gpu = None
    if provider == "CUDAExecutionProvider":
        try:
            gpu = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=False
                )
                .stdout.splitlines()[0]
                .strip()
            )
        except (OSError, IndexError, subprocess.SubprocessError):
            gpu = "unknown"
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": sorted(flags & set(_ISA_FLAGS)),
        "gpu": gpu,
    }


def runtime_versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0]}


# -- the table ----------------------------------------------------------------------
@dataclass
class LatencyTable:
    """A loaded, schema-checked latency table."""

    data: dict[str, Any]
    path: str = ""
    #: The user accepted this table although it is marked as failing its check (``search --allow-failing-table``).
    accept_failing: bool = False

    @property
    def space(self) -> str:
        return str(self.data["space"])

    @property
    def device(self) -> str:
        return str(self.data["device"]["name"])

    @property
    def precision(self) -> str:
        """What its latencies were measured at: fp32 | int8 (a table without the field is fp32, as tables before precision were)."""
        return str(self.data["measurement"].get("precision", "fp32"))

    def precision_mismatch(self, precision: str, device: str, space: str) -> str | None:
        """One line when the table's precision is not ``precision`` (never overridable: the numbers measure another model), else None."""
        if self.precision == precision:
            return None
        return (
            f"latency table {self.path or '(unsaved)'} holds {self.precision} latencies, but this search is at {precision}; build the "
            f"{precision} table with 'hwnas profile --device {device} --space {space} --precision {precision}'"
        )

    @property
    def entries(self) -> dict[str, dict[str, float]]:
        return self.data["entries"]  # type: ignore[no-any-return]

    @property
    def check(self) -> dict[str, Any] | None:
        return self.data.get("check")

    @property
    def failing(self) -> str | None:
        """Why ``hwnas profile`` marked the table as failing its check (kept with ``--force``), else None."""
        verdict = self.data.get("verdict")
        if verdict is None or verdict["passed"]:
            return None
        return str(verdict["reason"])

    # -- io --------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, accept_failing: bool = False) -> LatencyTable:
        """Read and schema-check a table; ``accept_failing``: use it even where it is marked as failing its check.

        Raises:
            UsageError: one line naming the file and what is wrong with it.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_TABLE_BYTES:
                raise UsageError(
                    f"latency table {path} is {size:,} bytes, more than any hwnas table ({MAX_TABLE_BYTES:,}); is it the right file? "
                    "Rebuild it with 'hwnas profile'"
                )
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"latency table {path} does not exist; build it with 'hwnas profile'") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError: JSONDecodeError, or an integer too long to convert; RecursionError: absurd nesting.
            raise UsageError(
                f"latency table {path} is unreadable or not JSON ({type(exc).__name__}); rebuild it with 'hwnas profile'"
            ) from None
        _check_schema(data, path)
        return cls(data=data, path=str(path), accept_failing=accept_failing)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        self.path = str(path)

    # -- compatibility ------------------------------------------------------------
    def mismatches_for(self, device: Any) -> list[str]:
        """Why this table does not describe ``device`` as it measures now ([] if it does): the
        device's kind says its fingerprint and runtime (this machine's for onnxruntime devices,
        the agent's for remote ones)."""
        from hwnas.cost.source import device_kind

        kind = device_kind(device.kind)
        found = self.mismatches(
            provider=device.provider,
            threads=device.threads,
            batch=device.batch,
            fingerprint_now=kind.fingerprint(device),
            runtime_now=kind.runtime(device),
        )
        if self.precision != device.precision:
            found.insert(0, f"precision {self.precision} != {device.precision}")
        return found

    def mismatches(
        self,
        *,
        provider: str,
        threads: int,
        batch: int,
        fingerprint_now: dict[str, Any] | None = None,
        runtime_now: dict[str, str] | None = None,
    ) -> list[str]:
        """Why this table does not describe the machine and settings ([] if it does); the machine
        is this one unless ``fingerprint_now`` and ``runtime_now`` say another's."""
        out = []
        fp_now = fingerprint(provider) if fingerprint_now is None else fingerprint_now
        fp_then = self.data["device"]["fingerprint"]
        for key in FINGERPRINT_KEYS:
            if fp_then.get(key) != fp_now.get(key):
                out.append(f"{key} {fp_then.get(key)!r} != this machine's {fp_now.get(key)!r}")
        rt = self.data["runtime"]
        now = runtime_versions() if runtime_now is None else runtime_now
        if rt.get("onnxruntime") != now["onnxruntime"]:
            out.append(f"onnxruntime {rt.get('onnxruntime')} != installed {now['onnxruntime']}")
        if "torch_runtime" in rt and rt["torch_runtime"] != now.get("torch_runtime"):  # measured by running PyTorch itself
            out.append(f"{rt['torch_runtime']} != installed {now.get('torch_runtime')}")
        m = self.data["measurement"]
        if self.data["device"].get("provider") != provider:
            out.append(f"provider {self.data['device'].get('provider')} != {provider}")
        if m.get("threads") != threads:
            out.append(f"threads {m.get('threads')} != {threads}")
        if m.get("batch") != batch:
            out.append(f"batch {m.get('batch')} != {batch}")
        return out

    # -- prediction -------------------------------------------------------------------
    def block_sum(self, space: SearchSpace, arch: Arch) -> float:
        codec = space.lut_codec()
        entries = self.entries
        total = 0.0
        for key in codec.blocks(arch):
            entry = entries.get(key)
            if entry is None:
                raise HwnasError(
                    f"latency table {self.path or '(unsaved)'} has no entry {key!r}; fill it with "
                    f"'hwnas profile --device {self.device} --space {space.name}{codec.profile_hint(key)}'"
                )
            total += entry["median_ms"]
        return total

    def features(self, space: SearchSpace, arch: Arch) -> np.ndarray:
        return space.lut_codec().features(self, arch)

    def predict_ms(self, space: SearchSpace, arch: Arch) -> float:
        cal = self.data["calibration"]
        x = self.features(space, arch)
        return float(np.dot(np.asarray(cal["coef"]), x) + cal["intercept"])


_REQUIRED = {
    "schema": str,
    "schema_version": int,
    "space": str,
    "device": dict,
    "runtime": dict,
    "measurement": dict,
    "entries": dict,
    "calibration": dict,
}


def _number(x: Any) -> bool:
    """A finite JSON number (not a bool, not NaN or infinity, which Python's json accepts)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


#: Numbers every accuracy check of a table holds (what the search's warnings and report read).
_CHECK_NUMBERS = ("n", "within_5pct", "within_10pct", "mape_pct")


def _check_schema(data: Any, path: Path) -> None:
    """Everything the search, the prediction and ``hwnas profile --reuse`` read, checked once here,
    so a broken or hand-edited table is refused with one line instead of failing later."""

    def bad(why: str) -> UsageError:
        return UsageError(f"latency table {path} is not a valid hwnas table ({why}); rebuild it with 'hwnas profile'")

    if not isinstance(data, dict):
        raise bad("top level is not an object")
    if data.get("schema") != SCHEMA:
        raise bad(f"schema is {_short(data.get('schema'))}, expected {SCHEMA!r}")
    if data.get("schema_version") != SCHEMA_VERSION or isinstance(data.get("schema_version"), bool):
        raise bad(f"schema_version {_short(data.get('schema_version'))}, this hwnas reads {SCHEMA_VERSION}")
    for key, typ in _REQUIRED.items():
        if not isinstance(data.get(key), typ):
            raise bad(f"{key!r} missing or not a {typ.__name__}")
    from hwnas.spaces import SPACES

    if data["space"] not in SPACES:
        raise bad(f"space {_short(data['space'])} is not one of {', '.join(SPACES.names())}")
    if not isinstance(data["device"].get("fingerprint"), dict) or not isinstance(data["device"].get("name"), str):
        raise bad("device.name / device.fingerprint missing")
    for key, entry in data["entries"].items():
        if not isinstance(entry, dict) or not _number(entry.get("median_ms")) or not entry["median_ms"] >= 0:
            raise bad(f"entry {_short(key)} has no finite, non-negative median_ms")
    cal = data["calibration"]
    coef = cal.get("coef")
    if not isinstance(coef, list) or not all(_number(c) for c in coef) or not _number(cal.get("intercept")):
        raise bad("calibration.coef / calibration.intercept missing or not finite numbers")
    if not isinstance(cal.get("feature_names"), list) or len(cal["feature_names"]) != len(coef):
        raise bad("calibration.feature_names does not match calibration.coef")
    if not isinstance(cal.get("measured", []), list) or not all(
        isinstance(m, dict) and isinstance(m.get("arch"), str) for m in cal.get("measured", [])
    ):
        raise bad("calibration.measured is not a list of {arch, median_ms}")
    try:
        codec = SPACES.get(data["space"]).lut_codec()
    except UsageError:
        raise bad(f"space {data['space']!r} has no latency-table blocks") from None
    want = codec.feature_names(codec.check_structure(data, bad))
    if cal["feature_names"] != want:
        raise bad(f"calibration.feature_names {_short(cal['feature_names'])} are not this hwnas's features of {data['space']}")
    check = data.get("check")
    if check is not None:
        if not isinstance(check, dict) or not all(_number(check.get(k)) for k in _CHECK_NUMBERS):
            raise bad(f"check must hold the numbers {', '.join(_CHECK_NUMBERS)}")
        tau = check.get("kendall_tau")  # NaN when the checked networks tie
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not isinstance(check.get("when", ""), str):
            raise bad("check.kendall_tau / check.when missing")
    verdict = data.get("verdict")
    if verdict is not None and not (
        isinstance(verdict, dict)
        and isinstance(verdict.get("passed"), bool)
        and (verdict["passed"] or isinstance(verdict.get("reason"), str))
    ):
        raise bad("verdict must hold passed (true or false) and, for a table that failed, its reason")
    ref = data.get("reference")
    if ref is not None and not (isinstance(ref, dict) and isinstance(ref.get("arch"), str) and _number(ref.get("median_ms"))):
        raise bad("reference must hold arch and median_ms")
    options = data.get("space_options", {})
    if data["measurement"].get("precision", "fp32") not in ("fp32", "int8", "fp16", "bf16"):
        raise bad(f"measurement.precision {_short(data['measurement'].get('precision'))} is not fp32, int8, fp16 or bf16")
    if not isinstance(options, dict) or not (
        options.get("resolutions") is None
        or (
            isinstance(options["resolutions"], list) and all(isinstance(r, int) and not isinstance(r, bool) for r in options["resolutions"])
        )
    ):
        raise bad("space_options.resolutions must be a list of whole numbers")


def _short(x: Any, limit: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."
