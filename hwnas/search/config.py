"""Search settings and their one validator, used by the CLI and the Python API alike.

:class:`SearchConfig` is what the user asked for (``None``: not given, a default applies);
:func:`resolve` checks it whole before any file is written and returns a :class:`Plan`: the
space, the devices, every cost source, the objectives and budgets as data, the evaluator and
the DARTS settings. Every refusal is a one-line :class:`~hwnas.errors.UsageError` that names
the setting (by its command-line flag) and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import UsageError
from hwnas.search.objectives import OBJECTIVES, Charged, Constraint, Objective, objective_metric

if TYPE_CHECKING:
    from hwnas.device import Device
    from hwnas.evaluate import Evaluator
    from hwnas.spaces import SearchSpace

#: The version of the study identity: a run whose identity lacks it was made by an older hwnas.
IDENTITY_VERSION = 2
#: Settings that define a study: resuming with a different value would mix incomparable trials.
IDENTITY_KEYS = (
    "space",
    "dataset",
    "device",
    "latency_ms",
    "flops_m",
    "params_m",
    "memory_bytes",
    "size_bytes",
    "objective",
    "also_devices",
    "also_latency_ms",
    "evaluator",
    "evaluator_options",
    "latency_model",
    "precision",
)
#: What an identity key was before it existed: a run folder that lacks it was made at this value.
IDENTITY_DEFAULTS: dict[str, Any] = {"precision": "fp32"}
DEFAULT_DEVICE = "cpu"
DEFAULT_LATENCY_MS = 20.0
DEFAULT_TRIALS = 100
DEFAULT_STRATEGY = "hybrid"
#: Defaults of the differentiable search (``strategy="darts"``).
DARTS_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch": 64,
    "darts_order": 1,
    "sampling": "softmax",
    "latency_term": "add#linear",
    "latency_weight": 1.0,
    "adapt_latency_weight": True,
    "selection": "perturbation",
}
#: DARTS-only settings and their flags: given with another strategy they would be silently ignored.
DARTS_ONLY = {
    "darts_order": "--darts-order",
    "sampling": "--sampling",
    "latency_term": "--latency-term",
    "latency_weight": "--latency-weight",
    "adapt_latency_weight": "--fixed-latency-weight",
    "selection": "--selection",
    "warmup": "--warmup",
}


@dataclass
class SearchConfig:
    """The settings of one run, as given; :func:`resolve` fills the defaults. Written to ``config.json``."""

    space: str = "nb201"
    #: A benchmark dataset of the space (nb201: cifar10 | cifar100 | imagenet16-120); None: its default.
    dataset: str | None = None
    device: str = DEFAULT_DEVICE
    latency_ms: float = DEFAULT_LATENCY_MS
    #: Optional budgets: FLOPs (conv + linear multiply-adds) and parameters in millions, peak
    #: activation memory and model size in bytes.
    flops_m: float | None = None
    params_m: float | None = None
    memory_bytes: int | None = None
    size_bytes: int | None = None
    #: The second objective beside accuracy: latency (the first device's) | flops | params | memory | size.
    objective: str = "latency"
    #: Further devices, each with its own latency budget (ms), searched as constraints beside the first.
    also_devices: list[str] = field(default_factory=list)
    also_latency_ms: list[float] = field(default_factory=list)
    #: Trial budget (None: 100; DARTS records its one derived architecture).
    trials: int | None = None
    strategy: str = DEFAULT_STRATEGY
    seed: int = 0
    evaluator: str = "table"
    #: Settings of a training-based evaluator (e.g. lr, pruner); part of the study's identity.
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    storage: str = ""
    study: str = ""
    export: bool = True
    latency_source: str = "auto"
    table: str = ""
    allow_foreign_table: bool = False
    #: Use the ``table`` although ``hwnas profile --force`` marked it as failing its check (warned about loudly).
    allow_failing_table: bool = False
    #: Use latency tables measured for networks of another input shape than the data's (``--force``; warned about loudly).
    force: bool = False
    #: Training data of DARTS and of training evaluators.
    data: str = "digits"
    #: Epochs and batch size: DARTS's supernet and training evaluators (None: each one's default).
    epochs: int | None = None
    batch: int | None = None
    #: Differentiable search only (``strategy="darts"``); None: the default of DARTS_DEFAULTS.
    warmup: int | None = None
    darts_order: int | None = None
    sampling: str | None = None
    latency_term: str | None = None
    latency_weight: float | None = None
    #: Adapt the add#linear weight toward the latency target (dual ascent, LightNAS); False: fixed.
    adapt_latency_weight: bool | None = None
    #: How the trained supernet picks its architecture: perturbation (DARTS-PT) | alpha.
    selection: str | None = None
    train_device: str = "cpu"
    #: Resolved: measured | lookup table | table (set by :func:`resolve`).
    latency_model: str = ""
    #: What the devices time and the accuracy is measured at: fp32 | int8 | fp16 (None: the device file's
    #: ``precision``, default fp32; set by :func:`resolve`). At int8 every candidate is quantized first.
    precision: str | None = None

    def default_out(self) -> str:
        """``hwnas-runs/<name>``, the name spelling every setting that makes this run distinct (see
        :func:`~hwnas.search.runname.run_name`): commands of other settings never share it."""
        from hwnas.search.runname import run_name

        return str(Path("hwnas-runs") / run_name(self))

    def identity(self) -> dict[str, Any]:
        return {"version": IDENTITY_VERSION, **{k: getattr(self, k) for k in IDENTITY_KEYS}}


@dataclass
class Plan:
    """A resolved, checked run: what every later stage reads instead of re-checking the config."""

    config: SearchConfig
    space: SearchSpace
    device: Device
    #: Every cost source charged per trial, cheap ones first; the first is the first device's latency.
    charged: list[Charged]
    objectives: list[Objective]
    constraints: list[Constraint]
    evaluator: Evaluator | None
    darts: Any = None
    warnings: list[str] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def latency(self) -> Any:
        """The first device's latency source."""
        return self.charged[0].source

    def also(self) -> list[Charged]:
        return [c for c in self.charged if c.device is not None and c is not self.charged[0]]

    def maximize(self) -> list[bool]:
        return [o.direction == "maximize" for o in self.objectives]


def check_strategy(name: str) -> None:
    """UsageError (with a did-you-mean) unless ``name`` is a sampler strategy or ``darts``."""
    from hwnas.strategies import STRATEGIES

    if name == "darts" or name in STRATEGIES:
        return
    from hwnas.registry import did_you_mean

    valid = strategy_names()
    raise UsageError(f"unknown strategy {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")


def strategy_names() -> list[str]:
    from hwnas.strategies import STRATEGIES

    return sorted([*STRATEGIES.names(), "darts"])


def build_space(config: SearchConfig) -> SearchSpace:
    """The space of ``config``, in its benchmark dataset's variant where one is named."""
    from hwnas.spaces import get_space

    space = get_space(config.space)
    if config.dataset is None:
        config.dataset = space.benchmark_datasets[0] if space.benchmark_datasets else None
        return space
    if config.dataset not in space.benchmark_datasets:
        if not space.benchmark_datasets:
            raise UsageError(f"--dataset picks a NAS-Bench-201 benchmark dataset; the {space.name} space has none, so drop --dataset")
        from hwnas.registry import did_you_mean

        valid = list(space.benchmark_datasets)
        raise UsageError(
            f"unknown dataset {config.dataset!r} of space {space.name}{did_you_mean(config.dataset, valid)}; valid: {', '.join(valid)}"
        )
    return space.with_dataset(config.dataset)


def resolve(config: SearchConfig, *, log: Any = None) -> Plan:
    """Check ``config`` whole, fill its defaults, and build everything the run needs.

    Nothing is written. Raises:
        UsageError: the first wrong or conflicting setting, in one line.
    """
    from hwnas.cost.source import LatencyRequest, cost_source, latency_source
    from hwnas.device import get_device, runnable

    c = config
    # What resolving says (the lookup table used, a fallback) is said once every check has passed:
    # a refused setting is one line, not a table note followed by the error.
    say = _Deferred(log or (lambda s: None))
    check_strategy(c.strategy)
    darts = c.strategy == "darts"
    _check_darts_settings(c, darts)
    if c.trials is None:
        c.trials = 1 if darts else DEFAULT_TRIALS
    if c.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {c.trials}; e.g. --trials 100")
    if len(c.also_devices) != len(c.also_latency_ms):
        raise UsageError(
            f"{1 + len(c.also_devices)} devices but {1 + len(c.also_latency_ms)} latency budgets; give one --latency per "
            "--device, in the same order, e.g. --device cpu --latency 2ms --device pixel3 --latency 5ms"
        )
    names = [c.device, *c.also_devices]
    if len(set(names)) != len(names):
        raise UsageError(f"--device {names} names a device twice; name each once")
    space = build_space(c)
    dataset = None
    if trains_on_data(c):
        # One shape truth: the networks that are timed are those trained on --data and deployed:
        # the data's channels, image size (where the space does not search its resolution) and classes.
        from hwnas.datasets import load_data

        dataset = load_data(c.data)
        channels, height, width = dataset.input_shape
        try:
            space = space.for_data(in_channels=channels, num_classes=dataset.num_classes, image_size=(height, width))
        except UsageError as exc:
            raise UsageError(f"--data {c.data}: {exc}") from None
    device = runnable(get_device(c.device), say)  # cuda: onnxruntime-gpu where installed, else PyTorch on the GPU
    others = [runnable(get_device(n), say) for n in c.also_devices]
    # One precision for the run: the flag, else the first device file's (each device must support it).
    c.precision = c.precision or device.precision
    if darts and c.precision != "fp32":
        raise UsageError(f"--strategy darts trains on FP32 latencies; --precision {c.precision} applies to the sampling strategies")
    device = device.with_precision(c.precision)
    others = [d.with_precision(c.precision) for d in others]
    from hwnas.cost.source import device_kind

    for dev in (device, *others):
        device_kind(dev.kind).preflight(dev)  # a missing provider, an unreachable agent: refused before any work
    request = _latency_request(c, device, say)
    charged = [Charged(latency_source(device, space, request), device=device.name, primary=True)]
    for dev in others:
        charged.append(Charged(latency_source(dev, space, LatencyRequest(log=say, force_shape=c.force)), device=dev.name))
    c.latency_model = charged[0].source.kind
    objective = objective_metric(c.objective)
    budgets = {"flops_m": c.flops_m, "params_m": c.params_m, "memory_bytes": c.memory_bytes, "size_bytes": c.size_bytes}
    for name in ("flops", "memory", "size"):
        source = cost_source(name, space).at_precision(c.precision)  # int8: the quantized model's size
        wanted = objective in {m.name for m in source.metrics()} or any(budgets.get(m.name) is not None for m in source.metrics())
        if name == "flops" or source.cheap or wanted:  # the report always shows FLOPs and parameters
            charged.append(Charged(source))
    charged.sort(key=lambda ch: (not ch.primary, not ch.source.cheap))
    objectives = [OBJECTIVES["accuracy"], _cost_objective(objective, charged, c)]
    constraints = _constraints(c, charged, others)
    c.out = c.out or c.default_out()
    from hwnas.storage import default_storage

    c.storage = c.storage or default_storage(c.out)  # a bare path: the optuna CLI and optuna-dashboard open it too
    c.storage = absolute_storage(c.storage)  # config.json and report.json name it the same from any working directory
    c.study = c.study or "hwnas"
    evaluator = _evaluator(c, space, darts, say, dataset)
    if evaluator is not None and c.precision != "fp32":
        from hwnas.evaluate.quantized import PrecisionEvaluator

        evaluator = PrecisionEvaluator(evaluator, c.precision, seed=c.seed)
    plan = Plan(c, space, device, charged, objectives, constraints, evaluator)
    if darts:
        if c.objective != "latency":
            raise UsageError(f"--strategy darts trains against latency; --objective {c.objective} does not apply, so drop --objective")
        plan.darts = _darts_config(c)
        plan.darts.check()
    for ch in charged:
        refusal = getattr(ch.source, "shape_refusal", None)
        if refusal is not None:
            if darts:
                from hwnas.evaluate import check_train_device

                check_train_device(c.train_device)
            raise refusal
        plan.warnings += ch.source.warnings()
    say.release()
    return plan


class _Deferred:
    """A log that holds its lines until :meth:`release`, then passes them and every later one on
    (an evaluator or latency source keeps it for its own progress lines)."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._held: list[str] | None = []

    def __call__(self, line: str) -> None:
        if self._held is None:
            self._log(line)
        else:
            self._held.append(line)

    def release(self) -> None:
        held, self._held = self._held or [], None
        for line in held:
            self._log(line)


def _check_darts_settings(c: SearchConfig, darts: bool) -> None:
    if darts:
        if c.trials is not None:
            raise UsageError("--strategy darts trains one supernet and records the one architecture it derives; drop --trials")
        return
    for name, flag in DARTS_ONLY.items():
        if getattr(c, name) is not None:
            raise UsageError(f"{flag} applies to --strategy darts only, not {c.strategy!r}; drop {flag} or use --strategy darts")


def _latency_request(c: SearchConfig, device: Device, say: Any) -> Any:
    """The first device's latency request; an explicit ``table`` is checked here, once."""
    from hwnas.cost.source import LatencyRequest

    source = c.latency_source
    from hwnas.cost.latency import LATENCY_SOURCES

    if source not in LATENCY_SOURCES:
        raise UsageError(f"unknown latency source {source!r}; valid: {', '.join(LATENCY_SOURCES)}")
    flags = (("--table", bool(c.table)), ("--allow-foreign-table", c.allow_foreign_table), ("--allow-failing-table", c.allow_failing_table))
    for flag, on in flags:
        if on and source in ("measure", "table"):
            raise UsageError(
                f"{flag} applies to lookup tables, which --latency-source {source} does not use; drop {flag} or --latency-source"
            )
    if not c.table:
        if c.allow_failing_table:
            raise UsageError("--allow-failing-table accepts a table that failed its check by name; add --table FILE")
        return LatencyRequest(source=source, allow_foreign=c.allow_foreign_table, log=say, force_shape=c.force)
    if not device.measured:
        raise UsageError(
            f"device {device.name!r} takes its latencies from its benchmark table; --table names a lookup table of a measured "
            "device (cpu, cuda or a device file), so drop --table"
        )
    from hwnas.cost.lut import LatencyTable

    table = LatencyTable.load(c.table, accept_failing=c.allow_failing_table)
    if table.device != device.name and not c.allow_foreign_table:
        raise UsageError(
            f"latency table {c.table} was built for device {table.device!r}, not {device.name!r}; build this device's with "
            f"'hwnas profile --device {device.name} --space {c.space}', or pass --allow-foreign-table to use it anyway"
        )
    # A table the user names is used or refused, never swapped for live measurement behind their back.
    if source == "auto":
        c.latency_source = source = "lut"
    return LatencyRequest(source=source, table=c.table, allow_foreign=c.allow_foreign_table, log=say, loaded=table, force_shape=c.force)


def _cost_objective(metric: str, charged: list[Charged], c: SearchConfig) -> Objective:
    for ch in charged:
        for m in ch.metrics():
            if m.name == metric:
                return Objective(m.name, m.unit, m.label, "minimize")
    raise UsageError(f"--objective {c.objective}: no cost source of this run gives {metric}")


def _constraints(c: SearchConfig, charged: list[Charged], others: list[Device]) -> list[Constraint]:
    """Every budget as a named constraint (the latency budgets first, then FLOPs, parameters,
    memory and size where given), each with the source that gives its metric."""
    by_metric = {m.name: (m, ch) for ch in charged for m in ch.metrics()}
    wanted: list[tuple[str, float | None, str]] = [("latency_ms", c.latency_ms, "--latency")]
    wanted += [(f"latency_ms@{d.name}", b, f"--latency (for --device {d.name})") for d, b in zip(others, c.also_latency_ms, strict=True)]
    wanted += [("flops_m", c.flops_m, "--flops"), ("params_m", c.params_m, "--params")]
    wanted += [("memory_bytes", c.memory_bytes, "--memory"), ("size_bytes", c.size_bytes, "--size")]
    out = []
    for metric, limit, flag in wanted:
        if limit is None:
            continue
        m, ch = by_metric[metric]
        out.append(Constraint(metric=metric, limit=float(limit), unit=m.unit, label=m.label, flag=flag, cheap=ch.source.cheap))
    return out


def trains_on_data(c: SearchConfig) -> bool:
    """Whether the run trains networks on ``--data`` (DARTS, or a training evaluator): its networks
    are then built for that data."""
    from hwnas.evaluate import EVALUATORS

    return c.strategy == "darts" or bool(getattr(EVALUATORS.get(c.evaluator), "trains_on_data", False))


def _evaluator(c: SearchConfig, space: SearchSpace, darts: bool, say: Any, dataset: Any = None) -> Evaluator | None:
    from hwnas.evaluate import EVALUATORS, EvalContext, make_evaluator

    EVALUATORS.get(c.evaluator)
    if darts and c.evaluator == "table":
        # DARTS trains on --data: its derived network's accuracy is measured there, never a benchmark table's
        # (the table is for other networks, trained on other data).
        if c.evaluator_options:
            raise UsageError("evaluator 'table' takes no training options; drop them or use --evaluator train")
        return None
    options = dict(c.evaluator_options)
    # --epochs and --batch are the supernet's under darts with the table evaluator, else the evaluator's.
    for name in ("epochs", "batch"):
        value = getattr(c, name)
        if value is not None and not (darts and c.evaluator == "table"):
            options.setdefault(name, value)
    c.evaluator_options = options
    context = EvalContext(
        data=c.data,
        train_device=c.train_device,
        seed=c.seed,
        out_dir=Path(c.out),
        storage=c.storage,
        study=c.study,
        log=say,
        dataset=dataset,
    )
    try:
        return make_evaluator(c.evaluator, space, context=context, **options)
    except UsageError:
        if not darts or options:
            raise  # options the evaluator refuses are an error even where DARTS could go on without it
        return None  # the derived arch's inherited-weight accuracy, once DARTS has run


def _darts_config(c: SearchConfig) -> Any:
    """DARTS's settings: the given ones, the defaults of :data:`DARTS_DEFAULTS` for the rest
    (written back into ``c``, so config.json records what ran)."""
    from hwnas.darts.train import DartsConfig

    for name, default in DARTS_DEFAULTS.items():
        if getattr(c, name) is None:
            setattr(c, name, default)
    if c.warmup is None:
        c.warmup = max(0, min(5, int(c.epochs or 0) // 5))
    settings: dict[str, Any] = {
        "epochs": c.epochs,
        "warmup": c.warmup,
        "batch": c.batch,
        "order": c.darts_order,
        "sampling": c.sampling,
        "latency_term": c.latency_term,
        "latency_weight": c.latency_weight,
        "adapt_weight": c.adapt_latency_weight,
        "selection": c.selection,
    }
    return DartsConfig(**settings, target_ms=c.latency_ms, seed=c.seed, device=c.train_device)


def absolute_storage(url: str) -> str:
    """``url`` with a journal file's or SQLite database's relative path made absolute (from the
    working directory now), so ``hwnas report RUN`` opens the same study from any other folder;
    other URLs as they are."""
    import os

    from hwnas.storage import JOURNAL_PREFIX, journal_path

    path = journal_path(url)
    if path is not None:
        prefix = JOURNAL_PREFIX if url.startswith(JOURNAL_PREFIX) else ""
        return prefix + os.path.abspath(path)
    sqlite = "sqlite:///"
    if url.startswith(sqlite):
        rest, query = url[len(sqlite) :], ""
        if "?" in rest:
            rest, query = rest.split("?", 1)
            query = "?" + query
        if rest and rest != ":memory:" and not os.path.isabs(rest) and not rest.startswith("file:"):
            return sqlite + os.path.abspath(rest) + query
    return url


def config_fields() -> list[str]:
    return [f.name for f in fields(SearchConfig)]
