#!/usr/bin/env python
"""How the order of a local search's steps changes what it finds: a replay on NAS-Bench-201.

The local search (``hwnas/strategies/local.py``) climbs from the best of 10 random cells through
untried one-change neighbours, moving to the first better one, and restarts from a random cell at
a local optimum. Which neighbour it tries first is the only choice it makes. This script replays
that climb directly on the benchmark table (no Optuna, no budget: thousands of searches a minute)
with four orders of the untried neighbours:

* ``random``: uniformly at random (``screen=False``);
* ``onehot-values``: a ridge fit of the accuracies on the one-hot encoding (the plain fit);
* ``onehot-ranks``: a ridge fit of their ranks on the one-hot encoding;
* ``features-ranks``: a ridge fit of their ranks on ``space.features`` (one-hot plus the cells'
  paths): the ranked fit that ``screen=True`` and ``"auto"`` away from a budget use.

For each it prints the mean CIFAR-10 test accuracy of the best-by-validation cell after
``--queries`` evaluations and the share of searches that end at the best cell. The default 92
queries is the local search's share of the default strategy's first 100 without a budget.
Networks equivalent to one evaluated (isomorphic cells) are skipped, as the sampler does.

    python benchmarks/climb_order.py --searches 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hwnas.benchdata import nb201_table
from hwnas.spaces import get_space
from hwnas.strategies._surrogate import RidgePredictor, ranks

ORDERS = ("random", "onehot-values", "onehot-ranks", "features-ranks")


class Table:
    """Every cell's neighbours, equivalence class, encodings and accuracies, computed once."""

    def __init__(self) -> None:
        space = get_space("nb201")
        table = nb201_table()
        self.valid = table.metric("cifar10-valid/valid")
        self.test = table.metric("cifar10/test")
        n = len(self.valid)
        archs = [space.from_index(i) for i in range(n)]
        self.neighbours = np.array([[space.index(c) for c in space.neighbours(a)] for a in archs])
        classes: dict[str, int] = {}
        self.eq = np.array([classes.setdefault(space.equivalence_key(a), len(classes)) for a in archs])
        self.onehot = np.array([space.encode(a) for a in archs], dtype=float)
        self.features = np.array([space.features(a) for a in archs], dtype=float)
        self.best = int(np.argmax(self.valid))


def search(t: Table, order: str, seed: int, queries: int, n_init: int = 10) -> int:
    """One local search; returns the index of its best-by-validation cell."""
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    trace: list[int] = []

    def evaluate(i: int) -> None:
        seen.add(int(t.eq[i]))
        trace.append(i)

    def random_untried() -> int:
        while True:
            i = int(rng.integers(len(t.valid)))
            if t.eq[i] not in seen:
                return i

    while len(trace) < n_init:
        evaluate(random_untried())
    members = list(trace)
    while len(trace) < queries:
        best = max(members, key=lambda i: t.valid[i])
        known = {int(t.eq[i]): i for i in trace}
        while True:  # move on to a better neighbour already evaluated, as the sampler does
            better = max((known[int(t.eq[j])] for j in t.neighbours[best] if t.eq[j] in known), key=lambda i: t.valid[i], default=None)
            if better is None or t.valid[better] <= t.valid[best]:
                break
            best = better
        fresh: list[int] = []
        classes: set[int] = set()
        for j in t.neighbours[best]:
            if t.eq[j] not in seen and t.eq[j] not in classes:
                classes.add(int(t.eq[j]))
                fresh.append(int(j))
        if not fresh:  # a local optimum: restart
            i = random_untried()
            evaluate(i)
            members = [i]
            continue
        if order == "random":
            pick = fresh[int(rng.integers(len(fresh)))]
        else:
            x = t.features if order == "features-ranks" else t.onehot
            y = t.valid[trace].astype(float)
            if order.endswith("ranks"):
                y = ranks(y)
            score = RidgePredictor().fit(x[trace], y).predict(x[fresh])
            pick = fresh[int(np.argmax(score))]
        evaluate(pick)
        members.append(pick)
    return max(trace, key=lambda i: t.valid[i])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--searches", type=int, default=2000)
    p.add_argument("--queries", type=int, default=92)
    p.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    args = p.parse_args()
    t0 = time.perf_counter()
    t = Table()
    took = time.perf_counter() - t0
    print(f"NAS-Bench-201 table read in {took:.1f} s; {args.searches} searches of {args.queries} queries each, no budget")
    for order in args.orders:
        t1 = time.perf_counter()
        found = np.array([search(t, order, seed, args.queries) for seed in range(args.searches)])
        test = t.test[found]
        print(
            f"{order:>15}: mean test accuracy {test.mean():.3f} % (standard error {test.std() / np.sqrt(len(test)):.3f}), "
            f"ends at the best cell {np.mean(found == t.best):.3f}; {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
