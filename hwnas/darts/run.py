"""One differentiable search, end to end: data -> supernet -> latency model -> bi-level
training with the collapse guard -> derived architecture -> budget repair on the exact latency.

``hwnas search --strategy darts`` calls :func:`run_darts` and records the result as one trial
of the run's study (so it sits on the same front as every other strategy and is exported the
same way); ``benchmarks/darts.py`` calls it directly.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hwnas.cost.latency import LatencyModel
from hwnas.darts.latency import AdditiveLatency, fit_additive_latency
from hwnas.darts.select import alpha_scores, derive_architecture, derive_under_budget, perturbation_scores
from hwnas.darts.supernet import Supernet
from hwnas.darts.train import DartsConfig, DartsResult, latency_loss, search, skip_share
from hwnas.search.progress import Heartbeat
from hwnas.spaces import Arch, SearchSpace


@dataclass
class DartsOutcome:
    arch: Arch
    latency_ms: float
    latency_source: str
    #: The selection without the budget (and its latency): what the supernet prefers.
    derived_before_repair: Arch
    latency_before_repair_ms: float
    repairs: list[str]
    result: DartsResult
    additive: AdditiveLatency
    supernet_valid_accuracy: float
    uncapped: Arch
    #: The derived network's inherited-weight accuracy on the held-out test split (None: the data has none).
    uncapped_skip_share: float
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: The derived network's inherited-weight accuracy on the held-out test split (None: the data has none).
    test_accuracy: float | None = None
    test_source: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-safe digest for a trial's attributes and reports."""
        last = self.result.history[-1] if self.result.history else None
        return {
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "latency_before_repair_ms": self.latency_before_repair_ms,
            "repairs": self.repairs,
            "uncapped": self.uncapped,
            "uncapped_skip_share": self.uncapped_skip_share,
            "guard": self.result.guard_note,
            "epochs_run": len(self.result.history),
            "last_epoch": None if last is None else {k: v for k, v in last.__dict__.items() if k != "derived"},
            "supernet_valid_accuracy": self.supernet_valid_accuracy,
            "test_accuracy": self.test_accuracy,
            "test_source": self.test_source,
            "additive_latency_fit": self.additive.fit | {"source": self.additive.source},
            "data": self.data,
            "seconds": round(self.seconds, 1),
        }


def make_supernet(
    space: SearchSpace, *, num_classes: int, in_channels: int, resolution: int | None = None, width: float | None = None
) -> Supernet:
    """The supernet of ``space`` for data with ``num_classes`` and ``in_channels`` (UsageError for a
    space without one); the space builds it (:meth:`~hwnas.spaces.SearchSpace.supernet`)."""
    net = space.supernet(num_classes=num_classes, in_channels=in_channels, resolution=resolution, width=width)
    if not isinstance(net, Supernet):
        raise TypeError(f"{type(space).__name__}.supernet returned {type(net).__name__}, expected a hwnas.darts.supernet.Supernet")
    return net


def run_darts(
    space: SearchSpace,
    latency_model: LatencyModel,
    target_ms: float,
    config: DartsConfig,
    *,
    data: str = "digits",
    data_seed: int = 0,
    resolution: int | None = None,
    width: float | None = None,
    log: Callable[[str], None] | None = None,
) -> DartsOutcome:
    """Search ``space`` on ``data`` for ``target_ms`` on ``latency_model``'s device."""
    from hwnas.datasets import batches, load_data

    t0 = time.perf_counter()
    say = log or (lambda _: None)
    ds = load_data(data)
    search_train, search_valid, search_test = search_splits(ds, data_seed)
    torch.manual_seed(config.seed)  # the supernet's initial weights: the same for the same seed
    supernet = make_supernet(space, num_classes=ds.num_classes, in_channels=ds.input_shape[0], resolution=resolution, width=width)
    from hwnas.evaluate.train import input_size

    # The images as the derived network takes them (one shape truth): resized to its resolution where the space searches one.
    size = input_size(space, supernet.derive([0] * len(supernet.decisions())), ds)
    batches = functools.partial(batches, size=size)
    additive = fit_additive_latency(supernet, latency_model)
    f = additive.fit
    say(
        f"latency model: {additive.source}; held-out {f['held_out']}: R^2 {f['r2']:.3f}, MAPE {f['mape_pct']:.1f} %, "
        f"Kendall tau {f['kendall_tau']:.3f}"
    )
    config.target_ms = target_ms
    say(
        f"darts on {ds.name} ({len(search_train)} train / {len(search_valid)} valid, {ds.input_shape}), "
        f"{sum(p.numel() for p in supernet.parameters()):,} supernet weights, {config.epochs} epochs "
        f"({config.warmup} warm-up), order {config.order}, {config.sampling}, {config.latency_term} weight {config.latency_weight}"
        f"{' adapted toward the target' if config.adapts else ''}"
    )

    # The selection after training times many derivations (each measured on a live device): counted,
    # and said every 10 s once it has begun (training's own per-epoch derivations are not counted).
    timed: Heartbeat | None = None
    n_timed = 0

    @functools.cache
    def exact_of(picks: tuple[int, ...]) -> float:
        nonlocal n_timed
        ms = latency_model.latency(supernet.derive(picks)).ms
        if timed is not None:
            n_timed += 1
            timed(n_timed)
        return ms

    def exact(picks: list[int]) -> float:
        """The device latency (ms) of a derivation; the selection asks for the same ones often."""
        return exact_of(tuple(int(p) for p in picks))

    result = search(
        supernet,
        lambda e: batches(search_train, config.batch, shuffle=True, seed=config.seed * 1000 + e),
        lambda e: batches(search_valid, config.batch, shuffle=True, seed=config.seed * 1000 + 500 + e),
        additive,
        config,
        exact=exact,
        log=say,
    )

    max_share = config.max_skip_share if config.max_skip_share is not None else supernet.max_skip_share
    # After the last epoch: selection, the derived network's accuracy, its trial and export follow,
    # each of which says what it does (they took about 2 minutes in silence once).
    t_select = time.perf_counter()
    timed = Heartbeat(say, "selection: derived networks timed for their exact latency")
    if config.selection == "perturbation":
        n_choices = sum(len(p) for p in result.probabilities)
        say(
            f"selection (perturbation): scoring each of {n_choices} choices by the validation loss without it, "
            f"on {config.selection_batches} batches ..."
        )
        import itertools

        valid = itertools.islice(batches(search_valid, config.batch, shuffle=True, seed=config.seed * 1000 + 999), config.selection_batches)
        weight = result.history[-1].latency_weight if result.history else config.latency_weight

        def arch_loss(ce: float, gates: list[torch.Tensor]) -> float:
            lat = additive.expected([g.detach().cpu() for g in gates])
            return float(latency_loss(torch.tensor(ce), lat, target_ms, config.latency_term, weight))

        scoring = Heartbeat(say, "selection (perturbation)", total=n_choices, unit="choices scored")
        scores = perturbation_scores(supernet, result.probabilities, valid, config.device, arch_loss=arch_loss, progress=scoring)
        say(f"selection (perturbation): scored in {time.perf_counter() - t_select:.0f} s; deriving under {target_ms:g} ms ...")
    else:
        scores = alpha_scores(result.probabilities)
    cap = max_share if config.guard else None
    unconstrained = derive_under_budget(supernet, scores, additive, exact, float("inf"), max_share=cap)[0]
    before = supernet.derive(unconstrained)
    before_ms = exact(unconstrained)
    chosen = derive_architecture(supernet, scores, result.probabilities, additive, exact, target_ms, max_share=cap)
    how = f"latency multiplier {chosen.multiplier:.3g}"
    if math.isinf(chosen.multiplier):
        how = "the multiplier's ceiling misses (the additive model is not exact); exact search within the cap"
    say(
        f"selection ({config.selection}): unconstrained {space.to_string(before)} {before_ms:.3f} ms; "
        f"under {target_ms:g} ms: {how}, {exact(chosen.selected):.3f} ms ({n_timed} networks timed, "
        f"{time.perf_counter() - t_select:.0f} s)"
    )
    picks, repairs = chosen.picks, chosen.repairs
    for line in repairs:
        say(f"budget repair: {line}")
    if exact(picks) > target_ms and math.isinf(chosen.multiplier):
        say(f"no architecture within the collapse guard's cap meets {target_ms:g} ms: the fastest runs at {exact(picks):.3f} ms")
    arch = supernet.derive(picks)
    # The derived network with the supernet's weights (batch-norm statistics re-estimated) on the valid split.
    sub = _inherited(supernet, picks)
    valid_acc = float("nan")
    test_acc: float | None = None
    test_source = "the space's DARTS supernet gives no stand-alone derived network to score"
    if sub is not None:
        from hwnas.training import accuracy

        say("derived network: re-estimating its BatchNorm statistics and its inherited-weight validation accuracy ...")
        with torch.no_grad():
            sub.train()
            for x, _ in batches(search_train, config.batch, shuffle=True, seed=0):
                sub(x.to(config.device))
        valid_acc = accuracy(sub, batches(search_valid, 256, shuffle=False, seed=0), config.device)
        if search_test is not None and len(search_test):
            test_acc = accuracy(sub, batches(search_test, 256, shuffle=False, seed=0), config.device)
            test_source = f"held-out test split of {ds.name} ({len(search_test)} images), inherited weights, never used by the search"
        else:
            test_source = f"{ds.name} has no held-out test split"
    lat = latency_model.latency(arch)
    say(
        f"derived {space.to_string(arch)}: {lat.ms:.3f} ms ({lat.source}), skip share {skip_share(supernet, picks):.2f}, "
        f"inherited-weight valid accuracy {valid_acc:.1f} %"
    )
    return DartsOutcome(
        arch=arch,
        latency_ms=lat.ms,
        latency_source=lat.source,
        derived_before_repair=before,
        latency_before_repair_ms=before_ms,
        repairs=repairs,
        result=result,
        additive=additive,
        supernet_valid_accuracy=valid_acc,
        uncapped=supernet.derive(result.uncapped),
        uncapped_skip_share=skip_share(supernet, result.uncapped),
        data={
            "spec": data,
            "name": ds.name,
            "source": ds.source,
            "train": len(search_train),
            "valid": len(search_valid),
            "seed": data_seed,
        },
        seconds=time.perf_counter() - t0,
        test_accuracy=test_acc,
        test_source=test_source,
    )


def search_splits(ds: Any, seed: int) -> tuple[Any, Any, Any]:
    """(train, valid, test) of a search: the data's own validation split (an image folder's
    ``val/``) trains the architecture and all the rest the weights, its test split (or None) held
    out. Otherwise the data's own test split where it has one, else 20 % held out; the rest halved,
    stratified, into the weight (train) and architecture (valid) splits."""
    from hwnas.datasets import split

    if ds.valid is not None:
        return ds, ds.valid, ds.test
    if ds.test is not None:
        train, valid = split(ds, (0.5, 0.5), seed=seed)
        return train, valid, ds.test
    train, valid, test = split(ds, (0.4, 0.4, 0.2), seed=seed)
    return train, valid, test


def _inherited(supernet: Supernet, picks: list[int]) -> torch.nn.Module | None:
    subnet = getattr(supernet, "subnet", None)
    if subnet is None:
        return None
    module = subnet(picks)
    assert isinstance(module, torch.nn.Module)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the recalibration batches
    return module
