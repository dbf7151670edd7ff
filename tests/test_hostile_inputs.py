"""The bad-input corpus (issue 7): every user-facing input that is wrong gets one line on stderr
naming the value and a valid example or the fix, a non-zero exit code, no traceback, in bounded
time, and nothing already computed is lost.

Most cases run in process through ``hwnas.cli.main``; a handful run as real processes
(``python -m hwnas``) to prove the same of the installed entry point. The files the cases need
(device TOMLs, latency tables, a run folder) are made once per module; the latency tables are
variants of a valid table of this machine, which is itself tried first, so a refused variant is
refused for its defect, not for being foreign.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwnas import benchdata
from hwnas import device as device_mod
from hwnas.cli import main
from hwnas.errors import HwnasError

#: Seconds any one bad input may take to be refused in process (most take milliseconds; a few import torch).
TIME_LIMIT_S = 30.0


@dataclass(frozen=True)
class Case:
    """One bad input: the argv (``{d}`` is the folder of prepared files, ``{out}`` a fresh run folder),
    the exit code, the words the one error line must hold, and whether the refusal comes before
    anything is written (the run folder stays absent)."""

    id: str
    argv: str
    needles: tuple[str, ...]
    code: int = 2
    writes_nothing: bool = True


def C(id: str, argv: str, *needles: str, code: int = 2, writes_nothing: bool = True) -> Case:
    return Case(id, argv, needles, code, writes_nothing)


#: Prefix of the cases whose data is read when the supernet training starts (after the run folder is made).
DARTS = "search --strategy darts --device pixel3 --latency 5ms "
# fmt: off
LATENCY = [
    C("latency-no-unit", "search --latency 20", "'20'", "a unit is required", "20ms"),
    C("latency-space", "search --latency '20 ms'", "'20 ms'", "no space", "20ms"),
    C("latency-negative", "search --latency -5ms", "'-5ms'", "positive", "20ms"),
    C("latency-zero", "search --latency 0ms", "'0ms'", "positive", "20ms"),
    C("latency-zero-seconds", "search --latency 0.0s", "'0.0s'", "positive"),
    C("latency-exponent", "search --latency 1e3us", "'1e3us'", "no exponent", "1ms"),
    C("latency-word", "search --latency fast", "'fast'", "20ms"),
    C("latency-list", "search --latency 20ms,30ms", "'20ms,30ms'", "one budget per --latency", "--device pixel3 --latency 30ms"),
    C("latency-two-words", "search --latency '20ms 30ms'", "'20ms 30ms'", "one budget per --latency"),
    C("latency-nan", "search --latency 'nan ms'", "'nan ms'", "finite", "20ms"),
    C("latency-nan-glued", "search --latency nanms", "'nanms'", "finite"),
    C("latency-inf", "search --latency inf", "'inf'", "finite", "20ms"),
    C("latency-overflow", "search --latency 1e400ms", "'1e400ms'", "20ms"),
    C("latency-huge", "search --latency " + "9" * 400 + "s", "too large", "20ms"),
    C("latency-tiny", "search --latency 0.0000000000001us", "smallest budget", "20ms"),
    C("latency-empty", "search --latency ''", "''", "20ms"),
    C("latency-blank", "search --latency ' '", "' '", "20ms"),
    C("latency-upper-unit", "search --latency 20MS", "'20MS'", "lower case", "20ms"),
    C("latency-msec", "search --latency 20msec", "'20msec'", "us, ms and s"),
    C("latency-plus", "search --latency +20ms", "'+20ms'", "20ms"),
    C("latency-fullwidth-digits", "search --latency \uff12\uff10ms", "ASCII digits", "20ms"),
    C("latency-fullwidth-unit", "search --latency 20\uff4d\uff53", "ASCII digits", "20ms"),
    C("latency-comma-decimal", "search --latency 2,5ms", "'2,5ms'", "decimal point", "2.5ms"),
    C("latency-missing-value", "search --latency", "--latency", "expected one argument"),
    C("latency-without-device-pair", "search --device pixel3 --latency 5ms --device raspi4", "one budget per device", "--latency 5ms"),
    C("flops-negative", "search --flops -1M", "--flops", "'-1M'", "positive", "300M"),
    C("flops-zero", "search --flops 0", "'0'", "positive", "300M"),
    C("flops-nan", "search --flops nan", "'nan'", "finite", "300M"),
    C("flops-unit", "search --flops 5T", "'5T'", "300M"),
    C("flops-exponent", "search --flops 1e3M", "'1e3M'", "no exponent", "300M"),
    C("params-word", "search --params lots", "--params", "'lots'", "300M"),
    C("flops-twice", "search --flops 300M --flops 200M", "--flops", "more than once"),
    C("out-twice", "search --out a --out b", "--out", "more than once"),
]
COUNTS = [
    C("trials-zero", "search --trials 0", "--trials", "'0'", "at least 1", "e.g. 100"),
    C("trials-word", "search --trials abc", "--trials", "'abc'", "whole number", "e.g. 100"),
    C("trials-negative", "search --trials -3", "'-3'", "at least 1"),
    C("trials-float", "search --trials 2.5", "'2.5'", "whole number"),
    C("trials-exponent", "search --trials 1e3", "'1e3'", "whole number"),
    C("trials-huge", "search --trials 99999999999999999999999999", "at most 1000000"),
    C("trials-unicode", "search --trials \u0661\u0660", "whole number"),
    C("seed-word", "search --seed x", "--seed", "'x'", "e.g. 0"),
    C("seed-negative", "search --seed -1", "--seed", "'-1'", "from 0 to 4294967295"),
    C("seed-huge", "search --seed 99999999999999999999", "from 0 to 4294967295"),
    C("epochs-zero", "search --strategy darts --epochs 0", "--epochs", "at least 1"),
    C("batch-huge", "search --strategy darts --batch 10000000", "--batch", "at most 1000000"),
    C("latency-weight-word", "search --strategy darts --latency-weight abc", "--latency-weight", "'abc'"),
    C("latency-weight-nan", DARTS + "--latency-weight nan", "--latency-weight", "finite"),
    C("latency-weight-negative", DARTS + "--latency-weight -1", "--latency-weight", ">= 0"),
    C("darts-order-3", "search --strategy darts --darts-order 3", "--darts-order", "'3'", "valid: 1, 2"),
    C("profile-calibrate-zero", "profile --calibrate 0 --out {out}.json", "--calibrate", "at least 1"),
    C("profile-check-negative", "profile --check -5 --out {out}.json", "--check", "'-5'"),
    C("profile-resolution-zero", "profile --space mbconv --resolution 0 --out {out}.json", "--resolution", "at least 1"),
    C("export-seed-negative", "export --arch 6111 --seed -1 --out {out}.onnx", "--seed", "'-1'"),
    C("export-trial-word", "export --run {d}/run --trial best", "--trial", "'best'"),
]
NAMES = [
    C("space-typo", "search --space nb2O1", "'nb2O1'", "did you mean 'nb201'", "valid: mbconv, nb201"),
    C("space-case", "search --space NB201", "'NB201'", "did you mean 'nb201'"),
    C("space-empty", "search --space ''", "unknown space ''", "valid:"),
    C("strategy-typo", "search --strategy tpee", "'tpee'", "did you mean 'tpe'", "valid:"),
    C("strategy-typo-2", "search --strategy evolutoin", "did you mean 'evolution'"),
    C("evaluator-typo", "search --evaluator tabel", "'tabel'", "did you mean 'table'", "valid:"),
    C("device-typo", "search --device pixle3", "'pixle3'", "did you mean 'pixel3'", "hwnas devices"),
    C("device-case", "search --device CPU", "'CPU'", "did you mean 'cpu'"),
    C("device-empty", "search --device ''", "unknown device ''", "hwnas devices"),
    C("device-second-typo", "search --device pixel3 --latency 5ms --device pixle2 --latency 6ms", "'pixle2'", "did you mean 'pixel2'"),
    C("device-twice", "search --device pixel3 --latency 5ms --device pixel3 --latency 6ms", "names a device twice"),
    C("device-folder", "search --device {d}/dev", "unknown device", ".toml"),
    C("dataset-typo", "search --dataset cifar1O", "'cifar1O'", "did you mean 'cifar10'", "valid: cifar10, cifar100"),
    C("latency-source-typo", "search --latency-source mesure", "'mesure'", "did you mean 'measure'"),
    C("train-device-typo", "search --strategy darts --train-device gpu", "'gpu'", "valid: cpu, cuda"),
    C("option-typo", "search --trails 5", "--trails", "did you mean '--trials'"),
    C("command-typo", "serach", "'serach'", "did you mean 'search'"),
    C("command-unknown", "frobnicate", "'frobnicate'", "valid: search, export"),
    C("devices-bogus-flag", "devices --bogus", "--bogus", "unrecognized"),
    C("profile-space-typo", "profile --space nb2O1 --out {out}.json", "did you mean 'nb201'"),
    C("data-kind-typo", DARTS + "--data cifar1O:/x", "cifar1O", "did you mean 'cifar10'", writes_nothing=False),
    C("data-missing-folder", DARTS + "--data cifar10:/nonexistent/cifar", "/nonexistent/cifar", "cifar10:/data/cifar-10-batches-bin",
      writes_nothing=False),
    C("data-missing-npz", DARTS + "--data npz:{d}/missing.npz", "missing.npz", "does not exist", writes_nothing=False),
    C("data-npz-not-npz", DARTS + "--data npz:{d}/afile", "afile", "np.savez", writes_nothing=False),
    C("data-npz-no-path", DARTS + "--data npz:", "needs a path", "npz:/data/mnist.npz", writes_nothing=False),
]
DEVICE_FILES = [
    C("toml-syntax", "search --device {d}/dev/syntax.toml", "syntax.toml", "not valid TOML", "minimal file"),
    C("toml-missing", "search --device {d}/dev/nowhere.toml", "nowhere.toml", "cannot read device file"),
    C("toml-no-name", "search --device {d}/dev/noname.toml", "noname.toml", "lacks key 'name'"),
    C("toml-no-provider", "search --device {d}/dev/noprovider.toml", "lacks key 'provider'"),
    C("toml-wrong-type", "search --device {d}/dev/wrongtype.toml", "threads = '4'", "wrong type", "threads = 1"),
    C("toml-bool-for-int", "search --device {d}/dev/boolthreads.toml", "threads = True", "wrong type"),
    C("toml-typo-key", "search --device {d}/dev/typokey.toml", "unknown key 'thread'", "did you mean 'threads'"),
    C("toml-unknown-kind", "search --device {d}/dev/kind.toml", "kind = 'onnxrutime'", "did you mean 'onnxruntime'"),
    C("toml-estimated-str", "search --device {d}/dev/estimated.toml", "latency.nb201.estimated = 'no'", "wrong type", "estimated = false"),
    C("toml-latency-other-space", "search --device {d}/dev/mbtable.toml", "[latency.mbconv]", "nb201 only"),
    C("toml-latency-empty", "search --device {d}/dev/emptylatency.toml", "names no space", "[latency.nb201]"),
    C("toml-latency-missing-array", "search --device {d}/dev/nosucharray.toml --latency 5ms", "'nosuch'", "valid: 1080ti_1"),
    C("toml-evil-name", "search --device {d}/dev/evilname.toml", "name = '../../evil'", "letters, digits"),
    C("toml-huge-batch", "search --device {d}/dev/hugebatch.toml", "batch = 99999999999", "at most 4096"),
    C("toml-huge-threads", "search --device {d}/dev/hugethreads.toml", "threads = 99999999999", "at most 1024"),
    C("toml-zero-repeats", "search --device {d}/dev/zerorepeats.toml", "repeats = 0", ">= 1"),
    C("toml-not-utf8", "search --device {d}/dev/latin1.toml", "latin1.toml", "UTF-8"),
    C("toml-empty", "search --device {d}/dev/empty.toml", "empty.toml", "lacks key 'name'"),
    C("toml-binary", "search --device {d}/dev/binary.toml", "binary.toml"),
    C("toml-name-mismatch-by-name", "search --device notme", "must match the file name 'notme'"),
    C("toml-provider-not-installed", "search --device {d}/dev/tensorrt.toml --latency 5ms", "'TensorrtExecutionProvider' is not installed",
      "available here", writes_nothing=False),
    C("profile-table-device", "profile --device pixel3 --out {out}.json", "table device", "cpu"),
    C("profile-bad-toml", "profile --device {d}/dev/syntax.toml --out {out}.json", "not valid TOML"),
    C("export-device-typo", "export --arch 6111 --device pixle3 --out {out}.onnx", "did you mean 'pixel3'"),
]
TABLES = [
    C("table-valid-control", "search --table {d}/tables/valid.json --latency 1us", "raise --latency to at least", code=3,
      writes_nothing=False),
    C("table-missing", "search --table {d}/tables/missing.json", "missing.json", "does not exist", "hwnas profile"),
    C("table-truncated", "search --table {d}/tables/truncated.json", "truncated.json", "not JSON", "hwnas profile"),
    C("table-corrupt-bytes", "search --table {d}/tables/binary.json", "binary.json", "not JSON"),
    C("table-empty", "search --table {d}/tables/empty.json", "empty.json", "not JSON"),
    C("table-deep-nesting", "search --table {d}/tables/deep.json", "deep.json", "not JSON"),
    C("table-huge-integer", "search --table {d}/tables/bigint.json", "bigint.json", "not JSON"),
    C("table-a-list", "search --table {d}/tables/list.json", "list.json", "top level is not an object"),
    C("table-a-folder", "search --table {d}/tables", "tables", "not JSON"),
    C("table-other-schema", "search --table {d}/tables/schema_other.json", "schema is 'other'"),
    C("table-schema-version-2", "search --table {d}/tables/schema_v2.json", "schema_version 2", "reads 1"),
    C("table-schema-version-str", "search --table {d}/tables/schema_vstr.json", "schema_version '1'"),
    C("table-no-entries", "search --table {d}/tables/no_entries.json", "'entries' missing"),
    C("table-nan-entry", "search --table {d}/tables/nan_entry.json", "finite, non-negative median_ms"),
    C("table-inf-entry", "search --table {d}/tables/inf_entry.json", "finite, non-negative median_ms"),
    C("table-negative-entry", "search --table {d}/tables/negative_entry.json", "finite, non-negative median_ms"),
    C("table-bool-entry", "search --table {d}/tables/bool_entry.json", "finite, non-negative median_ms"),
    C("table-nan-intercept", "search --table {d}/tables/nan_intercept.json", "calibration.coef / calibration.intercept"),
    C("table-short-coef", "search --table {d}/tables/short_coef.json", "feature_names does not match"),
    C("table-other-features", "search --table {d}/tables/other_features.json", "not this hwnas's features"),
    C("table-no-structure", "search --table {d}/tables/no_structure.json", "structure"),
    C("table-short-structure", "search --table {d}/tables/short_structure.json", "15625 rows"),
    C("table-text-structure", "search --table {d}/tables/text_structure.json", "structure.features row 0"),
    C("table-bad-check", "search --table {d}/tables/bad_check.json", "check must hold"),
    C("table-unknown-space", "search --table {d}/tables/unknown_space.json", "space 'nb2O1'"),
    C("table-other-space", "search --table {d}/tables/mbconv.json", "is for space 'mbconv', not 'nb201'"),
    C("table-other-device", "search --table {d}/tables/other_device.json", "built for device 'pixel3', not 'cpu'", "--allow-foreign-table"),
    C("table-other-machine", "search --table {d}/tables/other_machine.json", "Other CPU 9000", "--allow-foreign-table"),
    C("table-other-runtime", "search --table {d}/tables/other_runtime.json", "onnxruntime 0.0.1", "hwnas profile --device cpu"),
    C("table-other-threads", "search --table {d}/tables/other_threads.json", "threads 4 != 1"),
    C("table-missing-entry", "search --table {d}/tables/missing_entry.json --latency 5ms", "no entry 'nb201:s0:skip_connect'",
      "hwnas profile --device cpu --space nb201", writes_nothing=False),
    C("profile-reuse-corrupt", "profile --reuse --out {d}/tables/truncated.json", "not JSON"),
]
CONFLICTS = [
    C("table-with-measure", "search --table {d}/tables/valid.json --latency-source measure", "--table", "drop --table"),
    C("table-with-table-source", "search --device pixel3 --table {d}/tables/valid.json --latency-source table", "drop --table"),
    C("table-on-table-device", "search --device pixel3 --table {d}/tables/valid.json", "'pixel3'", "drop --table"),
    C("foreign-flag-with-measure", "search --allow-foreign-table --latency-source measure", "drop --allow-foreign-table"),
    C("lut-on-table-device", "search --device pixel3 --latency-source lut", "cannot be measured here"),
    C("table-source-on-cpu", "search --device cpu --latency-source table", "no benchmark table", "--latency-source lut"),
    C("dataset-with-mbconv", "search --space mbconv --dataset cifar100", "--dataset", "drop --dataset"),
    C("darts-with-trials", "search --strategy darts --trials 50", "--strategy darts", "drop --trials"),
    C("darts-flag-without-darts", "search --latency-weight 3", "--latency-weight", "--strategy darts only", "drop --latency-weight"),
    C("darts-sampling-without-darts", "search --strategy random --sampling gumbel", "--sampling", "--strategy darts only"),
    C("darts-switch-without-darts", "search --fixed-latency-weight", "--fixed-latency-weight", "--strategy darts only"),
    C("export-arch-and-run", "export --arch 6111 --run {d}/run", "--arch or --run, not both"),
    C("export-trial-without-run", "export --arch 6111 --trial 3", "--trial", "add --run"),
    C("export-space-with-run", "export --run {d}/run --space nb201", "drop --space"),
    C("export-nothing", "export", "--arch", "--run"),
    C("profile-resolution-nb201", "profile --space nb201 --resolution 224 --out {out}.json", "mbconv space only"),
    C("mbconv-on-table-device", "search --space mbconv --device pixel3", "nb201"),
]
PATHS = [
    C("out-is-a-file", "search --device pixel3 --latency 5ms --out {d}/afile", "is a file", "pick a new folder"),
    C("out-under-a-file", "search --device pixel3 --latency 5ms --out {d}/afile/run", "cannot write", "--out"),
    C("out-not-empty", "search --device pixel3 --latency 5ms --out {d}/nonempty", "not empty", "holds no hwnas run"),
    C("out-other-settings", "search --device pixel3 --latency 6ms --trials 2 --strategy random --out {d}/run", "latency_ms=20.0", "not 6.0",
      "pick another --out"),
    C("storage-unreachable", "search --device pixel3 --latency 5ms --storage sqlite:////nonexistent/dir/study.db",
      "cannot open storage", "sqlite:////nonexistent/dir/study.db", writes_nothing=False),
    C("export-arch-garbage", "export --arch garbage --out {out}.onnx", "'garbage'", "e.g. '|nor_conv_3x3~0|"),
    C("export-arch-empty", "export --arch '' --out {out}.onnx", "''", "e.g. '|nor_conv_3x3~0|"),
    C("export-arch-bad-op", "export --arch '|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|' --out {out}.onnx", "nor_conv_9x9"),
    C("export-arch-index-range", "export --arch 99999 --out {out}.onnx", "99999", "out of range", "0..15624"),
    C("export-arch-negative", "export --arch -1 --out {out}.onnx", "'-1'"),
    C("export-arch-mbconv", "export --space mbconv --arch 6111 --out {out}.onnx", "'6111'", "e.g. 'r224-w1.0-"),
    C("export-run-missing", "export --run /nonexistent/run", "/nonexistent/run/report.json", "hwnas search"),
    C("export-run-not-a-run", "export --run {d}/nonempty", "report.json", "hwnas search"),
    C("export-run-bad-trial", "export --run {d}/run --trial 999 --out {out}.onnx", "no trial 999", "valid: 0..1"),
    C("export-out-is-a-folder", "export --arch 6111 --out {d}/nonempty", "it is a folder", "model.onnx"),
    C("export-out-empty", "export --arch 6111 --out ''", "it is a folder"),
    C("export-out-under-a-file", "export --arch 6111 --out {d}/afile/m.onnx", "is a file, not a folder"),
    # A missing folder is created now (issue 24 item 2.5, tests/test_first_day_cli.py); one under a file cannot be.
    C("export-out-folder-under-a-file", "export --arch 6111 --out {d}/afile/dir/m.onnx", "cannot create folder", "Not a directory"),
    C("report-missing", "report /nonexistent/run", "/nonexistent/run/config.json", "hwnas search"),
    C("report-not-a-run", "report {d}/nonempty --no-plots", "config.json", "hwnas search"),
    C("report-a-file", "report {d}/afile --no-plots", "config.json"),
    C("profile-out-under-a-file", "profile --out {d}/afile/t.json", "cannot write", "--out"),
]
INFEASIBLE = [
    C("infeasible-table-device", "search --device pixel3 --latency 1us", "0.001ms", "pixel3", "raise --latency to at least", code=3,
      writes_nothing=False),
    C("infeasible-second-device", "search --device pixel3 --latency 20ms --device raspi4 --latency 1us", "raspi4", "raise its --latency",
      code=3, writes_nothing=False),
    C("infeasible-measured", "search --device cpu --latency 1us --latency-source measure", "the smallest architecture of the space takes",
      "raise --latency to at least", code=3, writes_nothing=False),
]
# fmt: on
CORPUS = LATENCY + COUNTS + NAMES + DEVICE_FILES + TABLES + CONFLICTS + PATHS + INFEASIBLE


# ------------------------------------------------------------------ prepared files
def _valid_table() -> dict[str, Any]:
    """A schema-valid nb201 lookup table of this machine and runtime (made up numbers, real metadata)."""
    from hwnas.benchdata import NB201_N
    from hwnas.cost.lut import SCHEMA, SCHEMA_VERSION, fingerprint, runtime_versions
    from hwnas.cost.lut_blocks import all_blocks
    from hwnas.cost.lut_features import feature_names
    from hwnas.spaces import _nb201_graph as nb201_graph
    from hwnas.spaces import get_space

    space = get_space("nb201")
    names = nb201_graph.feature_names()
    features = feature_names(space, names)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "space": "nb201",
        "device": {
            "name": "cpu",
            "kind": "onnxruntime",
            "provider": "CPUExecutionProvider",
            "fingerprint": fingerprint("CPUExecutionProvider"),
        },
        "runtime": runtime_versions(),
        "measurement": {"threads": 1, "batch": 1, "dtype": "float32", "warmup": 20, "repeats": 100},
        "entries": {key: {"median_ms": 0.01 * (i + 1), "iqr_ms": 0.0, "count": 100} for i, key in enumerate(all_blocks(space))},
        "calibration": {"feature_names": features, "coef": [1.0] + [0.0] * (len(features) - 1), "intercept": 0.05},
        "check": None,
        "structure": {"kind": "zeros", "names": names, "features": [[0] * len(names)] * NB201_N},
    }


def _table_variants(valid: dict[str, Any]) -> dict[str, Any]:
    def change(fn: Any) -> dict[str, Any]:
        d = copy.deepcopy({k: v for k, v in valid.items() if k != "structure"})
        d["structure"] = valid["structure"]  # shared: 15,625 rows need no copy unless changed
        fn(d)
        return d

    def put(path: str, value: Any) -> Any:
        def fn(d: dict[str, Any]) -> None:
            *keys, last = path.split(".")
            for k in keys:
                d = d[k]
            d[last] = value

        return fn

    first = next(iter(valid["entries"]))
    return {
        "schema_other": change(put("schema", "other")),
        "schema_v2": change(put("schema_version", 2)),
        "schema_vstr": change(put("schema_version", "1")),
        "no_entries": change(lambda d: d.pop("entries")),
        "nan_entry": change(put(f"entries.{first}.median_ms", float("nan"))),
        "inf_entry": change(put(f"entries.{first}.median_ms", float("inf"))),
        "negative_entry": change(put(f"entries.{first}.median_ms", -1.0)),
        "bool_entry": change(put(f"entries.{first}.median_ms", True)),
        "nan_intercept": change(put("calibration.intercept", float("nan"))),
        "short_coef": change(put("calibration.coef", [1.0])),
        "other_features": change(lambda d: d["calibration"].update(feature_names=[f"x{i}" for i in range(len(d["calibration"]["coef"]))])),
        "no_structure": change(lambda d: d.pop("structure")),
        "short_structure": change(put("structure", {**valid["structure"], "features": valid["structure"]["features"][:10]})),
        "text_structure": change(put("structure", {**valid["structure"], "features": [["a"] * 18, *valid["structure"]["features"][1:]]})),
        "bad_check": change(put("check", {"n": 3})),
        "unknown_space": change(put("space", "nb2O1")),
        "other_device": change(put("device.name", "pixel3")),
        "other_machine": change(put("device.fingerprint.cpu", "Other CPU 9000")),
        "other_runtime": change(put("runtime.onnxruntime", "0.0.1")),
        "other_threads": change(put("measurement.threads", 4)),
        "missing_entry": change(lambda d: d["entries"].pop("nb201:s0:skip_connect")),
    }


DEVICE_TOMLS = {
    "syntax": 'name = "syntax"\nkind = onnxruntime\n',
    "noname": 'kind = "onnxruntime"\nprovider = "CPUExecutionProvider"\n',
    "noprovider": 'name = "noprovider"\nkind = "onnxruntime"\n',
    "wrongtype": 'name = "wrongtype"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthreads = "4"\n',
    "boolthreads": 'name = "boolthreads"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthreads = true\n',
    "typokey": 'name = "typokey"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthread = 4\n',
    "kind": 'name = "kind"\nkind = "onnxrutime"\n',
    "estimated": 'name = "estimated"\nkind = "table"\n[latency.nb201]\ntable = "pixel3"\nestimated = "no"\n',
    "mbtable": 'name = "mbtable"\nkind = "table"\n[latency.mbconv]\ntable = "pixel3"\n',
    "emptylatency": 'name = "emptylatency"\nkind = "table"\n[latency]\n',
    "nosucharray": 'name = "nosucharray"\nkind = "table"\n[latency.nb201]\ntable = "nosuch"\n',
    "evilname": 'name = "../../evil"\nkind = "table"\n[latency.nb201]\ntable = "pixel3"\n',
    "hugebatch": 'name = "hugebatch"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nbatch = 99999999999\n',
    "hugethreads": 'name = "hugethreads"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthreads = 99999999999\n',
    "zerorepeats": 'name = "zerorepeats"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nrepeats = 0\n',
    "tensorrt": 'name = "tensorrt"\nkind = "onnxruntime"\nprovider = "TensorrtExecutionProvider"\n',
    "empty": "",
    "notme": 'name = "someone_else"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\n',
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    (d / "afile").write_text("not a folder, not an npz\n")
    (d / "nonempty").mkdir()
    (d / "nonempty" / "notes.txt").write_text("someone's files\n")
    dev = d / "dev"
    dev.mkdir()
    for name, text in DEVICE_TOMLS.items():
        (dev / f"{name}.toml").write_text(text, encoding="utf-8")
    (dev / "latin1.toml").write_bytes('name = "latin1"\ndescription = "caf\xe9"\n'.encode("latin-1"))
    (dev / "binary.toml").write_bytes(bytes(range(256)))
    tables = d / "tables"
    tables.mkdir()
    valid = _valid_table()
    text = json.dumps(valid)
    (tables / "valid.json").write_text(text)
    (tables / "truncated.json").write_text(text[: len(text) // 3])
    (tables / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tables / "empty.json").write_text("")
    (tables / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tables / "bigint.json").write_text('{"schema": ' + "9" * 5000 + "}")
    (tables / "list.json").write_text("[1, 2, 3]")
    for name, data in _table_variants(valid).items():
        (tables / f"{name}.json").write_text(json.dumps(data))
    from hwnas.cost.lut_features import feature_names
    from hwnas.spaces import get_space

    mb = {k: v for k, v in valid.items() if k != "structure"} | {"space": "mbconv", "entries": {}}
    mb["calibration"] = {"feature_names": feature_names(get_space("mbconv")), "coef": [1.0, 0.0, 0.0], "intercept": 0.0}
    (tables / "mbconv.json").write_text(json.dumps(mb))
    # A finished run (2 trials on a table device) for the export and resume cases.
    argv = ["search", "--device", "pixel3", "--latency", "20ms", "--trials", "2", "--strategy", "random", "-q", "--no-export"]
    assert main([*argv, "--out", str(d / "run")]) == 0
    return d


@pytest.fixture(autouse=True)
def _no_user_devices(monkeypatch: pytest.MonkeyPatch, files: Path) -> Any:
    """Device lookup by name sees the built-ins plus a folder holding only ``notme.toml``."""
    user = files / "user_devices"
    user.mkdir(exist_ok=True)
    shutil.copy(files / "dev" / "notme.toml", user / "notme.toml")
    monkeypatch.setenv("HWNAS_DEVICES", str(user))
    device_mod._scan.cache_clear()
    yield
    device_mod._scan.cache_clear()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    return code, out, err, elapsed


def _assert_refused(code: int, err: str, elapsed: float, case: Case, limit_s: float = TIME_LIMIT_S) -> str:
    lines = err.strip().splitlines()
    assert code == case.code, f"exit {code}, expected {case.code}: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("hwnas: error: "), line
    for needle in case.needles:
        assert needle in line, f"{needle!r} not in: {line}"
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
    return line


def _argv(case: Case, files: Path, out: Path) -> list[str]:
    import shlex

    argv = shlex.split(case.argv.format(d=files, out=out))
    if argv and argv[0] in ("search", "profile") and "-q" not in argv:
        argv.append("-q")  # progress lines are not errors; the one error line is what is checked
    if argv and argv[0] == "search" and "--out" not in argv and not any(a.startswith("--out=") for a in argv):
        argv += ["--out", str(out)]
    return argv


# ------------------------------------------------------------------ the corpus
@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_is_refused_in_one_line(case: Case, files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    before = sorted(p.name for p in files.iterdir())
    run_before = {p.name: p.read_bytes() for p in (files / "run").iterdir()}
    code, _, err, elapsed = _run(_argv(case, files, out), capsys)
    _assert_refused(code, err, elapsed, case)
    if case.writes_nothing:
        assert not out.exists() and not Path(f"{out}.json").exists() and not Path(f"{out}.onnx").exists()
    # The prepared files and the finished run are never touched by a refused command.
    assert sorted(p.name for p in files.iterdir()) == before
    assert {p.name: p.read_bytes() for p in (files / "run").iterdir()} == run_before


def test_the_corpus_is_large_and_distinct() -> None:
    ids = [c.id for c in CORPUS]
    assert len(ids) == len(set(ids)) and len({c.argv for c in CORPUS}) == len(CORPUS)
    assert len(CORPUS) >= 150


def test_infeasible_budget_names_the_smallest_reachable_latency(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err, _ = _run(["search", "--device", "raspi4", "--latency", "1us", "--out", str(tmp_path / "r"), "-q"], capsys)
    smallest = float(re.search(r"at least ([0-9.]+)ms", err)[1])  # type: ignore[index]
    from hwnas.spaces import get_space

    nb, values = get_space("nb201"), benchdata.nb201_latency("raspi4")
    real = next(values[i] for i in np.argsort(values, kind="stable") if not nb.degenerate(nb.from_index(int(i))))
    assert code == 3 and smallest == pytest.approx(float(real), rel=1e-3)


def test_cuda_provider_not_installed(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    case = C("cuda", "", "'CUDAExecutionProvider' is not installed", "onnxruntime-gpu", "--device cpu")
    for argv in (["search", "--device", "cuda", "--latency", "5ms", "--out", str(tmp_path / "r"), "-q"],
                 ["profile", "--device", "cuda", "--out", str(tmp_path / "t.json"), "-q"],
                 ["export", "--arch", "6111", "--device", "cuda", "--out", str(tmp_path / "m.onnx")]):  # fmt: skip
        code, _, err, elapsed = _run(argv, capsys)
        _assert_refused(code, err, elapsed, case)
    assert not (tmp_path / "t.json").exists()


# ------------------------------------------------------------------ benchmark data that fails its checksum
@pytest.fixture
def data_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """hwnas's benchmark data folder, copied, for the test to damage; the caches are cleared around it."""
    copy_dir = tmp_path / "data"
    shutil.copytree(benchdata.DATA_DIR, copy_dir)
    monkeypatch.setattr(benchdata, "DATA_DIR", copy_dir)

    def clear() -> None:
        benchdata.nb201_table.cache_clear()
        benchdata._latency_arrays.cache_clear()

    clear()
    yield copy_dir
    monkeypatch.undo()
    clear()


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (lambda d: _flip_byte(d / "nb201_latency.npz"), ("nb201_latency.npz", "is corrupted (sha256", "reinstall hwnas")),
        (lambda d: _flip_byte(d / "nb201.npz"), ("nb201.npz", "is corrupted", "reinstall hwnas")),
        (lambda d: (d / "nb201_latency.npz").write_bytes((d / "nb201_latency.npz").read_bytes()[:1000]), ("is corrupted",)),
        (lambda d: (d / "nb201_latency.npz").unlink(), ("nb201_latency.npz", "missing or unreadable")),
        (lambda d: (d / "SHA256SUMS").unlink(), ("checksum file", "SHA256SUMS")),
        (lambda d: (d / "SHA256SUMS").write_text("0" * 64 + "  other.npz\n"), ("not listed in",)),
    ],
    ids=["latency-bit-flip", "accuracy-bit-flip", "latency-truncated", "latency-missing", "sums-missing", "sums-unlisted"],
)
def test_benchmark_file_failing_its_checksum(
    damage: Any, needles: tuple[str, ...], data_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(data_copy)
    case = C("checksum", "", *needles)
    code, _, err, elapsed = _run(["search", "--device", "pixel3", "--latency", "5ms", "--out", str(tmp_path / "r"), "-q"], capsys)
    _assert_refused(code, err, elapsed, case)
    assert not (tmp_path / "r").exists()


def _flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_damaged_data_is_refused_without_checksum_too(data_copy: Path) -> None:
    # With the check switched off the loader still refuses a damaged archive in one line.
    blob = (data_copy / "nb201_latency.npz").read_bytes()
    (data_copy / "nb201_latency.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(HwnasError, match="cannot be read") as info:
        benchdata._load_npz("nb201_latency.npz", data_copy, verify=False)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ a user device folder
def test_broken_user_device_file_names_the_file(files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "board.toml").write_text('name = "board"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthreads = 0\n')
    monkeypatch.setenv("HWNAS_DEVICES", str(folder))
    device_mod._scan.cache_clear()
    case = C("user-device", "", "board.toml", "threads = 0 must be >= 1")
    code, _, err, elapsed = _run(["search", "--device", "board", "--out", str(tmp_path / "r"), "-q"], capsys)
    _assert_refused(code, err, elapsed, case)
    # The listing lists the other devices and names the bad file in one warning line (issue 24 item 2.6).
    code, out, err, _ = _run(["devices"], capsys)
    assert code == 0 and "pixel3" in out and "board" not in out.split()
    assert len(err.strip().splitlines()) == 1 and err.startswith("hwnas: warning: not listed: ") and all(n in err for n in case.needles)


# ------------------------------------------------------------------ unwritable folders and unexpected errors
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders; the corpus covers --out under a file"
)
def test_read_only_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for argv in (["search", "--device", "pixel3", "--latency", "5ms", "--out", str(locked / "run"), "-q"],
                     ["export", "--arch", "6111", "--out", str(locked / "m.onnx")]):  # fmt: skip
            code, _, err, elapsed = _run(argv, capsys)
            _assert_refused(code, err, elapsed, C("read-only", "", "cannot write", "--out"), limit_s=5.0)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        (RuntimeError("planted\nsecond line"), ("internal error: RuntimeError: planted second line", "HWNAS_DEBUG=1")),
        (MemoryError(), ("out of memory",)),
    ],
    ids=["bug", "memory"],
)
def test_an_unexpected_error_is_one_line_exit_1(
    error: BaseException, needles: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hwnas.cli

    def broken(args: Any) -> int:
        raise error

    monkeypatch.setattr(hwnas.cli, "cmd_devices", broken)
    monkeypatch.delenv("HWNAS_DEBUG", raising=False)
    code, _, err, _ = _run(["devices"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(n in err for n in needles), err
    if isinstance(error, RuntimeError):
        monkeypatch.setenv("HWNAS_DEBUG", "1")  # developers get the traceback back
        with pytest.raises(RuntimeError, match="planted"):
            main(["devices"])


# ------------------------------------------------------------------ nothing already computed is lost
def test_export_failure_after_a_search_keeps_the_study_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hwnas.export

    def failing_export(*args: Any, **kwargs: Any) -> Any:
        raise HwnasError("exported model failed onnx.checker: planted failure")

    monkeypatch.setattr(hwnas.export, "export_verified", failing_export)
    # The failure is planted in this process: the export worker's child would not see it.
    monkeypatch.setenv("HWNAS_EXPORT_WORKER", "0")
    run = tmp_path / "run"
    argv = ["search", "--device", "pixel3", "--latency", "20ms", "--trials", "2", "--strategy", "random", "--out", str(run), "-q"]
    code, _, err, elapsed = _run(argv, capsys)
    _assert_refused(code, err, elapsed, C("export-fails", "", "planted failure"))
    report = json.loads((run / "report.json").read_text())
    assert report["trials"]["complete"] == 2 and report["best"] is not None and (run / "study.journal").stat().st_size > 0
    monkeypatch.undo()
    assert main(["report", str(run), "--no-plots", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 2


def test_interrupted_search_keeps_its_trials_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwnas.search.pipeline import TrialPipeline

    real = TrialPipeline.charge
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second trial
        return real(*args, **kwargs)

    monkeypatch.setattr(TrialPipeline, "charge", interrupted)
    run = tmp_path / "run"
    argv = ["search", "--device", "pixel3", "--latency", "20ms", "--trials", "3", "--strategy", "random", "-q", "--no-export"]
    argv += ["--out", str(run)]
    code, _, err, _ = _run(argv, capsys)
    assert code == 130 and "Traceback" not in err and "rerun the same command to resume" in err
    from hwnas.report import open_run_study

    done = [t for t in open_run_study(run)[1].get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(done) >= 1  # the trial finished before the interrupt is in the study
    monkeypatch.undo()
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trials"]["complete"] == 3


# ------------------------------------------------------------------ real processes
SUBPROCESS = [
    C("latency-list", "search --latency 20ms,30ms", "one budget per --latency"),
    C("device-typo", "search --device pixle3", "did you mean 'pixel3'"),
    C("toml-syntax", "search --device {d}/dev/syntax.toml", "not valid TOML"),
    C("table-truncated", "search --table {d}/tables/truncated.json", "not JSON"),
    C("seed-negative", "search --seed -1", "--seed"),
    C("export-arch-garbage", "export --arch garbage --out {out}.onnx", "'garbage'"),
    C("infeasible", "search --device pixel3 --latency 1us", "raise --latency to at least", code=3, writes_nothing=False),
]


@pytest.mark.parametrize("case", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_real_process_no_traceback(case: Case, files: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas", *_argv(case, files, out)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    elapsed = time.perf_counter() - t0
    assert proc.stdout == ""
    _assert_refused(proc.returncode, proc.stderr, elapsed, case, limit_s=60.0)  # interpreter and torch start-up included
    assert not (tmp_path / "hwnas-runs").exists()
