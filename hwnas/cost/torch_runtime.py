"""The ``torch`` device kind: latency measured by running the PyTorch module itself, on a CUDA GPU or the CPU.

Many networks are deployed straight from PyTorch (eager, ``torch.compile``, CUDA graphs), so this
is a runtime of its own, not a stand-in for ONNX Runtime. A device file reads::

    name = "cuda_torch"
    kind = "torch"
    device = "cuda"          # or "cpu"
    batch = 1                # 1, 32 and 256 are what HELP's GPU tables hold
    precision = "fp32"       # the common key: fp32 | fp16 | bf16 (fp16 on cuda only)
    compile = "none"         # none | default | max-autotune (torch.compile's modes)
    threads = 1              # torch's intra-op threads while measuring
    warmup = 50
    repeats = 200

Timing: on CUDA, one pair of CUDA events around each call, synchronised after it (a latency, not
a throughput: calls never overlap); on the CPU, ``time.perf_counter_ns`` around each call. Both
under ``torch.inference_mode``, after ``warmup`` untimed calls (and the compilation, when
``compile`` is set), with the statistics of ONNX Runtime measurements (median, p90, IQR, min).
The GPU's clocks, temperature and power are read before and after, where NVML or ``nvidia-smi``
answers. ``benchmarks/torch_runtime.py`` checks the timed loop against a bare one.

Lookup tables (``hwnas profile``) are built through :data:`TORCH`'s ``measure`` hook, which times
modules: its ``prepare`` hook hands the block or network module over as it is, where ONNX Runtime
kinds get the exported bytes.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.cost.latency import Latency, MeasuredLatency
from hwnas.cost.measure import Measurement
from hwnas.cost.source import CostSource, DeviceKind, KeySpec, LatencyRequest
from hwnas.errors import UsageError

if TYPE_CHECKING:
    import torch

    from hwnas.device import Device
    from hwnas.registry import Registry
    from hwnas.spaces import Arch, SearchSpace

#: What a latency measured here reads in trials and reports.
SOURCE = "measured (torch)"
DEVICES = ("cpu", "cuda")
COMPILE_MODES = ("none", "default", "max-autotune")
#: The precisions each device runs (the device file's common ``precision`` key): float16 on the
#: CPU is refused, its kernels there are slow fallbacks that no deployment uses.
DEVICE_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

TORCH_KEYS = {
    "device": KeySpec(str, example='device = "cuda"'),
    "compile": KeySpec(str, "none", example='compile = "none"'),
    "threads": KeySpec(int, 1, 1, 1024, "threads = 1"),
    "warmup": KeySpec(int, 20, 0, 100_000, "warmup = 20"),
    "repeats": KeySpec(int, 100, 1, 1_000_000, "repeats = 100"),
}


def provider_of(device: str, compile: str) -> str:
    """The name this runtime goes by where ONNX Runtime kinds name their execution provider (tables record it)."""
    return f"torch:{device}" + ("" if compile == "none" else f":compile={compile}")


def _parse(settings: dict[str, Any], path: Any) -> dict[str, Any]:
    """Check ``device`` and ``compile``; record the runtime's name as the device's ``provider``."""
    from hwnas.registry import did_you_mean

    for key, valid in (("device", DEVICES), ("compile", COMPILE_MODES)):
        value = settings[key]
        if value not in valid:
            raise UsageError(
                f'device file {path}: {key} = "{value}" is not one of {", ".join(valid)}{did_you_mean(value, list(valid))}; '
                f"e.g. {TORCH_KEYS[key].example}"
            )
    return {**settings, "provider": provider_of(settings["device"], settings["compile"])}


def _precisions(device: Device) -> tuple[str, ...]:
    return DEVICE_PRECISIONS.get(str(device.settings.get("device")), ("fp32",))


# -- this machine -------------------------------------------------------------------
def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU here (tests replace it)."""
    import torch

    return bool(torch.cuda.is_available())


def _smi(query: str) -> list[str] | None:
    """One line of ``nvidia-smi --query-gpu`` for the first GPU, split on commas; None where it does not answer."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return [p.strip() for p in line.split(",")] if line else None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # "[N/A]"
        return None


@cache
def _nvml() -> Any:
    """NVML's handle of the first GPU, or None where pynvml (nvidia-ml-py) or the driver does not answer."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # ImportError, NVMLError: absent is an answer, not an error
        return None


#: ``nvidia-smi`` takes tens of milliseconds: without NVML, a reading is reused for this long
#: (``hwnas profile`` takes hundreds of measurements).
SMI_REUSE_S = 2.0
_smi_last: list[Any] = [float("-inf"), None]


def gpu_clocks() -> dict[str, float | None] | None:
    """The first GPU's SM and memory clocks (MHz), temperature (C) and power draw (W) now: through
    NVML where it answers (microseconds), else ``nvidia-smi`` (at most every :data:`SMI_REUSE_S`
    seconds); None where neither does."""
    nv = _nvml()
    if nv is not None:
        pynvml, h = nv

        def ask(f: Any, *args: Any) -> float | None:
            try:
                return float(f(h, *args))
            except Exception:  # a reading this GPU does not give
                return None

        power = ask(pynvml.nvmlDeviceGetPowerUsage)
        return {
            "sm_mhz": ask(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            "mem_mhz": ask(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            "temperature_c": ask(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": None if power is None else power / 1000.0,
        }
    if time.monotonic() - _smi_last[0] < SMI_REUSE_S:
        return _smi_last[1]  # type: ignore[no-any-return]
    got = _smi("clocks.sm,clocks.mem,temperature.gpu,power.draw")
    reading = (
        None
        if got is None or len(got) < 4
        else {k: _number(v) for k, v in zip(("sm_mhz", "mem_mhz", "temperature_c", "power_w"), got, strict=False)}
    )
    _smi_last[:] = [time.monotonic(), reading]
    return reading


@cache
def gpu_identity() -> dict[str, Any]:
    """The first CUDA GPU as torch sees it, and its driver where NVML or ``nvidia-smi`` says it."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None, "gpu_driver": None, "cuda": torch.version.cuda}
    props = torch.cuda.get_device_properties(0)
    driver = None
    nv = _nvml()
    if nv is not None:
        try:
            driver = nv[0].nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        except Exception:
            driver = None
    if driver is None:
        got = _smi("driver_version")
        driver = got[0] if got else None
    return {
        "gpu": props.name,
        "gpu_driver": driver,
        "cuda": torch.version.cuda,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_multiprocessors": props.multi_processor_count,
    }


def torch_version() -> str:
    import torch

    return str(torch.__version__)


def _fingerprint(device: Device) -> dict[str, Any]:
    """This machine's CPU (as for every local kind), and on cuda the GPU, its driver and CUDA; the torch version."""
    from hwnas.cost.lut import fingerprint

    fp = dict(fingerprint("CPUExecutionProvider"))
    if device.settings.get("device") == "cuda":
        fp.update(gpu_identity())
    fp["torch"] = torch_version()
    return fp


def _runtime(device: Device) -> dict[str, str]:
    """The versions a table of this kind is keyed to: PyTorch (and its CUDA), and ONNX Runtime,
    whose optimised graphs are NB201's structure features."""
    import onnxruntime
    import torch

    return {
        "onnxruntime": onnxruntime.__version__,
        "torch": torch_version(),
        "cuda": str(torch.version.cuda),
        "torch_runtime": f"torch {torch_version()}, CUDA {torch.version.cuda}",
        "compile": str(device.settings.get("compile", "none")),
    }


def _preflight(device: Device) -> None:
    """One line, before any work, when the device's torch device is not here."""
    if device.settings.get("device") == "cuda" and not cuda_available():
        raise UsageError(
            f"device {device.name!r} measures with PyTorch on cuda, but torch {torch_version()} sees no CUDA GPU here; "
            'use --device cpu (or a torch device file with device = "cpu")'
        )


# -- measuring ----------------------------------------------------------------------
@dataclass(frozen=True)
class TorchMeasurement(Measurement):
    """A :class:`Measurement` taken by the PyTorch runtime, with its settings and the GPU's clocks
    before and after (None where nothing answers, and on the CPU)."""

    device: str = "cpu"
    precision: str = "fp32"
    compile: str = "none"
    timer: str = "perf_counter"
    clocks_before: dict[str, float | None] | None = None
    clocks_after: dict[str, float | None] | None = None


@dataclass
class TorchModel:
    """A module as the torch kind times it: converted (copied, eval mode, on the device, at the
    precision, compiled) on first use and kept, so rounds of ``hwnas profile`` convert and compile
    it once. The caller's module is never changed (a trial's evaluator may still train it)."""

    module: Any
    shape: tuple[int, ...]
    _ready: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def ready(self, *, device: str, precision: str, compile: str, batch: int, seed: int) -> tuple[Any, Any]:
        """(the callable to time, its input of shape (batch, *shape))."""
        import torch

        key = (device, precision, compile, batch, seed)
        if key not in self._ready:
            dtype = getattr(torch, _DTYPES[precision])
            m = copy.deepcopy(self.module).eval().to(device=torch.device(device), dtype=dtype)
            run = m
            if compile != "none":
                _allow_recompiles()
                run = torch.compile(m, mode=None if compile == "default" else compile)
            x = np.random.default_rng(seed).standard_normal((batch, *self.shape), dtype=np.float32)
            self._ready.clear()  # one converted copy per model: a device file has one setting
            self._ready[key] = (run, torch.from_numpy(x).to(device=torch.device(device), dtype=dtype))
        return self._ready[key]  # type: ignore[no-any-return]


def _allow_recompiles() -> None:
    """Every candidate is a new graph of the same forward code: raise dynamo's recompile limit,
    past which it would silently run the rest in eager mode (and time that)."""
    import torch._dynamo

    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(int(getattr(torch._dynamo.config, name)), 100_000))


def measure_torch(
    model: Any,
    input_shape: tuple[int, ...],
    *,
    device: str = "cpu",
    batch: int = 1,
    precision: str = "fp32",
    compile: str = "none",
    threads: int = 1,
    warmup: int = 20,
    repeats: int = 100,
    seed: int = 0,
) -> TorchMeasurement:
    """Time a torch module (or a :class:`TorchModel`) on one input of shape (batch, *input_shape).

    Raises:
        UsageError: settings out of range, fp16 on the CPU, cuda without a GPU, or a
            ``torch.compile`` that fails here (one line each).
    """
    import torch

    if repeats < 1 or warmup < 0 or batch < 1 or threads < 1:
        raise UsageError(f"need repeats >= 1, warmup >= 0, batch >= 1, threads >= 1; got {repeats}, {warmup}, {batch}, {threads}")
    if device not in DEVICES or compile not in COMPILE_MODES:
        raise UsageError(f"torch runtime: device must be one of {', '.join(DEVICES)} and compile one of {', '.join(COMPILE_MODES)}")
    if precision not in DEVICE_PRECISIONS[device]:
        raise UsageError(f"torch runtime: precision {precision} is not run on {device}; it runs {', '.join(DEVICE_PRECISIONS[device])}")
    if device == "cuda" and not cuda_available():
        raise UsageError(f"torch runtime: device cuda, but torch {torch_version()} sees no CUDA GPU here; use device cpu")
    if isinstance(model, (bytes, bytearray, str)):
        raise UsageError(
            "the torch runtime times PyTorch modules, not ONNX files; measure them on an onnxruntime device (e.g. --device cpu)"
        )
    tm = model if isinstance(model, TorchModel) else TorchModel(model, tuple(input_shape))
    run, x = tm.ready(device=device, precision=precision, compile=compile, batch=batch, seed=seed)
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    cuda = device == "cuda"
    try:
        with torch.inference_mode():
            if compile != "none":
                try:
                    run(x)  # compiles; untimed
                except Exception as exc:  # inductor, triton or a C++ compiler that fails here
                    first = (str(exc).strip().splitlines() or [""])[0][:200]
                    raise UsageError(
                        f'torch.compile (compile = "{compile}") failed on {device} ({type(exc).__name__}: {first}); '
                        'use compile = "none" in the device file'
                    ) from None
            clocks_before = gpu_clocks() if cuda else None
            times_ns = _time_cuda(run, x, warmup, repeats) if cuda else _time_cpu(run, x, warmup, repeats)
            clocks_after = gpu_clocks() if cuda else None
    finally:
        torch.set_num_threads(before_threads)
    from hwnas_agent.timing import stats_ms

    return TorchMeasurement(
        **stats_ms(times_ns),
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        batch=batch,
        provider=provider_of(device, compile),
        source=SOURCE,
        device=device,
        precision=precision,
        compile=compile,
        timer="cuda events" if cuda else "perf_counter",
        clocks_before=clocks_before,
        clocks_after=clocks_after,
    )


def _time_cpu(run: Any, x: Any, warmup: int, repeats: int) -> np.ndarray:
    """Per-call wall times in ns: one ``perf_counter_ns`` pair per call, as bare as a plain loop."""
    for _ in range(warmup):
        run(x)
    times = np.empty(repeats, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(repeats):
        t0 = clock()
        run(x)
        times[i] = clock() - t0
    return times


def _time_cuda(run: Any, x: Any, warmup: int, repeats: int) -> np.ndarray:
    """Per-call GPU times in ns between two CUDA events around each call, synchronised after it."""
    import torch

    for _ in range(warmup):
        run(x)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        starts[i].record()
        run(x)
        ends[i].record()
        ends[i].synchronize()
    return np.array([s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)], dtype=float) * 1e6


def settings_of(device: Device) -> dict[str, Any]:
    """Keyword arguments of :func:`measure_torch` for ``device``."""
    s = device.settings
    return {
        "device": s["device"],
        "batch": device.batch,
        "precision": device.precision,
        "compile": s["compile"],
        "threads": device.threads,
        "warmup": device.warmup,
        "repeats": device.repeats,
    }


# -- the latency source -------------------------------------------------------------
class TorchLatency(MeasuredLatency):
    """Run the candidate's module in PyTorch on the device and time it (no export)."""

    kind = "torch"

    def latency(self, arch: Arch, model: torch.nn.Module | None = None) -> Latency:
        if model is None:
            model = self.space.build(arch)
        m = measure_torch(model, tuple(self.space.input_shape(arch)), **settings_of(self.device))
        return Latency(ms=m.median_ms, source=SOURCE, details=m.as_dict())

    def describe(self) -> dict[str, Any]:
        d = self.device
        s = settings_of(d)
        out: dict[str, Any] = {
            "device": d.name,
            "source": self.kind,
            "runtime": f"PyTorch {torch_version()} ({'eager' if s['compile'] == 'none' else 'torch.compile ' + s['compile']})",
            "torch_device": s["device"],
            "timer": "CUDA events, synchronised after each call" if s["device"] == "cuda" else "perf_counter around each call",
            **{k: s[k] for k in ("precision", "compile", "batch", "threads", "warmup", "repeats")},
            "statistic": "median",
        }
        if s["device"] == "cuda":
            out["gpu"] = gpu_identity()
        if d.settings.get("chosen"):
            out["chosen"] = d.settings["chosen"]
        return out


# -- the kind -------------------------------------------------------------------------
def _latency(device: Device, space: SearchSpace, request: LatencyRequest) -> CostSource:
    """``auto``: this device's lookup table when one was built through it, else live measurement."""
    from hwnas.cost.kinds import table_or_live

    return table_or_live(device, space, request, lambda: TorchLatency(device, space))


def _prepare(device: Device, module: torch.nn.Module, shape: tuple[int, ...]) -> TorchModel:
    return TorchModel(module, tuple(shape))


def _measure(device: Device, model: Any, shape: tuple[int, ...]) -> TorchMeasurement:
    return measure_torch(model, tuple(shape), **settings_of(device))


def _summary(device: Device) -> str:
    compile = device.settings["compile"]
    return f"measured (torch {device.settings['device']}{'' if compile == 'none' else ', compiled'})"


TORCH = DeviceKind(
    name="torch",
    keys=TORCH_KEYS,
    latency=_latency,
    parse=_parse,
    measure=_measure,
    prepare=_prepare,
    fingerprint=_fingerprint,
    runtime=_runtime,
    preflight=_preflight,
    precisions=_precisions,
    measured=True,
    summary=_summary,
    spaces_text=lambda device: "any (measured)",
)


def register(registry: Registry[DeviceKind]) -> None:
    registry.add(TORCH.name, TORCH)


__all__ = ["TORCH", "TorchLatency", "TorchMeasurement", "TorchModel", "gpu_clocks", "gpu_identity", "measure_torch", "register"]
