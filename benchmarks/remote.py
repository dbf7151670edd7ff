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
   (limit 1.7). Each measurement takes ``--repeats`` runs (default 1000, about 1.5 s for an NB201
   network here): on a real edge device measuring dominates a trial, which is what a farm
   parallelises; here the agents share the search machine's 2 cores with the workers.
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


def throughput(trials: int, devices: Path, work: Path, names: tuple[str, str]) -> dict[str, Any]:
    env = {**os.environ, "HWNAS_DEVICES": str(devices)}
    out: dict[str, Any] = {}
    for name in names:
        run = work / f"tp-{name}"
        cmd = [sys.executable, "-m", "hwnas", "search", "--device", name, "--latency", "100ms", "--strategy", "random"]
        cmd += ["--trials", str(trials), "--no-export", "-q", "--out", str(run)]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
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
            f"    {name}: 2 workers, {len(done)} trials in a {window:.1f} s window ({wall:.1f} s with start-up) = "
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
        default=1000,
        help="timed runs per measurement in figure 2's device files (default 1000: about 1.5 s a network, as an edge device takes)",
    )
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
            device_file(devices, "farm1", urls[:1], token_file, args.repeats)
            device_file(devices, "farm2", urls, token_file, args.repeats)
            device_file(devices, "agent", urls[:1], token_file, 100)
            if 1 in only:
                results["remote_vs_local"] = remote_vs_local(args.models, urls[0], token)
            if 2 in only:
                results["throughput"] = throughput(args.trials, devices, work, ("farm1", "farm2"))
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
