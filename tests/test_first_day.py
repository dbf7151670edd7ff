"""Issue 14's rough edges of a first day: each test fails on the main before it."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hwnas.cli import main
from hwnas.search import Search, SearchConfig
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp: Path, **kw: Any) -> SearchConfig:
    base: dict[str, Any] = dict(space="nb201", device="pixel3", latency_ms=5.0, trials=20, strategy="random", seed=0, out=str(tmp / "run"))
    base.update(kw)
    return SearchConfig(**base)


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


# 1. a count budget needs its unit -------------------------------------------------------
def test_a_flops_budget_without_unit_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _err(capsys, ["search", "--device", "pixel3", "--latency", "5ms", "--flops", "10", "--out", str(tmp_path / "r")])
    assert "invalid FLOPs budget '10' (a unit is required: 10M is 10 million" in err
    assert not (tmp_path / "r").exists()


# 2. hwnas report --out NEWDIR, and without matplotlib ------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("small")
    Search(_config(tmp, trials=12, export=False)).run()
    return tmp / "run"


def test_report_into_a_new_folder_creates_it(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "new" / "plots"
    assert main(["report", str(small_run), "--out", str(out)]) == 0
    assert (out / "front.png").stat().st_size > 0 and (out / "hypervolume.png").stat().st_size > 0
    assert f"wrote {out / 'front.png'}" in capsys.readouterr().out


def test_report_without_matplotlib_prints_the_numbers_and_how_to_get_plots(
    small_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["report", str(small_run)]) == 0
    out = capsys.readouterr().out
    assert " trials, " in out and "on the front, hypervolume" in out and "  trial " in out
    assert "plots not drawn: matplotlib is not installed; pip install matplotlib" in out


# 4. suggestions name the command's own flags; gpu -> cuda ---------------------------------
@pytest.mark.parametrize(
    ("argv", "want", "never"),
    [
        (["search", "--trail", "3"], "(did you mean '--trials'?)", "'--trial'?"),
        (["search", "--resolutoin", "64"], "", "'--resolution'"),
        (["export", "--trail", "3"], "(did you mean '--trial'?)", "--trials"),
        (["profile", "--resolutoin", "64"], "(did you mean '--resolution'?)", ""),
    ],
)
def test_did_you_mean_names_a_flag_of_the_same_command(capsys: pytest.CaptureFixture[str], argv: list[str], want: str, never: str) -> None:
    err = _err(capsys, argv)
    assert want in err and (not never or never not in err)


def test_device_gpu_suggests_cuda_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    err = _err(capsys, ["search", "--device", "gpu", "--latency", "5ms"])
    assert "unknown device 'gpu' (did you mean 'cuda'? hwnas calls this machine's NVIDIA GPU 'cuda'" in err


# 5. a run folder tells the truth about its commands ---------------------------------------
def test_strategies_of_several_commands_are_recorded_per_trial(tmp_path: Path) -> None:
    Search(_config(tmp_path, trials=8, strategy="random", export=False)).run()
    report = Search(_config(tmp_path, trials=14, strategy="evolution", export=False)).run()
    assert report["strategy"] == "evolution" and report["strategies"] == {"random": 8, "evolution": 6}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy"] == "evolution" and config["strategies"] == ["random", "evolution"]


def test_a_no_export_rerun_never_leaves_a_best_onnx_the_report_does_not_describe(tmp_path: Path) -> None:
    first = Search(_config(tmp_path, trials=4, export=True)).run()
    onnx = tmp_path / "run" / "best.onnx"
    assert onnx.exists() and first["export"]["path"] == str(onnx)
    # Same best: the file stays and the report still describes it.
    same = Search(_config(tmp_path, trials=4, export=False)).run()
    assert onnx.exists() and same["export"]["path"] == str(onnx) and same["export"]["exported_by"]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["export"]["path"] == str(onnx)
    # A later best (seeded: 60 trials find a better network than 4 did): the old file goes, with a line saying so.
    lines: list[str] = []
    later = Search(_config(tmp_path, trials=60, export=False), log=lines.append).run()
    assert later["best"]["trial"] != first["best"]["trial"]
    assert not onnx.exists() and later["export"] is None
    assert any(f"removed {onnx} (trial {first['best']['trial']})" in line and "rerun without --no-export" in line for line in lines)


# 6. evolution never spends a trial over a cheap budget -------------------------------------
def test_evolution_spends_no_trial_over_a_table_budget(tmp_path: Path) -> None:
    report = Search(_config(tmp_path, trials=200, strategy="evolution", export=False)).run()
    t = report["trials"]
    assert t["complete"] == 200 and t["infeasible"] == 0, t


# 7. export recognises the space from the string --------------------------------------------
def test_export_an_mbconv_string_without_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mb = get_space("mbconv")
    text = mb.to_string(mb.smallest())
    out = tmp_path / "m.onnx"
    assert main(["export", "--arch", text, "--out", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["space"] == "mbconv" and got["arch"] == text and out.exists()
    err = _err(capsys, ["export", "--arch", "not-an-arch", "--out", str(out)])
    assert "--arch 'not-an-arch' is no architecture of any space (mbconv, nb201)" in err or "no architecture of any space" in err


# 8. untrained weights are said in the summary -----------------------------------------------
def test_the_summary_says_the_exported_weights_are_untrained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--device", "pixel3", "--latency", "5ms", "--trials", "4", "--strategy", "random", "--out", str(tmp_path / "r"), "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "exported" in x]
    assert "(untrained weights: train it before deployment)" in line


# 9. networks whose output ignores the input ---------------------------------------------------
def test_nb201_knows_a_network_whose_output_ignores_the_input() -> None:
    nb = get_space("nb201")
    assert nb.degenerate(nb.from_string("|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"))
    assert nb.degenerate(nb.from_string("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")) is None
    assert nb.degenerate(nb.from_string("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")) is None
    assert nb.degenerate(nb.smallest()) is None
    # Chance accuracy in the benchmark for every degenerate cell: the check agrees with the data.
    from hwnas.benchdata import nb201_table

    table = nb201_table()
    acc = table.metric("cifar10-valid/valid")
    flagged = [i for i in range(table.n) if nb.degenerate(nb.from_index(i))]
    assert flagged and all(acc[i] < 11 for i in flagged)
    real = [i for i in range(table.n) if i not in set(flagged)]
    assert sum(acc[i] < 11 for i in real) < 0.05 * len(real)


def test_degenerate_networks_are_marked_and_kept_off_the_front(tmp_path: Path) -> None:
    search = Search(_config(tmp_path, trials=40, latency_ms=50.0, export=False))
    nb = search.space
    search.out.mkdir(parents=True)
    study = search._study()
    for text in ("|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|none~0|none~1|none~2|", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"):
        arch = nb.from_string(text)
        study.enqueue_trial({d.name: arch[d.name] for d in nb.dimensions()})
    report = search.run()
    from hwnas.search.results import records

    recs = records(search._study())
    marked = [r for r in recs if r.degenerate]
    assert len(marked) >= 2 and all("does not depend on the input" in r.attrs["degenerate"] for r in marked)
    assert {m["trial"] for m in report["front"]}.isdisjoint({r.number for r in marked})
    assert report["front_degenerate_left_out"] >= 1 and report["trials"]["degenerate"] == len(marked)
    assert report["trials"]["min_latency_ms"] > min(r.cost("latency_ms") for r in marked)


def test_the_probe_is_no_degenerate_network(tmp_path: Path) -> None:
    lines: list[str] = []
    Search(_config(tmp_path, trials=1, latency_ms=50.0, export=False), log=lines.append).run()
    (probe,) = [x for x in lines if "fastest probe" in x]
    arch = probe.split("fastest probe ")[1].split(" = ")[0]
    assert get_space("nb201").degenerate(get_space("nb201").from_string(arch)) is None


# 10. progress ----------------------------------------------------------------------------------
def test_trial_lines_carry_elapsed_eta_and_the_network(tmp_path: Path) -> None:
    lines: list[str] = []
    Search(_config(tmp_path, trials=5, export=False), log=lines.append).run()
    trial_lines = [x for x in lines if "] trial" in x]
    assert len(trial_lines) == 5
    import re

    # The first trial's interval holds the start-up, which the ETA leaves out: no estimate yet ("?");
    # every later line has one.
    for i, x in enumerate(trial_lines):
        eta = r"(\?|\d+:\d\d)" if i == 0 else r"(\d+:\d\d)"
        m = re.match(rf"\[\s*(\d+)/5 (\d+:\d\d) eta {eta}\] trial\s+\d+ ([-s13p]\+[-s13p]{{2}}\+[-s13p]{{3}}): ", x)
        assert m, x


def test_the_python_api_reports_progress_through_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hwnas"):
        Search(_config(tmp_path, trials=3, latency_ms=50.0, export=False)).run()
    msgs = [r.getMessage() for r in caplog.records if r.name == "hwnas.search"]
    assert any("fastest probe" in m for m in msgs) and sum("] trial" in m for m in msgs) == 3


def test_mbconv_short_form() -> None:
    mb = get_space("mbconv")
    assert mb.short(mb.smallest()).startswith(f"r{mb.smallest()['resolution']} w")


# 12. user-built tables are not committed by accident ---------------------------------------------
def test_user_built_latency_tables_are_ignored_by_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    got = subprocess.run(["git", "check-ignore", "latency_tables/cpu-nb201.json"], cwd=ROOT, capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout.strip() == "latency_tables/cpu-nb201.json"
    kept = subprocess.run(["git", "check-ignore", "latency_tables/README.md"], cwd=ROOT, capture_output=True, text=True)
    assert kept.returncode == 1


# 3. Ctrl-C is one line ---------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_keeps_the_trials(tmp_path: Path) -> None:
    import signal
    import sys
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "hwnas", "search", "--device", "cpu", "--latency", "50ms", "--trials", "500", "--out", str(out)]

    # SIGINT as a terminal delivers it, whatever this process inherited: a shell without job control
    # starts a background job (`cmd &`, as CI scripts may) with SIGINT ignored, and children keep it.
    def deliverable() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=deliverable)
    assert proc.stderr is not None
    seen = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:  # until a few trials are done
        line = proc.stderr.readline()
        seen.append(line)
        if "[   3/500" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    tail = [x for x in rest.splitlines() if x.strip()]
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest[-3000:]
    assert tail[-1].startswith("hwnas: interrupted; completed trials are kept") and len(tail) <= 3, tail
    resume = [x if x != "500" else "4" for x in cmd]
    again = subprocess.run([*resume, "--no-export", "-q", "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["trials"]["complete"] >= 3


def test_an_error_raised_while_handling_ctrl_c_is_still_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C inside Optuna's bookkeeping surfaced as "internal error: ValueError: Cannot tell a
    COMPLETE trial": the interrupt is what the user did, and what they are told."""
    import hwnas.cli as cli

    def handler(args: Any) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("Cannot tell a COMPLETE trial.") from None

    monkeypatch.setattr(cli, "cmd_spaces", handler)
    monkeypatch.delenv("HWNAS_DEBUG", raising=False)
    assert cli.main(["spaces"]) == 130
    assert capsys.readouterr().err.strip() == cli.INTERRUPTED


# 11. what an application needs in best.onnx ----------------------------------------------------
def test_best_onnx_carries_the_deployment_metadata(tmp_path: Path) -> None:
    import onnx

    report = Search(_config(tmp_path, trials=3, latency_ms=50.0, export=True)).run()
    props = {p.key: p.value for p in onnx.load(report["export"]["path"]).metadata_props}
    assert props["hwnas.input_layout"].startswith("NCHW") and props["hwnas.input_shape"] == "3x32x32"
    assert props["hwnas.num_classes"] == "10" and json.loads(props["hwnas.labels"])[:2] == ["airplane", "automobile"]
    norm = json.loads(props["hwnas.normalisation"].split(" (")[0])
    assert norm["mean"] == pytest.approx([0.491373, 0.482353, 0.446667], abs=1e-6) and len(norm["std"]) == 3
    assert props["hwnas.input_range"].startswith("[0, 1]")


def test_deployment_metadata_of_a_network_trained_here_names_its_classes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hwnas.search.results import deployment

    search = Search(_config(tmp_path, trials=1, latency_ms=50.0))
    data = SimpleNamespace(num_classes=3, labels=["cat", "dog", "fox"], name="folder:pets")
    search.plan.evaluator = SimpleNamespace(data=data)  # type: ignore[assignment]
    d = deployment(search.plan)
    assert d["input_range"].startswith("[0, 1]") and d["normalisation"].startswith("none")
    assert d["num_classes"] == 3 and json.loads(d["labels"]) == ["cat", "dog", "fox"] and d["data"] == "folder:pets"


def test_profile_says_each_phase_as_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell-structure phase was 101 s of silence: every phase gets a line before its work."""
    import numpy as np

    from hwnas.benchdata import nb201_table as bench
    from hwnas.device import load_device_file
    from hwnas.profile import build_table
    from hwnas.spaces import _nb201_graph as nb201_graph

    fake = np.stack([nb201_graph.op_counts(bench().genotype(i)) * 2 for i in range(bench().n)]).astype(np.int16)
    fake = np.pad(fake, ((0, 0), (0, 2 * len(nb201_graph.NODE_TYPES) - fake.shape[1])))
    lines: list[str] = []

    def features(provider: str, **kw: Any) -> Any:
        lines.append("<structure work>")
        return fake

    monkeypatch.setattr(nb201_graph, "all_cell_features", features)
    path = tmp_path / "fast.toml"
    path.write_text('name = "fast"\nkind = "onnxruntime"\nprovider = "CPUExecutionProvider"\nthreads = 1\nwarmup = 1\nrepeats = 3\n')
    build_table(get_space("nb201"), load_device_file(path), calibrate=6, check=0, seed=1, log=lines.append, force=True)
    work = lines.index("<structure work>")
    assert "cell graph structure" in lines[work - 1] and lines[work - 1].endswith("...")
    assert "cell graph structure" in lines[work + 1] and "done in" in lines[work + 1]
    starts = [i for i, x in enumerate(lines) if x.strip().startswith(("profiling", "exporting", "measuring 7 whole networks"))]
    assert len(starts) == 3 and starts[0] < starts[1] < work < starts[2], lines
