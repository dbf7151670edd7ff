"""Measuring through the device agent: the figures of issue 13, in one run on this machine.

Agents run here as subprocesses on 127.0.0.1 (``python -m hwnas_agent``), so "remote" and
"local" time the same CPU and any gap is the agent's own cost.

1. **Remote over local latency.** ``--models`` random NB201 networks, exported once; each is
   measured locally (``measure_onnx``) and through one agent, interleaved, the order
   alternating; the figure is the median over models of remote / local median latency
   (limit 1.05).
2. **Throughput with 1 and with 2 agents.** Two search workers (``hwnas search`` processes on one
   journal study, random strategy, live latency through the farm) run ``--trials`` trials with
   a farm of one agent, then with a farm of two; the figure is trials per second (completed
   trials over the window from the first trial's start to the last one's end) with 2 over with 1
   (limit 1.7). On a real edge device measuring dominates a trial, which is what a farm
   parallelises, so each measurement here takes as long as a default measurement (20 warm-up
   and 100 timed runs) of the median NB201 network on a Raspberry Pi 4 (25.7 ms in the shipped
   HW-NAS-Bench table, so about 3.1 s): ``--repeats`` defaults to 120 x 25.7 ms over this CPU's
   median NB201 latency. Here the agents also share the search machine's 2 cores with the
   workers, whose builds and exports (about 0.25 s of CPU a trial, on one torch thread) slow
   them: the most 2 agents can reach here is about 2A / (A + W) for a measurement of A seconds
   and W seconds of worker CPU.
3. **A lookup table built through an agent.** ``hwnas profile --device <farm> --space nb201
   --check 50``: the share of held-out networks within +-10 % and Kendall tau (limits 95 %, 0.9).

    python benchmarks/remote.py            # about 10 minutes on 2 cores
    python benchmarks/remote.py --only 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "remote"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_agent(token_file: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwnas_agent", "--token-file", str(token_file), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" on ", 1)[1].split()[0]
    return proc, url


def device_file(folder: Path, name: str, urls: list[str], token_file: Path, repeats: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\nkind = "remote"\nurls = {json.dumps(urls)}\ntoken_file = "{token_file}"\nrepeats = {repeats}\n'
    )


def remote_vs_local(n: int, url: str, token: str) -> dict[str, Any]:
    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.cost.measure import measure_onnx
    from hwnas.cost.remote import AgentClient
    from hwnas.spaces import get_space

    space = get_space("nb201")
    rng = np.random.default_rng(0)
    models = [to_onnx_bytes(space.build(a), (3, 32, 32), exporter="torchscript") for a in (space.sample(rng) for _ in range(n))]
    client = AgentClient(url, token=token, token_file="(benchmark)")
    settings = {"input_shape": [3, 32, 32], "batch": 1, "warmup": 20, "repeats": 100, "threads": 1, "provider": "CPUExecutionProvider"}
    ratios, local, remote = [], [], []
    for i, data in enumerate(models):
        pair = ["local", "remote"] if i % 2 == 0 else ["remote", "local"]
        got = {}
        for side in pair:
            if side == "local":
                got[side] = measure_onnx(data, (3, 32, 32), warmup=20, repeats=100).median_ms
            else:
                got[side] = float(client.measure(data, settings)["measurement"]["median_ms"])
        local.append(got["local"])
        remote.append(got["remote"])
        ratios.append(got["remote"] / got["local"])
    med = statistics.median(ratios)
    q1, q3 = np.percentile(ratios, [25, 75])
    print(
        f"[1] remote / local median latency over {n} nb201 networks: median {med:.3f} (IQR {q1:.3f}-{q3:.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}); local medians {statistics.median(local):.3f} ms, "
        f"remote {statistics.median(remote):.3f} ms   [limit <= 1.05: {'met' if med <= 1.05 else 'NOT met'}]",
        flush=True,
    )
    return {"ratios": ratios, "median_ratio": med}


#: Runs of a default measurement (20 warm-up + 100 timed).
DEFAULT_RUNS = 120


def pi4_repeats(networks: int = 20) -> int:
    """Timed runs that make a measurement of the median NB201 network here take as long as a
    default one on a Raspberry Pi 4 (its median is read from the shipped table)."""
    from hwnas.benchdata import nb201_latency
    from hwnas.cost._onnx import to_onnx_bytes
    from hwnas.cost.measure import measure_onnx
    from hwnas.spaces import get_space

    pi4 = float(np.median(nb201_latency("raspi4")))
    space = get_space("nb201")
    rng = np.random.default_rng(1)
    here = statistics.median(
        measure_onnx(to_onnx_bytes(space.build(a), (3, 32, 32), exporter="torchscript"), (3, 32, 32), warmup=10, repeats=50).median_ms
        for a in (space.sample(rng) for _ in range(networks))
    )
    repeats = int(round(DEFAULT_RUNS * pi4 / here, -2))
    print(
        f"    a default measurement of the median NB201 network on a Raspberry Pi 4 takes {DEFAULT_RUNS} x {pi4:.1f} ms = "
        f"{DEFAULT_RUNS * pi4 / 1e3:.1f} s; the median here is {here:.3f} ms, so figure 2 uses {repeats} repeats",
        flush=True,
    )
    return repeats


def throughput(trials: int, devices: Path, work: Path, names: tuple[str, str], workers: int = 2) -> dict[str, Any]:
    env = {**os.environ, "HWNAS_DEVICES": str(devices)}
    out: dict[str, Any] = {}
    for name in names:
        run = work / f"tp-{name}"
        cmd = [sys.executable, "-m", "hwnas", "search", "--device", name, "--latency", "100ms", "--strategy", "random"]
        cmd += ["--trials", str(trials), "--no-export", "-q", "--out", str(run)]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"search worker failed: {err.strip()[-500:]}")
        wall = time.perf_counter() - t0
        # Trials per second while the search runs: from the first trial's start to the last one's
        # end (the study's own times), so the workers' start-up (imports, the probe) is not counted.
        import optuna

        from hwnas.report import open_run_study

        done = open_run_study(run)[1].get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        window = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        out[name] = {"seconds": wall, "window_s": window, "trials": len(done), "trials_per_s": len(done) / window}
        print(
            f"    {name}: {workers} workers, {len(done)} trials in a {window:.1f} s window ({wall:.1f} s with start-up) = "
            f"{len(done) / window:.2f} trials/s",
            flush=True,
        )
    ratio = out[names[1]]["trials_per_s"] / out[names[0]]["trials_per_s"]
    print(f"[2] throughput with 2 agents over 1: {ratio:.2f}x   [limit >= 1.7: {'met' if ratio >= 1.7 else 'NOT met'}]", flush=True)
    out["ratio"] = ratio
    return out


def table_through_agent(devices: Path, name: str, work: Path, check: int) -> dict[str, Any]:
    env = {**os.environ, "HWNAS_DEVICES": str(devices)}
    table = work / f"{name}-nb201.json"
    cmd = [sys.executable, "-m", "hwnas", "profile", "--device", name, "--space", "nb201", "--check", str(check)]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(table), "--json"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"profile failed: {proc.stderr.strip()[-800:]}")
    summary = json.loads(proc.stdout)
    c = summary["check"]
    ok = c["within_10pct"] >= 0.95 and c["kendall_tau"] >= 0.9
    print(
        f"[3] nb201 table built through an agent in {time.perf_counter() - t0:.0f} s: check on {c['n']} networks "
        f"{100 * c['within_10pct']:.1f} % within +-10 %, {100 * c['within_5pct']:.1f} % within +-5 %, MAPE {c['mape_pct']:.2f} %, "
        f"Kendall tau {c['kendall_tau']:.3f}   [limit >= 95 % and tau >= 0.9: {'met' if ok else 'NOT met'}]",
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", type=int, nargs="+", choices=(1, 2, 3))
    p.add_argument("--models", type=int, default=30)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument(
        "--repeats",
        type=int,
        help="timed runs per measurement in figure 2's device files (default: as long a measurement as a Raspberry Pi 4 takes)",
    )
    p.add_argument("--workers", type=int, default=2, help="search workers in figure 2 (default 2)")
    p.add_argument("--check", type=int, default=50)
    args = p.parse_args(argv)
    only = set(args.only or (1, 2, 3))
    print(f"hwnas remote benchmark; {_load()}; {os.cpu_count()} cpus", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-remote-") as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(32)
        token_file = work / "token"
        token_file.write_text(token)
        agents = [start_agent(token_file, work / f"agent{i}.log") for i in range(2)]
        try:
            urls = [u for _, u in agents]
            devices = work / "devices"
            repeats = args.repeats or (pi4_repeats() if 2 in only else 100)
            device_file(devices, "farm1", urls[:1], token_file, repeats)
            device_file(devices, "farm2", urls, token_file, repeats)
            device_file(devices, "agent", urls[:1], token_file, 100)
            if 1 in only:
                results["remote_vs_local"] = remote_vs_local(args.models, urls[0], token)
            if 2 in only:
                results["throughput"] = throughput(args.trials, devices, work, ("farm1", "farm2"), args.workers)
            if 3 in only:
                results["table"] = table_through_agent(devices, "agent", work, args.check)
        finally:
            for proc, _ in agents:
                proc.terminate()
                proc.wait(timeout=10)
    print(f"done; {_load()}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
