"""Differentiable search: the NB201 supernet, the latency terms, the collapse guard, the loop."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwnas.benchdata import NB201_OPS
from hwnas.darts.latency import AdditiveLatency, fit_additive_latency
from hwnas.darts.nb201_supernet import NB201Supernet
from hwnas.darts.train import LATENCY_TERMS, DartsConfig, derive_picks, latency_loss, repair_to_budget, search, skip_share
from hwnas.errors import UsageError
from hwnas.spaces.nb201 import NB201Space

SKIP, NONE, C1, C3, POOL = (NB201_OPS.index(o) for o in ("skip_connect", "none", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny() -> NB201Supernet:
    torch.manual_seed(0)
    return NB201Supernet(NB201Space(channels=4, cells_per_stage=1), num_classes=3, in_channels=1)


def one_hot(picks: list[int]) -> list[torch.Tensor]:
    return [F.one_hot(torch.tensor(p), 5).float() for p in picks]


def test_supernet_shapes_derive_and_inverse() -> None:
    net = tiny()
    gates = [F.softmax(torch.randn(5), 0) for _ in range(6)]
    assert net(torch.randn(2, 1, 8, 8), gates).shape == (2, 3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        picks = [int(p) for p in rng.integers(5, size=6)]
        arch = net.derive(picks)
        assert net.space.validate(arch) == arch
        assert net.picks_of(arch) == picks
    with pytest.raises(ValueError):
        net(torch.randn(2, 1, 8, 8), gates[:5])


def test_one_hot_supernet_equals_the_derived_network_with_inherited_weights() -> None:
    net = tiny()
    x = torch.randn(4, 1, 8, 8)
    net.train()
    for _ in range(3):  # non-trivial batch-norm statistics
        net(x, [F.softmax(torch.randn(5), 0) for _ in range(6)])
    net.eval()
    for picks in ([C3, C1, SKIP, POOL, NONE, C3], [C1] * 6):
        sub = net.subnet(picks).eval()
        assert torch.allclose(net(x, one_hot(picks)), sub(x), atol=1e-5)


def test_zero_gates_do_not_run() -> None:
    net = tiny()
    calls = {"n": 0}
    for cell in net.cells:
        for edge in getattr(cell, "edges", []):
            edge.ops[C3].register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    net(torch.randn(1, 1, 8, 8), one_hot([C1] * 6))
    assert calls["n"] == 0
    net(torch.randn(1, 1, 8, 8), one_hot([C3] * 6))
    assert calls["n"] == 6 * 3  # six edges in each of the three cells


@pytest.mark.parametrize("term", LATENCY_TERMS)
def test_latency_term_grows_with_latency(term: str) -> None:
    lat = torch.tensor(6.0, requires_grad=True)
    loss = latency_loss(torch.tensor(0.7), lat, 5.0, term, 1.0)
    loss.backward()
    assert lat.grad is not None and float(lat.grad) > 0
    # At the target, mul#log leaves CE unchanged; weight 0 switches every term off (fbnet: a constant factor).
    assert float(latency_loss(torch.tensor(0.7), torch.tensor(5.0), 5.0, "mul#log", 2.0)) == pytest.approx(0.7)
    w0 = latency_loss(torch.tensor(0.7), torch.tensor(9.0), 5.0, term, 0.0)
    assert float(w0) == pytest.approx(0.7 * (0.2 if term == "fbnet" else 1.0))


def test_expected_latency_gradient_pushes_toward_the_faster_choice() -> None:
    model = AdditiveLatency(1.0, [np.array([1.0, 3.0])], "synthetic")
    alpha = torch.zeros(2, requires_grad=True)
    loss = latency_loss(torch.tensor(1.0), model.expected([F.softmax(alpha, 0)]), 2.0, "mul#log", 1.0)
    loss.backward()
    assert alpha.grad is not None and alpha.grad[1] > 0 > alpha.grad[0]  # gradient descent lowers the slow one
    assert float(model.expected([torch.tensor([0.0, 1.0])])) == pytest.approx(model.of_picks([1]))


class FakeLatency:
    """Exactly additive latency: 1 ms + per-edge op costs."""

    kind = "table"
    cost: ClassVar[dict[str, float]] = {"none": 0.0, "skip_connect": 0.01, "avg_pool_3x3": 0.3, "nor_conv_1x1": 0.5, "nor_conv_3x3": 2.0}

    def __init__(self) -> None:
        self.device = type("D", (), {"name": "fake"})()
        self.space = NB201Space()

    def latency(self, arch, model=None):  # type: ignore[no-untyped-def]
        from hwnas.cost.latency import Latency

        return Latency(1.0 + sum(self.cost[op] for op in arch.values()), "table")

    def describe(self):  # type: ignore[no-untyped-def]
        return {"device": "fake", "source": "table"}


def test_additive_fit_recovers_an_additive_device_and_refuses_live_measurement() -> None:
    fit = fit_additive_latency(tiny(), FakeLatency())  # type: ignore[arg-type]
    assert fit.fit["r2"] > 0.9999 and fit.fit["enumerated"]
    assert fit.of_picks([C3] * 6) == pytest.approx(13.0, abs=1e-6)
    from hwnas.cost.latency import MeasuredLatency
    from hwnas.device import get_device

    with pytest.raises(UsageError, match="hwnas profile --device cpu --space nb201"):
        fit_additive_latency(tiny(), MeasuredLatency(get_device("cpu"), NB201Space()))


def test_collapse_guard_caps_parameter_free_choices() -> None:
    net = tiny()
    alphas = []
    for i in range(6):  # skip leads everywhere, by margins shrinking with the edge index; then conv 1x1
        a = torch.zeros(5)
        a[SKIP], a[C1], a[POOL] = 3.0 - 0.1 * i, 1.0, 0.5
        alphas.append(a)
    uncapped = derive_picks(net, alphas, max_share=None)
    assert skip_share(net, uncapped) == 1.0
    capped = derive_picks(net, alphas, max_share=net.max_skip_share)
    assert skip_share(net, capped) == pytest.approx(2 / 6)
    assert capped[:2] == [SKIP, SKIP]  # the widest skip margins keep it
    assert all(p == C1 for p in capped[2:])  # the rest: best parametric choice (alpha 1.0)


def test_budget_repair_meets_the_target_without_breaking_the_cap() -> None:
    net = tiny()
    fake = FakeLatency()
    exact = lambda picks: fake.latency(net.derive(picks)).ms  # noqa: E731
    probs = [[0.1, 0.1, 0.1, 0.6, 0.1]] * 6
    picks, steps = repair_to_budget(net, [C3] * 6, probs, exact, 6.0)
    assert exact(picks) <= 6.0 and steps
    assert skip_share(net, picks) <= net.max_skip_share + 1e-9


@pytest.mark.parametrize(("order", "sampling"), [(1, "softmax"), (2, "softmax"), (1, "gumbel")])
def test_search_loop_runs_and_records_history(order: int, sampling: str) -> None:
    net = tiny()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)

    def split(lo: int, hi: int):  # type: ignore[no-untyped-def]
        return lambda epoch: iter([(x[lo : lo + 16], y[lo : lo + 16]), (x[lo + 16 : hi], y[lo + 16 : hi])])

    latency = fit_additive_latency(net, FakeLatency())  # type: ignore[arg-type]
    before = [p.detach().clone() for p in net.parameters()]
    cfg = DartsConfig(epochs=3, warmup=1, order=order, sampling=sampling, target_ms=5.0, latency_weight=3.0, threads=1)
    result = search(net, split(0, 32), split(32, 64), latency, cfg)
    assert len(result.history) == 3
    assert all(np.isfinite(h.train_loss) for h in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert skip_share(net, result.picks) <= net.max_skip_share + 1e-9
    assert all(abs(sum(p) - 1) < 1e-5 for p in result.probabilities)


@pytest.mark.parametrize(("target_ms", "grows"), [(0.5, True), (1e4, False)])
def test_latency_weight_adapts_toward_the_target(target_ms: float, grows: bool) -> None:
    """Dual ascent: over the target (T below the fastest cell) the weight only grows; far under it
    (huge T) it only decays; with adapt_weight=False it stays where it was set."""
    net = tiny()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    batches = lambda epoch: iter([(x[:16], y[:16]), (x[16:32], y[16:32])])  # noqa: E731
    latency = fit_additive_latency(net, FakeLatency())  # type: ignore[arg-type]
    cfg = DartsConfig(epochs=4, warmup=1, target_ms=target_ms, latency_weight=1.0, threads=1)
    weights = [h.latency_weight for h in search(net, batches, batches, latency, cfg).history]
    assert weights[0] == 1.0  # warm-up: no architecture steps yet
    steps = np.diff(weights[1:] if len(weights) > 2 else weights)
    assert (steps > 0).all() if grows else (steps < 0).all()
    assert (weights[-1] > 1.0) == grows
    fixed = DartsConfig(epochs=3, warmup=1, target_ms=target_ms, latency_weight=1.0, adapt_weight=False, threads=1)
    assert {h.latency_weight for h in search(tiny(), batches, batches, latency, fixed).history} == {1.0}


def test_config_checks() -> None:
    with pytest.raises(UsageError, match="warmup"):
        DartsConfig(epochs=3, warmup=3).check()
    with pytest.raises(UsageError, match="latency-term"):
        DartsConfig(latency_term="mul#lin").check()
    with pytest.raises(UsageError, match="cannot adapt"):
        DartsConfig(latency_weight=0.0).check()
    DartsConfig(latency_weight=0.0, adapt_weight=False).check()


def test_cli_darts_search_records_one_trial_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    argv = ["search", "--strategy", "darts", "--device", "pixel3", "--latency", "5ms", "--epochs", "2", "--warmup", "1", "--force"]
    argv += ["--batch", "256", "--out", str(tmp_path / "run"), "--no-export", "--json"]
    assert main(argv) == 0
    import json

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["trials"]["complete"] == 1
    # After the last epoch line every phase says what it does (issue 24 item 12: two silent minutes).
    lines = captured.err.splitlines()
    last_epoch = max(i for i, line in enumerate(lines) if line.startswith("epoch "))
    after = lines[last_epoch + 1 :]
    expected = [
        "selection (perturbation): scoring each of",
        "selection (perturbation): scored in",
        "networks timed,",
        "derived network: re-estimating its BatchNorm",
        "darts: recording the derived network as a trial",
    ]
    at = [next((i for i, line in enumerate(after) if want in line), -1) for want in expected]
    assert -1 not in at and at == sorted(at), (expected, after)
    assert report["best"]["latency_ms"] <= 5.0
    assert (tmp_path / "run" / "darts.json").exists()
    assert main(argv) == 0  # a rerun resumes: no second training, still one trial
    assert "already in the study" in capsys.readouterr().err


def test_cli_darts_without_a_latency_table_names_the_profile_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    code = main(["search", "--strategy", "darts", "--device", "cpu", "--latency", "5ms", "--out", str(tmp_path / "r"), "--epochs", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "hwnas profile" in err and "Traceback" not in err


class FakeMBConvLatency:
    """Additive in the active blocks: kernel * expansion / 10 ms each, plus 1 ms."""

    kind = "lookup table"

    def __init__(self) -> None:
        from hwnas.spaces.mbconv import MBConvSpace

        self.device = type("D", (), {"name": "fake"})()
        self.space = MBConvSpace()

    def latency(self, arch, model=None):  # type: ignore[no-untyped-def]
        from hwnas.cost.latency import Latency
        from hwnas.spaces.mbconv import _depth

        total = 1.0
        for s in range(1, 7):
            for b in range(1, _depth(arch, s) + 1):
                total += arch[f"s{s}b{b}_k"] * arch[f"s{s}b{b}_e"] / 10
        return Latency(total, "lookup table")

    def describe(self):  # type: ignore[no-untyped-def]
        return {"device": "fake", "source": "lookup table"}


def test_mbconv_supernet_searches_and_its_skips_are_depth_not_collapse() -> None:
    from hwnas.darts.run import make_supernet
    from hwnas.spaces.mbconv import MBConvSpace

    torch.manual_seed(0)
    net = make_supernet(MBConvSpace(), num_classes=3, in_channels=1)
    assert net.max_skip_share == 1.0  # skipping a block is a depth choice here, not a collapse
    latency = fit_additive_latency(net, FakeMBConvLatency(), max_archs=400)  # type: ignore[arg-type]
    assert latency.fit["r2"] > 0.8
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
    cfg = DartsConfig(epochs=2, warmup=1, target_ms=5.0, latency_weight=30.0, threads=1)
    result = search(net, lambda e: iter([(x[:4], y[:4])]), lambda e: iter([(x[4:], y[4:])]), latency, cfg)
    arch = net.derive(result.picks)
    assert net.space.validate(arch) == arch
    assert arch["resolution"] == 128 and arch["width"] == 0.5


def test_perturbation_scores_are_zero_for_weightless_choices_and_rise_for_the_load_bearing_one() -> None:
    """Removing a choice the mixture gives no weight changes nothing; removing the only weighted
    choice removes the decision (inf); scores have one entry per choice."""
    from hwnas.darts.select import perturbation_scores

    net = tiny()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g))]
    probs = [[0.0, 0.0, 0.5, 0.5, 0.0] for _ in range(6)]
    probs[0] = [0.0, 0.0, 0.0, 1.0, 0.0]
    told: list[int] = []
    scores = perturbation_scores(net, probs, data, progress=told.append)
    assert told == list(range(30))  # told before each of the 30 choices how many are scored
    assert [len(s) for s in scores] == [5] * 6
    assert scores[0][3] == np.inf
    for s, p in zip(scores, probs, strict=True):
        assert s[NONE] == -np.inf  # a zero op is never selected by perturbation
        assert all(abs(v) < 1e-6 for i, (v, q) in enumerate(zip(s, p, strict=True)) if q == 0 and i != NONE)
    assert any(abs(v) > 1e-6 for s in scores[1:] for v in s)


def test_derive_under_budget_meets_the_target_and_spends_more_of_a_larger_one() -> None:
    from hwnas.darts.select import derive_under_budget

    net = tiny()
    fake = FakeLatency()
    additive = fit_additive_latency(net, fake)  # type: ignore[arg-type]

    def exact(picks: list[int]) -> float:
        return fake.latency(net.derive(picks)).ms

    # Scores that prefer the slowest choice everywhere: conv3x3 > conv1x1 > pool > skip > none.
    pref = {C3: 1.0, C1: 0.6, POOL: 0.3, SKIP: 0.1, NONE: 0.0}
    scores = [np.array([pref[i] for i in range(5)]) for _ in range(6)]
    free, mu0 = derive_under_budget(net, scores, additive, exact, float("inf"), max_share=net.max_skip_share)
    assert free == [C3] * 6 and mu0 == 0.0
    total = {}
    for target in (4.0, 6.0, 9.0):
        picks, mu = derive_under_budget(net, scores, additive, exact, target, max_share=net.max_skip_share)
        assert exact(picks) <= target and mu > 0
        assert skip_share(net, picks) <= net.max_skip_share + 1e-9
        total[target] = sum(pref[p] for p in picks)
    assert total[4.0] <= total[6.0] <= total[9.0] and total[4.0] < total[9.0]


def test_perturbation_scores_count_the_latency_term_so_a_higher_weight_favours_faster_choices() -> None:
    from hwnas.darts.select import perturbation_scores

    net = tiny()
    additive = fit_additive_latency(net, FakeLatency())  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g))]
    probs = [[0.0, 0.3, 0.2, 0.3, 0.2] for _ in range(6)]

    def scores(weight: float) -> list[np.ndarray]:
        def arch_loss(ce: float, gates: list[torch.Tensor]) -> float:
            return float(latency_loss(torch.tensor(ce), additive.expected(gates), 5.0, "add#linear", weight))

        return perturbation_scores(net, probs, data, arch_loss=arch_loss)

    low, high = scores(0.0), scores(10.0)
    for lo, hi in zip(low, high, strict=True):
        # Removing a slow choice lowers E[LAT] (its score falls), a fast one raises it: the shift
        # follows the choices' latencies (skip 0.01 < pool 0.3 < conv1x1 0.5 < conv3x3 2.0 ms).
        shift = {c: hi[c] - lo[c] for c in (SKIP, POOL, C1, C3)}  # none scores -inf: never selected
        assert shift[SKIP] > shift[POOL] > shift[C1] > 0 > shift[C3]
