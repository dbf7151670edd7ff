"""The ``hwnas`` command line: one handler per subcommand, ``main(argv) -> int`` for tests."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hwnas import __version__
from hwnas.errors import HwnasError, UsageError
from hwnas.registry import closest, did_you_mean
from hwnas.units import format_bytes, parse_bytes, parse_count_m, parse_latency_ms

#: Namespace attribute holding the dests of the options the user gave (see :class:`_StoreOnce`).
_GIVEN = "_given"


class _StoreOnce(argparse.Action):
    """argparse's ``store``, but an option given twice is refused (argparse would silently keep
    the last value), and the options the user gave are recorded for :func:`_refuse_conflicts`."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ) -> None:
        given = namespace.__dict__.setdefault(_GIVEN, set())
        if self.option_strings and self.dest in given:
            raise argparse.ArgumentError(self, "given more than once; give it once")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line :class:`UsageError` instead of printing usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # A type function's UsageError gets the option's name in front, as argparse's own errors do.
        try:
            return super()._get_value(action, arg_string)
        except UsageError as exc:
            raise argparse.ArgumentError(action, str(exc)) from None

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '?(.*?)'? \(choose from (.*)\)", message)
        if m:
            valid = [c.strip().strip("'") for c in m[2].split(",")]
            message = message.replace(m[0], f"invalid choice: {m[1]!r}{did_you_mean(m[1], valid)}; valid: {', '.join(valid)}")
        raise UsageError(f"{message}; see '{self.prog} --help'")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        # argparse's own version joins the leftovers with spaces: a stray newline or an empty
        # argument would vanish or break the one-line message, so each is quoted where needed.
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            shown = " ".join(t if t and t.isprintable() and " " not in t else repr(t) for t in extra)
            command = getattr(parsed, "command", None)
            hint = _flag_hint(extra[0].split("=")[0], self._option_names(command)) if extra[0].startswith("--") else ""
            # The subcommand's parser says it: its help ('hwnas search --help') lists the flags the command takes.
            self._subparser(command).error(f"unrecognized arguments: {shown}{hint}")
        return parsed

    def _subparser(self, command: str | None) -> argparse.ArgumentParser:
        """The parser of subcommand ``command``, or this one where there is none."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self

    def _option_names(self, command: str | None = None) -> list[str]:
        """The option strings of this parser and of subcommand ``command`` (argparse keeps them
        private): a suggestion names a flag the command takes, never another command's."""
        names: set[str] = set()
        for action in self._actions:
            names.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                names.update(s for a in action.choices[command]._actions for s in a.option_strings)
        return sorted(n for n in names if n.startswith("--"))


#: Counts (trials, epochs, batch size, networks) above this are refused as typos.
MAX_COUNT = 1_000_000
#: Seeds and other whole numbers: 0 .. 2**32 - 1, what NumPy and PyTorch seeding accept.
MAX_INT = 2**32 - 1


def _flag_hint(flag: str, flags: list[str]) -> str:
    """' (did you mean --X?)' for a flag close to one the command takes, judged without the
    leading dashes (every flag shares them: '--bogus' is not close to '--out')."""
    bare = {f.lstrip("-"): f for f in flags if f.startswith("--")}
    match = closest(flag.lstrip("-"), list(bare))
    return f" (did you mean {bare[match]!r}?)" if match else ""


def _positive_int(text: str) -> int:
    """A count: a whole number from 1 to :data:`MAX_COUNT`, in ASCII digits."""
    t = text.strip()
    if re.fullmatch(r"-[0-9]+", t):
        raise UsageError(f"invalid count {text!r}: it must be at least 1, e.g. 100")
    if not re.fullmatch(r"\+?[0-9]+", t):
        raise UsageError(f"invalid count {text!r}; write a positive whole number, e.g. 100")
    digits = t.lstrip("+").lstrip("0")
    value = int(digits or "0") if len(digits) <= 10 else MAX_COUNT + 1
    if value < 1:
        raise UsageError(f"invalid count {text!r}: it must be at least 1, e.g. 100")
    if value > MAX_COUNT:
        raise UsageError(f"invalid count {text!r}: at most {MAX_COUNT}, e.g. 100")
    return value


def _int(text: str) -> int:
    """A seed, trial number or epoch count: a whole number from 0 to :data:`MAX_INT`."""
    t = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", t):
        raise UsageError(f"invalid whole number {text!r}; write one from 0 to {MAX_INT}, e.g. 0")
    digits = t.lstrip("+-").lstrip("0")
    value = (int(digits or "0") if len(digits) <= 10 else MAX_INT + 1) * (-1 if t.startswith("-") else 1)
    if not 0 <= value <= MAX_INT:
        raise UsageError(f"invalid whole number {text!r}: it must be from 0 to {MAX_INT}, e.g. 0")
    return value


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- handlers ---------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    """Translate the flags into a :class:`SearchConfig`; the library checks it (one validator for
    the CLI and the Python API) and runs it."""
    from hwnas.search import Search, SearchConfig

    devices = args.device or [SearchConfig.device]
    latencies = args.latency or [SearchConfig.latency_ms]
    if len(devices) != len(latencies):
        raise UsageError(
            f"{len(devices)} --device but {len(latencies)} --latency; give one budget per device, in order, "
            "e.g. --device cpu --latency 2ms --device pixel3 --latency 5ms"
        )
    config = SearchConfig(
        space=args.space,
        dataset=args.dataset,
        device=devices[0],
        latency_ms=latencies[0],
        also_devices=devices[1:],
        also_latency_ms=latencies[1:],
        trials=args.trials,
        strategy=args.strategy,
        seed=args.seed,
        evaluator=args.evaluator,
        out=args.out or "",
        storage=args.storage or "",
        study=args.study or "",
        export=not args.no_export,
        flops_m=args.flops,
        params_m=args.params,
        memory_bytes=args.memory,
        size_bytes=args.size,
        objective=args.objective,
        latency_source=args.latency_source,
        table=args.table or "",
        allow_foreign_table=args.allow_foreign_table,
        force=args.force,
        allow_failing_table=args.allow_failing_table,
        evaluator_options={k: getattr(args, k) for k in TRAINING_FLAGS if getattr(args, k) is not None},
        data=args.data,
        epochs=args.epochs,
        batch=args.batch,
        warmup=args.warmup,
        darts_order=args.darts_order,
        sampling=args.sampling,
        latency_term=args.latency_term,
        latency_weight=args.latency_weight,
        adapt_latency_weight=False if args.fixed_latency_weight else None,
        selection=args.selection,
        train_device=args.train_device,
        precision=args.precision,
    )
    search = Search(config, log=(lambda s: None) if args.quiet else _err)
    report = search.run()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report, search.out)
    return 0


#: Flags of training-based evaluators, passed on as ``evaluator_options`` when the user sets them
#: (``--epochs`` and ``--batch`` serve DARTS too: the search config routes them).
TRAINING_FLAGS = ("lr", "optimizer", "schedule", "pruner")


def _print_summary(report: dict[str, Any], out: Any) -> None:
    t = report["trials"]
    also = "".join(f" and {d['device']} under {d['latency_budget_ms']:g} ms" for d in report.get("also_devices") or [])
    print(
        f"\n{report['space']} on {report['device']}{_at_precision(report)} under {report['latency_budget_ms']:g} ms{also}: "
        f"{t['complete']} trials ({t['feasible']} feasible, {t['reused']} reused), {report['wall_time_s']} s"
    )
    print(f"best: {report['arch']}")
    line = f"  accuracy {report['accuracy']:.2f} % ({report['accuracy_source']})"
    best = report.get("best") or {}
    if best.get("fp32_accuracy") is not None:
        line += f"; FP32 {best['fp32_accuracy']:.2f} %, drop {best['quantization_drop']:+.2f} points after INT8 quantization"
    if report.get("test_accuracy") is not None:
        line += f", test {report['test_accuracy']:.2f} %"
    print(line)
    drop = report.get("quantization_drop")
    if drop:
        print(f"  INT8 accuracy drop over {drop['n']} evaluated candidates: median {drop['median']:+.2f} points, max {drop['max']:+.2f}")
    extra = ""
    if report.get("memory_bytes") is not None:
        extra += f", peak memory {format_bytes(report['memory_bytes'])}"
    if report.get("size_bytes") is not None:
        int8 = " (INT8 weights)" if report.get("precision") == "int8" else ""
        extra += f", size {format_bytes(report['size_bytes'])}{int8}"
    lats = report.get("latencies") or []
    if len(lats) > 1:  # every device of a multi-device run, each with where its figure came from
        each = ", ".join(f"{_ms(d['latency_ms'])} on {d['device']} ({d['source'] or 'no source'})" for d in lats)
    else:
        each = f"{report['latency_ms']:.4g} ms ({report['latency_source']})"
    print(f"  latency  {each}, {report['flops_m']:.1f} M FLOPs, {report['params_m']:.3f} M params{extra}")
    ex = report.get("export")
    if ex:
        measured = ex["measured_latency_ms"]
        m = (
            f"re-measured {measured:.4g} ms ({ex['predicted_vs_measured_pct']:+.1f} % predicted vs measured)"
            if measured is not None
            else ex.get("not_measured_because", "")
        )
        untrained = " (untrained weights: train it before deployment)" if str(ex.get("weights", "")).startswith("untrained") else ""
        # The file's bytes beside the size above: the file holds the graph and its metadata as well as the weights.
        file = f" ({format_bytes(ex['size_bytes'])} file)" if isinstance(ex.get("size_bytes"), (int, float)) else ""
        print(f"  exported {ex['path']}{file}{untrained}: {ex['checker']}, parity {ex['parity_max_abs_diff']:.1e}, {m}")
        if ex.get("int8"):
            print(f"  {_int8_line(ex)}")
    rc = report.get("recheck") or {}
    if rc.get("done"):
        print(f"  {rc['message']}")
    ref = report.get("reference")
    if ref:
        print(f"  {ref['message']}")
    for warning in report.get("warnings") or []:  # measurements that disagree beyond their noise
        print(f"  {warning}")
    left_out = report.get("front_degenerate_left_out") or 0
    dropped = f" ({left_out} network(s) whose output ignores the input left out: fast, but no network)" if left_out else ""
    print(f"front: {len(report['front'])} architectures{dropped} in {out}/front.csv; report in {out}/report.json")


def _ms(value: float | None) -> str:
    return "no figure" if value is None else f"{value:.4g} ms"


def cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from hwnas.cost.lut import LatencyTable, table_name, tables_dir
    from hwnas.device import get_device, runnable
    from hwnas.profile import build_table, check_table, judge_table
    from hwnas.spaces import get_space

    space = get_space(args.space)
    device = runnable(get_device(args.device), None if args.quiet else _err)  # cuda: onnxruntime-gpu, else PyTorch
    device = device.with_precision(args.precision or device.precision)  # int8: every block and network quantized before timing
    space.lut_codec().check_profile_options(resolutions=args.resolution or None)
    out = Path(args.out) if args.out else tables_dir() / table_name(device.name, space.name, device.precision)
    log = (lambda s: None) if args.quiet else _err
    table = None
    if args.reuse and out.is_file():
        table = LatencyTable.load(out)
        why = table.mismatches_for(device)
        if why or table.space != space.name:
            log(f"not reusing {out} ({why[0] if why else 'another space'}); rebuilding")
            table = None
        else:
            log(f"reusing {out} (built {table.data.get('created')})")
            if args.check:
                rng = np.random.default_rng(args.seed + 1)
                table.data["check"] = check_table(table, space, device, args.check, rng=rng, log=log)
                judge_table(table, table.data["check"]["noise"], force=args.force, log=log)  # refused: the file is left as it was
    if table is None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}; pick a writable --out") from None
        table = build_table(
            space,
            device,
            resolutions=args.resolution or None,
            calibrate=args.calibrate,
            check=args.check,
            seed=args.seed,
            force=args.force,
            log=log,
        )
    try:
        table.save(out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror}; pick a writable --out") from None
    check = {k: v for k, v in (table.check or {}).items() if k != "networks"} or None
    summary = {
        "table": str(out),
        "space": space.name,
        "device": device.name,
        "entries": len(table.entries),
        "build_seconds": table.data.get("build_seconds"),
        "calibration_fit": table.data["calibration"].get("fit"),
        "check": check,
        "verdict": table.data.get("verdict"),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{out}: {len(table.entries)} blocks, built in {table.data.get('build_seconds')} s")
    if table.failing:
        print(f"WARNING: {out} is marked as failing its check (kept with --force): {table.failing}; 'hwnas search' refuses it")
    if check:
        print(
            f"check on {check['n']} networks: {100 * check['within_5pct']:.1f} % within +-5 %, "
            f"{100 * check['within_10pct']:.1f} % within +-10 %, MAPE {check['mape_pct']:.2f} %, "
            f"Kendall tau {check['kendall_tau']:.3f}; prediction {check['speedup']:.0f}x faster than measuring"
        )
    else:
        print("no check run; add --check 50 to measure how well the table predicts")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.export import export_verified
    from hwnas.spaces import get_space
    from hwnas.spaces.nb201 import parse_arch

    meta: dict[str, Any] = {}
    if args.run is not None:
        space_name, arch_text, meta = _arch_from_run(Path(args.run), args.trial)
    elif args.arch is not None:
        space_name, arch_text = args.space or _space_of(args.arch), args.arch
    else:
        raise UsageError("say what to export: --arch '<arch string>', or --run DIR [--trial N]")
    space = get_space(space_name)
    arch = parse_arch(space, arch_text)
    device = _export_device(args)
    out = Path(args.out)
    precision = args.precision or (_run_precision(Path(args.run)) if args.run is not None else None) or "fp32"
    if device is not None:
        device = device.with_precision(precision)
    created = _make_parents(out)
    try:
        result = export_verified(space, arch, out, device=device, metadata=meta, seed=args.seed, precision=precision)
    except BaseException:
        _remove_empty(created)  # a refused export leaves no folder behind
        raise
    d = result.as_dict()
    if args.json:
        print(json.dumps({"space": space.name, "arch": space.to_string(arch), **d}, indent=2, default=str))
    else:
        m = f", measured {d['measured_latency_ms']:.4g} ms on {d['measured_on']}" if d["measured_latency_ms"] is not None else ""
        print(
            f"{out}: {space.to_string(arch)}\n"
            f"  {d['checker']}, ORT vs PyTorch max |diff| {d['parity_max_abs_diff']:.1e}, opset {d['opset']}, {d['exporter']} exporter{m}\n"
            f"  weights: {d['weights']}"
        )
        if d["int8"]:
            print(f"  {_int8_line(d)}")
    return 0


def _at_precision(report: dict[str, Any]) -> str:
    precision = report.get("precision") or "fp32"
    return "" if precision == "fp32" else f" at {precision.upper()}"


def _int8_line(export: dict[str, Any]) -> str:
    """The INT8 export in words: its FP32 source and their parity."""
    p = export["int8"]["parity"]
    return (
        f"INT8 (static QDQ); FP32 source {export['fp32_path']}; INT8 vs FP32 on {p['inputs']} inputs ({p['inputs_source']}): "
        f"top-1 agreement {100 * p['top1_agreement']:.1f} %, logits max |diff| {p['max_abs_diff']:.3g}, mean {p['mean_abs_diff']:.3g}"
    )


def _run_precision(run: Any) -> str | None:
    """The precision a run folder's search ran at (its config.json), None where it says none."""
    return _run_setting(run, "precision")


def _run_setting(run: Any, key: str) -> str | None:
    """Setting ``key`` of a run folder's config.json, None where it says none (or is unreadable)."""
    try:
        value = json.loads((run / "config.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _export_device(args: argparse.Namespace) -> Any:
    """The device ``hwnas export`` times the model on: ``--device``; else, with ``--run``, the run's
    (first) device where it measures live; else ``cpu``, the search's default. None with ``--no-measure``."""
    from pathlib import Path

    from hwnas.device import get_device, runnable
    from hwnas.search import SearchConfig

    if args.no_measure:
        return None
    if args.device is not None:
        return runnable(get_device(args.device), _err)
    run_device = _run_setting(Path(args.run), "device") if args.run is not None else None
    if run_device is not None:
        try:
            device = get_device(run_device)
        except UsageError as exc:
            raise UsageError(
                f"--run {args.run} was searched on device {run_device!r}, which export times the model on by default: {exc}; "
                f"or give --device {SearchConfig.device} (this machine's CPU), or --no-measure"
            ) from None
        if device.measured:
            return runnable(device, _err)
        _err(
            f"the run's device {run_device} is a {device.kind} device (nothing to time on it): timing the model on "
            f"{SearchConfig.device} instead (--device to pick another, --no-measure for none)"
        )
    return runnable(get_device(SearchConfig.device), _err)


def _make_parents(path: Any) -> list[Any]:
    """Create the missing folders above ``path``, as ``search --out`` and ``report --out`` do;
    returns those it created, innermost first (for :func:`_remove_empty`)."""
    missing = []
    parent = path.parent
    try:
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        if missing:
            path.parent.mkdir(parents=True)
    except (OSError, ValueError) as exc:
        _remove_empty(missing)
        why = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot create folder {path.parent} for --out {path}: {why}; pick a writable --out") from None
    return missing


def _remove_empty(folders: list[Any]) -> None:
    """Remove ``folders`` (innermost first) where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _space_of(arch_text: str) -> str:
    """The one space whose architecture string (or, for nb201, index) ``arch_text`` is."""
    from hwnas.spaces import SPACES, get_space
    from hwnas.spaces.nb201 import parse_arch

    fits, why = [], {}
    for name in SPACES.names():
        try:
            parse_arch(get_space(name), arch_text)
        except UsageError as exc:
            why[name] = str(exc)
        else:
            fits.append(name)
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise UsageError(f"--arch {arch_text!r} is an architecture of spaces {', '.join(fits)}; say which with --space")
    raise UsageError(f"--arch {arch_text!r} is no architecture of any space ({', '.join(SPACES.names())}): {why.get('nb201', '')}")


def _arch_from_run(run: Any, trial: int | None) -> tuple[str, str, dict[str, Any]]:
    report_path = run / "report.json"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"{report_path} is missing or unreadable; --run takes a folder written by 'hwnas search'") from None
    if trial is None:
        if not report.get("best"):
            raise UsageError(f"run {run} has no feasible best trial; name one with --trial N")
        best = report["best"]
        return report["space"], best["arch"], {k: best.get(k) for k in ("trial", "accuracy", "latency_ms", "latency_source")}
    from hwnas.report import open_run_study, trial_of_run
    from hwnas.trials import ACCURACY

    _, study = open_run_study(run)
    rec = trial_of_run(run, study, trial)
    return report["space"], rec.arch, {"trial": trial, "latency_ms": rec.cost("latency_ms"), "accuracy": rec.attrs.get(ACCURACY)}


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.train_run import train_run

    log = _err if args.json else print
    report = train_run(
        Path(args.run),
        trial=args.trial,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        flip=args.flip,
        train_device=args.train_device,
        precision=args.precision,
        data=args.data,
        seed=args.seed,
        bake=args.bake_preprocessing,
        log=log,
    )
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    test = report["test_accuracy"]
    onnx_test = report["onnx_test_accuracy"]
    final = Path(args.run) / "final"
    print(f"\ntrial {report['trial']} trained on {report['data_name']}: {report['arch']}")
    print(f"  validation {report['valid_accuracy']:.2f} %, held-out test " + ("none (no test split)" if test is None else f"{test:.2f} %"))
    lat = report["latency_ms"]
    budget = report["latency_budget_ms"]
    if lat is not None:
        verdict = "" if budget is None else (f", meets {budget:g} ms" if report["meets_budget"] else f", OVER the {budget:g} ms budget")
        print(f"  {final / 'best.onnx'}: {lat:.4g} ms on {report['device']}{verdict}; test in ONNX Runtime {onnx_test:.2f} %")
    else:
        print(f"  {final / 'best.onnx'}: {report['latency_source']}")
    if report.get("int8"):
        q = report["int8"]
        ms = "" if q["latency_ms"] is None else f", {q['latency_ms']:.4g} ms"
        print(f"  {final / 'best-int8.onnx'}: test {q['test_accuracy']:.2f} % (INT8 loses {q['test_drop_points']:.2f} points){ms}")
    print(
        f"  report {final / 'report.json'}" + (f", curve {report['curve_png']}" if report["curve_png"] else " (curve.png needs matplotlib)")
    )
    print(f"  try it: hwnas predict {final / 'best.onnx'} IMAGE.png")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from hwnas.preprocess import load_images, read

    pre = read(args.model)
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}; e.g. --top 3")
    x = load_images(args.images, pre)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = pre["labels"]
    rows = []
    for path, p in zip(args.images, probs, strict=True):
        order = np.argsort(-p, kind="stable")[: args.top]
        rows.append(
            {"image": path, "top": [{"label": labels[i] if i < len(labels) else str(i), "probability": float(p[i])} for i in order]}
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['image']}: " + ", ".join(f"{t['label']} {100 * t['probability']:.1f} %" for t in row["top"]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.report import draw, hypervolume_unit, hypervolume_words, run_summary

    run = Path(args.run)
    summary = run_summary(run, degenerate=args.include_degenerate)
    out = Path(args.out) if args.out else run
    paths: list[Path] = []
    no_plots_because = None
    if not args.no_plots:
        if importlib.util.find_spec("matplotlib") is None:
            no_plots_because = (
                "plots not drawn: matplotlib is not installed; pip install matplotlib (or pip install 'hwnas[plot]') to get them"
            )
        else:
            if out.exists() and not out.is_dir():
                raise UsageError(
                    f"--out {out} is a file, not a folder; give a folder for the plots, e.g. --out {out.with_suffix('')}-plots"
                )
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create --out {out}: {exc.strerror}; pick a writable folder") from None
            paths = draw(summary, out)
    feas = summary["feasible"]
    front = summary["front"]
    result: dict[str, Any] = {
        "run": str(run),
        "trials": len(feas) + summary["degenerate_left_out"],
        "feasible": int(feas.sum()),
        "front": [
            {
                "trial": summary["numbers"][i],
                "accuracy": float(summary["accuracy"][i]),
                summary["metric"]: float(summary["cost"][i]),
                **{f"latency_ms@{d}": float(ms[i]) for d, ms in summary["also_latency_ms"].items()},
            }
            for i in sorted(range(len(front)), key=lambda i: summary["cost"][i])
            if front[i]
        ],
        "hypervolume": float(summary["hypervolume"][-1]),
        "hypervolume_reference": list(summary["reference"]),
        "hypervolume_unit": hypervolume_unit(summary),
        "plots": [str(p) for p in paths],
        "plots_not_drawn_because": no_plots_because,
        "degenerate_left_out": summary["degenerate_left_out"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{run}: {result['trials']} trials, {result['feasible']} feasible, {len(result['front'])} on the front, "
        f"hypervolume {hypervolume_words(summary)}"
    )
    if summary["degenerate_left_out"]:
        print(
            f"  {summary['degenerate_left_out']} trial(s) of networks whose output ignores the input left out "
            "(fast, but no network; --include-degenerate shows them)"
        )
    for p in result["front"]:
        # Every device's latency (a multi-device run's further devices are its constraints).
        also = "".join(f", {d} {p[f'latency_ms@{d}']:.4g} ms" for d in summary["also_latency_ms"])
        print(f"  trial {p['trial']:>4}: {p['accuracy']:6.2f} % at {summary['metric']} {p[summary['metric']]:.4g}{also}")
    for p in paths:
        print(f"wrote {p}")
    if no_plots_because:
        print(no_plots_because)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hwnas.dashboard import dashboard_server

    server, url = dashboard_server(Path(args.run), host=args.host, port=args.port)
    print(f"optuna-dashboard on {url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid port {text!r}; give a whole number from 1 to 65535, e.g. 8080")
    return port


def cmd_devices(args: argparse.Namespace) -> int:
    from hwnas.cost.source import device_kind
    from hwnas.device import load_all

    rows, broken = load_all()
    # A listing shows what it can: each bad file is named on stderr with its error, and the exit code
    # stays 0 (the listing itself worked; 'hwnas search --device NAME' refuses that file with the same line).
    for path, why in broken.items():
        _err(f"hwnas: warning: not listed: {_one_line(why if str(path) in why else f'{path}: {why}')}")
    # Live state (each agent of a remote device: health, fingerprint, clock, temperature).
    live = {d.name: status(d, STATUS_TIMEOUT_S) for d in rows if (status := device_kind(d.kind).status) is not None}
    if args.json:
        print(
            json.dumps(
                [
                    {"name": d.name, "kind": d.kind, "spaces": d.spaces_text(), "description": d.description}
                    | ({"agents": live[d.name]} if d.name in live else {})
                    for d in rows
                ],
                indent=2,
            )
        )
        return 0
    print(f"{'device':<16} {'latency from':<22} {'spaces':<16} description")
    for d in rows:
        print(f"{d.name:<16} {device_kind(d.kind).summary(d):<22} {d.spaces_text():<16} {d.description}")
        for agent in live.get(d.name, []):
            print(f"    {agent['agent']}  {_agent_line(agent)}")
    return 0


#: Seconds ``hwnas devices`` waits for a live answer (agents are asked in parallel).
STATUS_TIMEOUT_S = 3.0


def _agent_line(a: dict[str, Any]) -> str:
    """One agent's live state in words."""
    from hwnas.search.reference import conditions

    if not a.get("up"):
        return f"down: {a.get('why')}"
    isa = " ".join(a.get("isa") or [])
    parts = [
        f"up, {'measuring' if a.get('busy') else 'idle'}, {a.get('measurements')} measurement(s) so far",
        f"{a.get('cpu')} ({a.get('machine')}{'; ' + isa if isa else ''})",
        f"onnxruntime {a.get('onnxruntime')} ({', '.join(p.replace('ExecutionProvider', '') for p in a.get('providers') or [])})",
    ]
    parts += conditions(a)
    parts.append(f"host {a.get('hostname')}")
    return "; ".join(parts)


def cmd_spaces(args: argparse.Namespace) -> int:
    from hwnas.spaces import SPACES

    for name in SPACES:
        s = SPACES.get(name)
        print(f"{name:<8} {len(s.dimensions()):>3} dimensions, {s.size():.3g} points  {s.description}")
    return 0


# -- parser -----------------------------------------------------------------
#: The subcommands and their one-line help: the top-level parser lists them without building their options.
COMMANDS = {
    "search": "search the accuracy/latency Pareto front and export the best feasible network",
    "export": "export an architecture or a run's trial to a verified ONNX model",
    "profile": "measure a device and build the latency lookup table the search uses",
    "train": "final training of a run's best network on your data: a trained, verified, re-measured model",
    "predict": "top classes of images from an exported model, using nothing but its metadata",
    "report": "Pareto front and hypervolume curve of a run (PNG and numbers)",
    "dashboard": "open a run's study in optuna-dashboard (pip install 'hwnas[dashboard]')",
    "devices": "list latency targets",
    "spaces": "list search spaces",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, the options of that one subcommand are built and
    the others are listed by name and help alone. ``search``'s options name the registries'
    entries (spaces, strategies, evaluators), which import the search library (numpy, Optuna): ``hwnas
    --help`` and the other commands need none of it (``benchmarks/startup.py`` times ``--help``)."""
    p = _Parser(
        prog="hwnas",
        description="Hardware-aware neural architecture search: the most accurate network that meets a latency budget on your device.",
    )
    p.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, text in COMMANDS.items():
        parser = sub.add_parser(name, help=text)
        if only is None or only == name:
            _BUILDERS[name](parser)
    return p


def _command_of(tokens: Sequence[str]) -> str:
    """The subcommand in ``tokens`` (the first word that is not an option: the top-level parser
    takes no option with a value), or "" where there is none."""
    return next((t for t in tokens if not t.startswith("-")), "")


def _search_options(s: argparse.ArgumentParser) -> None:
    from hwnas.cost.latency import LATENCY_SOURCES
    from hwnas.darts import defaults as darts
    from hwnas.evaluate import EVALUATORS
    from hwnas.evaluate.train import DEFAULTS as TRAIN
    from hwnas.ofa import defaults as ofa
    from hwnas.search import SearchConfig, strategy_names
    from hwnas.search.objectives import OBJECTIVE_NAMES
    from hwnas.spaces import SPACES
    from hwnas.units import format_ms

    # The spaces the supernet evaluator trains a supernet of (mbconv), from the registry, not a copied name.
    elastic = ", ".join(n for n in SPACES.names() if SPACES.get(n).offers("elastic_supernet"))
    s.add_argument("--space", default="nb201", help="search space (see 'hwnas spaces'; default nb201)")
    s.add_argument("--dataset", help="benchmark dataset of the space (nb201: cifar10 | cifar100 | imagenet16-120; default cifar10)")
    s.add_argument(
        "--device",
        action="append",
        help=f"latency target (see 'hwnas devices'; default {SearchConfig.device}); repeat for several devices, one --latency each",
    )
    s.add_argument(
        "--latency",
        type=parse_latency_ms,
        action="append",
        metavar="T",
        help=f"latency budget with unit, e.g. 20ms, 500us (default {format_ms(SearchConfig.latency_ms)}); one per --device, in order",
    )
    s.add_argument(
        "--flops",
        type=lambda t: parse_count_m(t, "FLOPs budget"),
        metavar="F",
        help="also a FLOPs budget (conv + linear multiply-adds), e.g. 300M",
    )
    s.add_argument("--params", type=lambda t: parse_count_m(t, "parameter budget"), metavar="P", help="also a parameter budget, e.g. 5M")
    s.add_argument(
        "--memory",
        type=lambda t: parse_bytes(t, "memory budget"),
        metavar="M",
        help="also a peak activation memory budget (batch 1, float32; 1 KB = 1024 bytes), e.g. 320KB",
    )
    s.add_argument(
        "--size",
        type=lambda t: parse_bytes(t, "model size budget"),
        metavar="S",
        help="also a model size budget (float32 weights), e.g. 2MB",
    )
    s.add_argument(
        "--objective",
        default=SearchConfig.objective,
        choices=list(OBJECTIVE_NAMES),
        help="the second objective beside accuracy (default latency: the first device's)",
    )
    s.add_argument("--trials", type=_positive_int, help="trial budget, counting trials already in the study (default 100)")
    s.add_argument(
        "--strategy", default=SearchConfig.strategy, choices=strategy_names(), help=f"search strategy (default {SearchConfig.strategy})"
    )
    s.add_argument(
        "--evaluator",
        default=SearchConfig.evaluator,
        choices=EVALUATORS.names(),
        help="accuracy: table (NAS-Bench-201 lookup, nb201) | train (train each candidate on --data) | supernet (weights inherited "
        f"from one Once-for-All supernet trained on --data; space {elastic} only) (default table)",
    )
    s.add_argument(
        "--seed",
        type=_int,
        default=0,
        help="random seed of the strategy, the training evaluators and the exported weights (default 0; part of the default --out)",
    )
    s.add_argument("--out", help="run folder (default hwnas-runs/<space>-<device>-<latency>-<strategy>-seed<seed>); rerun to resume")
    s.add_argument(
        "--storage", help="Optuna storage URL, e.g. sqlite:///runs/study.db or postgresql://... (default: a journal file in the run folder)"
    )
    s.add_argument("--study", help="study name in the storage (default hwnas)")
    s.add_argument(
        "--latency-source",
        default="auto",
        choices=list(LATENCY_SOURCES),
        help="auto (default): a table device's table, else this device's lookup table if built here, else measure",
    )
    s.add_argument(
        "--table",
        help="latency lookup table to use (default <device>-<space>.json in the table folder: $HWNAS_TABLES, else "
        "~/.local/share/hwnas/latency_tables on Linux)",
    )
    s.add_argument("--allow-foreign-table", action="store_true", help="use a lookup table built on another machine or runtime")
    s.add_argument(
        "--force",
        action="store_true",
        help="use a device's latency table although it was measured for networks of another input shape than --data's (warned loudly)",
    )
    s.add_argument("--allow-failing-table", action="store_true", help="use the --table although it failed its check (profile --force)")
    g = s.add_argument_group("differentiable search (--strategy darts) and training evaluators")
    g.add_argument(
        "--data",
        default="digits",
        help="training data of darts and of training evaluators: digits | cifar10:DIR | cifar100:DIR | npz:FILE | folder:DIR "
        "(default digits)",
    )
    g.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"training epochs (--strategy darts: its supernet's, default {darts.EPOCHS}; --evaluator train: per candidate, "
        f"default {TRAIN['epochs']}; --evaluator supernet: the supernet's, default {ofa.EPOCHS})",
    )
    g.add_argument("--warmup", type=_int, help="epochs of weight-only warm-up before architecture steps (default epochs/5, at most 5)")
    g.add_argument(
        "--batch",
        type=_positive_int,
        help=f"batch size (darts: default {darts.BATCH}; --evaluator train: default {TRAIN['batch']}; supernet: default {ofa.BATCH})",
    )
    g.add_argument("--darts-order", type=_int, choices=(1, 2), help="1: first-order DARTS, 2: second-order (default 1)")
    g.add_argument("--sampling", choices=("softmax", "gumbel"), help="softmax (DARTS, default) or gumbel (FBNet)")
    g.add_argument("--latency-term", choices=("mul#log", "add#linear", "fbnet"), help="latency in the loss (default add#linear)")
    g.add_argument("--latency-weight", type=float, help="lambda of add#linear (its start when adapted), beta of mul#log/fbnet (default 1)")
    g.add_argument(
        "--fixed-latency-weight",
        action="store_true",
        help="keep add#linear's lambda fixed (default: adapted by dual ascent so the derived network lands at --latency)",
    )
    g.add_argument(
        "--selection",
        choices=("perturbation", "alpha"),
        help="how the trained supernet picks each choice under the budget: perturbation (DARTS-PT, default) or alpha (argmax)",
    )
    g.add_argument("--train-device", default="cpu", choices=("cpu", "cuda"), help="where darts and training evaluators train (default cpu)")
    t = s.add_argument_group("training evaluators (--evaluator train | supernet)")
    t.add_argument("--lr", type=float, help=f"learning rate (train: default {TRAIN['lr']:g}; supernet: default {ofa.LR:g})")
    t.add_argument(
        "--optimizer", metavar="NAME", help=f"sgd | adam | adamw (train only: default {TRAIN['optimizer']}, Nesterov momentum 0.9)"
    )
    t.add_argument(
        "--schedule", metavar="NAME", help=f"learning-rate schedule: cosine | step | constant (train only: default {TRAIN['schedule']})"
    )
    t.add_argument(
        "--pruner",
        metavar="NAME",
        help=f"stop poor candidates early: none | median | halving (train only: default {TRAIN['pruner']}; pruning judges accuracy alone)",
    )
    s.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16"),
        help="what the device runs: fp32, or int8 (every candidate quantized with ONNX Runtime static QDQ before its latency and "
        "accuracy are measured); default: the device file's precision, else fp32",
    )
    s.add_argument("--no-export", action="store_true", help="skip exporting best.onnx")
    s.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    s.add_argument("--quiet", "-q", action="store_true", help="no per-trial progress on stderr")
    s.set_defaults(handler=cmd_search)


def _export_options(e: argparse.ArgumentParser) -> None:
    e.add_argument("--space", help="the space of --arch (default: the one space whose string it is)")
    e.add_argument("--arch", help="architecture string (nb201: '|op~0|+|op~0|op~1|+|...|' or an index; mbconv: 'r224-w1.0-...')")
    e.add_argument("--run", help="a run folder of 'hwnas search'")
    e.add_argument("--trial", type=_int, help="trial number in --run (default: the run's best)")
    e.add_argument(
        "--device",
        help="time the exported model on this device (default: with --run the run's device where it measures live, else cpu)",
    )
    e.add_argument("--no-measure", action="store_true", help="export and check the model without timing it")
    e.add_argument("--out", default="model.onnx", help="the ONNX file to write; missing folders are created (default model.onnx)")
    e.add_argument("--seed", type=_int, default=0, help="weight initialisation seed")
    e.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16"),
        help="int8: write the quantized model to --out and its FP32 source beside it (<out>-fp32.onnx); default: the run's, else fp32",
    )
    e.add_argument("--json", action="store_true", help="print the export's checks and measurement as JSON on stdout")
    e.set_defaults(handler=cmd_export)


def _profile_options(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--device", default="cpu", help="a measured device (cpu, cuda, or a device file)")
    pr.add_argument("--space", default="nb201", help="search space whose blocks are timed (see 'hwnas spaces'; default nb201)")
    pr.add_argument(
        "--resolution", type=_positive_int, action="append", help="mbconv input resolution to profile (repeatable; default all)"
    )
    pr.add_argument(
        "--calibrate", type=_positive_int, help="networks measured end to end to calibrate the table (default nb201 100, mbconv 80)"
    )
    pr.add_argument("--check", type=_int, default=0, metavar="N", help="measure N more random networks and report the table's accuracy")
    pr.add_argument("--reuse", action="store_true", help="keep an existing table built here (only run --check)")
    pr.add_argument("--force", action="store_true", help="write the table even if it fails its check (marked as failing)")
    pr.add_argument(
        "--out",
        help="table file (default <device>-<space>.json in the table folder: $HWNAS_TABLES, else "
        "~/.local/share/hwnas/latency_tables on Linux)",
    )
    pr.add_argument("--seed", type=_int, default=0, help="seed of the calibration and check networks (default 0)")
    pr.add_argument(
        "--precision",
        choices=("fp32", "int8", "fp16"),
        help="int8: every block and network is quantized before it is timed (table <device>-<space>-int8.json); default: the device file's",
    )
    pr.add_argument("--json", action="store_true", help="print the table's summary as JSON on stdout")
    pr.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    pr.set_defaults(handler=cmd_profile)


def _report_options(rp: argparse.ArgumentParser) -> None:
    rp.add_argument("run", help="a run folder of 'hwnas search'")
    rp.add_argument("--out", help="folder for the plots (default: the run folder)")
    rp.add_argument("--no-plots", action="store_true", help="numbers only (no matplotlib needed)")
    rp.add_argument(
        "--include-degenerate", action="store_true", help="also show networks whose output ignores the input (left out by default)"
    )
    rp.add_argument("--json", action="store_true", help="print the front and hypervolume as JSON on stdout")
    rp.set_defaults(handler=cmd_report)


def _dashboard_options(db: argparse.ArgumentParser) -> None:
    db.add_argument("run", help="a run folder of 'hwnas search'")
    db.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    db.add_argument("--port", type=_port, default=8080, help="port to serve on (default 8080)")
    db.set_defaults(handler=cmd_dashboard)


def _devices_options(d: argparse.ArgumentParser) -> None:
    d.add_argument("--json", action="store_true", help="print the devices as JSON on stdout")
    d.set_defaults(handler=cmd_devices)


def _spaces_options(sp: argparse.ArgumentParser) -> None:
    sp.set_defaults(handler=cmd_spaces)


def _train_options(t: argparse.ArgumentParser) -> None:
    from hwnas import final_defaults as d

    t.add_argument("run", help="a run folder of 'hwnas search'")
    t.add_argument("--trial", type=_int, help="trial number in RUN (default: the run's best feasible network)")
    t.add_argument("--epochs", type=_int, help=f"epochs (default {d.EPOCHS}; supernet runs fine-tune their inherited weights for 20)")
    t.add_argument("--batch", type=_int, help=f"batch size (default {d.BATCH})")
    t.add_argument("--lr", type=float, help=f"peak learning rate after the warm-up (default {d.LR:g}; fine-tuning 0.2 of it)")
    t.add_argument("--flip", action="store_true", help="random horizontal flips too (off by default: they change digits and text)")
    t.add_argument("--train-device", default="cpu", help="cpu (default) or cuda")
    t.add_argument(
        "--precision", choices=("fp32", "int8"), default="fp32", help="int8: also best-int8.onnx, calibrated on your training images"
    )
    t.add_argument("--data", help="train on other data than the run's --data (the network is built for its shape)")
    t.add_argument("--seed", type=_int, default=0, help="seed of the initial weights, shuffling and augmentation (default 0)")
    t.add_argument(
        "--bake-preprocessing",
        action="store_true",
        help="put the pixel scaling and normalisation into the exported graph: the models take raw pixel values (0-255)",
    )
    t.add_argument("--json", action="store_true", help="print the final report as JSON on stdout")
    t.set_defaults(handler=cmd_train)


def _predict_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file exported by hwnas (it carries its hwnas.preprocessing metadata)")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, ...)")
    p.add_argument("--top", type=_int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON on stdout")
    p.set_defaults(handler=cmd_predict)


_BUILDERS = {
    "train": _train_options,
    "predict": _predict_options,
    "search": _search_options,
    "export": _export_options,
    "profile": _profile_options,
    "report": _report_options,
    "dashboard": _dashboard_options,
    "devices": _devices_options,
    "spaces": _spaces_options,
}


def _validate_names(args: argparse.Namespace) -> None:
    """Check registry names up front so a typo fails before any work starts (search settings are
    checked whole by the library's resolver), then refuse flags that contradict each other."""
    from hwnas.spaces import SPACES

    if getattr(args, "space", None) is not None:
        SPACES.get(args.space)
    _refuse_conflicts(args)


def _refuse_conflicts(args: argparse.Namespace) -> None:
    """Refuse export flags that contradict each other, saying which to drop."""
    given: set[str] = getattr(args, _GIVEN, set())
    if args.command == "export":
        if args.run is not None and args.arch is not None:
            raise UsageError("give --arch or --run, not both: --arch '<arch string>' exports that network, --run DIR a run's best")
        if args.trial is not None and args.run is None:
            raise UsageError("--trial N picks a trial of a run: add --run DIR, or drop --trial")
        if args.run is not None and "space" in given:
            raise UsageError("--run DIR exports in the run's own space; drop --space")
        if args.no_measure and args.device is not None:
            raise UsageError("--no-measure exports without timing, --device names where to time it; drop one")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--latency -5ms`` -> ``--latency=-5ms``, so argparse hands the value to its parser (which
    explains the error) instead of reading it as an unknown option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if tok.startswith("--") and "=" not in tok and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == "."):
            out.append(f"{tok}={nxt}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


#: Flags whose value carries a unit written right after the number (``20ms``, ``320KB``, ``300M``).
UNIT_FLAGS = ("--latency", "--memory", "--size", "--flops", "--params")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_UNIT_WORD = re.compile(r"[A-Za-z\u00b5]{1,3}")


def _refuse_spaced_units(argv: list[str]) -> None:
    """``--latency 20 ms``: argparse would see the value ``20`` (refused: no unit) and a stray ``ms``;
    say instead that the space is the problem, and how to write it."""
    for i, tok in enumerate(argv):
        flag, eq, value = tok.partition("=")
        if flag not in UNIT_FLAGS:
            continue
        rest = argv[i + 1 :] if eq else argv[i + 2 :]
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if rest and _NUMBER.fullmatch(value.strip()) and _UNIT_WORD.fullmatch(rest[0]):
            raise UsageError(
                f"{flag} {value} {rest[0]}: write the unit right after the number, with no space: {flag} {value.strip()}{rest[0]}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code: 0 done, 2 bad input, 3 unreachable budget, 4 every
    trial of a round failed (completed trials kept),
    1 an unexpected error (a bug: one line, the traceback with ``HWNAS_DEBUG=1``), 130 interrupted."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(only=_command_of(tokens))
        tokens = _join_negative_values(tokens)
        _refuse_spaced_units(tokens)
        args = parser.parse_args(tokens)
        if args.command is None:
            parser.print_help()
            return 2
        _validate_names(args)
        return int(args.handler(args))
    except HwnasError as exc:
        _err(f"hwnas: error: {_one_line(str(exc))}")
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`hwnas ... | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _err(INTERRUPTED)
        return 130
    except MemoryError:
        _err("hwnas: error: out of memory; use a smaller --batch or network, or a machine with more memory")
        return 1
    except Exception as exc:
        import os

        if os.environ.get("HWNAS_DEBUG"):
            raise
        if _interrupted(exc):
            # Ctrl-C inside a library's bookkeeping (e.g. Optuna telling a trial it had just
            # completed) surfaces as another error raised while handling it: still an interrupt.
            _err(INTERRUPTED)
            return 130
        _err(
            f"hwnas: internal error: {type(exc).__name__}: {_one_line(str(exc))}; this is a bug in hwnas, please report it "
            "with the command line (HWNAS_DEBUG=1 shows the traceback)"
        )
        return 1


INTERRUPTED = "hwnas: interrupted; completed trials are kept in the study, rerun the same command to resume"


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a KeyboardInterrupt was being handled (its context chain)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _one_line(text: str, limit: int = 2000) -> str:
    """Messages are printed as one line: newlines folded, and cut at ``limit`` characters."""
    text = " ".join(text.split("\n")).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run() -> NoReturn:
    sys.exit(main())
