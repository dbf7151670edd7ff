"""The export worker (hwnas/search/export_worker.py): torch imported on a second core during the
trials, the same file as an export in this process, and this process's export whenever it fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from hwnas.cli import main
from hwnas.errors import UsageError
from hwnas.search import export_worker

ARGV = ["search", "--device", "pixel3", "--latency", "5ms", "--trials", "12", "-q"]


def _job(tmp_path: Path, name: str = "m.onnx") -> dict:
    from hwnas.device import get_device
    from hwnas.spaces import get_space

    space = get_space("nb201")
    arch = space.from_string("|nor_conv_1x1~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_1x1~2|")
    return {"space": space, "arch": arch, "path": tmp_path / name, "device": get_device("pixel3"), "metadata": {"trial": 3}, "seed": 0}


def test_a_table_device_search_exports_in_the_worker_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    used: list[bool] = []
    real = export_worker.ExportWorker.export

    def spy(self, **kwargs):  # type: ignore[no-untyped-def]
        got = real(self, **kwargs)
        used.append(got is not None)
        return got

    monkeypatch.setattr(export_worker, "usable_cpus", lambda: 2)  # as on CI's 2 cores, whatever this machine has
    monkeypatch.setattr(export_worker.ExportWorker, "export", spy)
    assert main([*ARGV, "--out", str(tmp_path / "worker")]) == 0
    assert used == [True]  # the worker did the export
    monkeypatch.setenv("HWNAS_EXPORT_WORKER", "0")
    assert main([*ARGV, "--out", str(tmp_path / "here")]) == 0
    assert used == [True]  # turned off: no worker
    assert (tmp_path / "worker" / "best.onnx").read_bytes() == (tmp_path / "here" / "best.onnx").read_bytes()
    a, b = (json.loads((tmp_path / d / "report.json").read_text())["export"] for d in ("worker", "here"))
    assert {k: v for k, v in a.items() if k != "path"} == {k: v for k, v in b.items() if k != "path"}
    capsys.readouterr()


def test_a_dead_worker_leaves_the_export_to_this_process(tmp_path: Path) -> None:
    worker = export_worker.ExportWorker()
    worker._proc.kill()
    worker._proc.wait()
    assert worker.export(**_job(tmp_path)) is None  # the caller then exports itself
    assert not (tmp_path / "m.onnx").exists()


def test_the_exports_own_error_comes_back_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").mkdir()  # a folder where the file should go
    worker = export_worker.ExportWorker()
    with pytest.raises(UsageError, match="it is a folder; give a file name"):
        worker.export(**_job(tmp_path))
    assert worker._proc.poll() is not None  # one job, then the child is gone


def test_the_worker_exports_what_this_process_would(tmp_path: Path) -> None:
    from hwnas.export import export_verified

    worker = export_worker.ExportWorker()
    there = worker.export(**_job(tmp_path, "there.onnx"))
    here = export_verified(**_job(tmp_path, "here.onnx"))
    assert there is not None and there.parity_max_abs_diff == here.parity_max_abs_diff
    assert (tmp_path / "there.onnx").read_bytes() == (tmp_path / "here.onnx").read_bytes()


def test_only_runs_that_export_measure_nothing_and_have_two_cores_want_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert export_worker.wanted(export=True, measures=False, cpus=2)
    assert not export_worker.wanted(export=True, measures=True, cpus=2)  # a live device: the child would load its core
    assert not export_worker.wanted(export=False, measures=False, cpus=2)
    assert not export_worker.wanted(export=True, measures=False, cpus=1)
    monkeypatch.setenv("HWNAS_EXPORT_WORKER", "0")
    assert not export_worker.wanted(export=True, measures=False, cpus=2)


def test_ctrl_c_to_the_whole_group_stops_the_worker_quietly(tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches the worker too: the parent says its one line, the child nothing.
    import os
    import signal
    import subprocess
    import sys
    import time

    def own_group() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setpgrp()

    cmd = [sys.executable, "-m", "hwnas", "search", "--device", "pixel3", "--latency", "5ms", "--trials", "5000"]
    env = {**os.environ, "HWNAS_EXPORT_WORKER": "1"}
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "r")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=own_group, env=env
    )
    assert proc.stderr is not None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and "[  20/5000" not in proc.stderr.readline():
        pass
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-2000:]
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest[-2000:]
    assert rest.strip().splitlines()[-1].startswith("hwnas: interrupted; completed trials are kept")
    left = True
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:  # nothing of the group is left: the worker is gone too
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
        except ProcessLookupError:
            left = False
    assert not left, subprocess.run(["ps", "-o", "pid,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout


def test_an_unguarded_script_is_not_run_again_by_the_worker(tmp_path: Path) -> None:
    # A user's script that calls Search(...).run() at its top level, with no __main__ guard: a
    # multiprocessing spawn would re-run it in the child (a second search); the worker must not.
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    marker = tmp_path / "runs.txt"
    script.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'a').write(str(os.getpid()) + chr(10))\n"
        "from hwnas.search import Search, SearchConfig\n"
        f"Search(SearchConfig(device='pixel3', latency_ms=5.0, trials=8, out={str(tmp_path / 'r')!r})).run()\n"
    )
    env = {**__import__("os").environ, "HWNAS_EXPORT_WORKER": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(marker.read_text().split()) == 1  # the script ran once
    assert (tmp_path / "r" / "best.onnx").exists()
