"""Run a small latency-constrained search from Python and print its result.

NB201 on CIFAR-10, latency looked up in the Pixel 3 table (HW-NAS-Bench), accuracy from the
benchmark table, 50 TPE trials under 5 ms. The run folder (study journal, config.json,
report.json, front.csv, best.onnx) goes to a temp dir that is removed at the end; pass a
folder as the first argument to keep it (running again with the same folder resumes).

    python examples/search_api.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile

from hwnas.search import Search, SearchConfig


def main(out: str) -> None:
    config = SearchConfig(space="nb201", device="pixel3", latency_ms=5.0, trials=50, strategy="tpe", out=out)
    report = Search(config, log=print).run()

    best = report["best"]
    print()
    print(f"best arch   {best['arch']}")
    print(f"accuracy    {best['accuracy']:.2f} % ({best['accuracy_source']})")
    print(f"latency     {best['latency_ms']:.3f} ms ({best['latency_source']})")
    t = report["trials"]
    print(f"trials      {t['complete']} complete, {t['feasible']} feasible, {t['reused']} reused; {report['wall_time_s']} s")
    print(f"pareto front ({len(report['front'])} points, fastest first):")
    for p in report["front"]:
        print(f"  trial {p['trial']:3d}  {p['accuracy']:6.2f} %  {p['latency_ms']:7.3f} ms  {p['arch']}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="hwnas-search-") as tmp:
            main(tmp)
