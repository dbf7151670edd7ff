"""The bi-level DARTS loop with a latency term, Gumbel sampling and a collapse guard.

Weights step on the training split with the gates detached; architecture parameters step on
the validation split with loss ``CE x/+ latency term`` (Liu et al. ICLR 2019; Cai et al.
ICLR 2019; Wu et al. CVPR 2019). First order treats the weights as constants in the alpha
step; second order differentiates through one virtual weight step, with DARTS' finite-
difference Hessian-vector product.

Collapse guard: DARTS drifts toward parameter-free choices (skip, none) because they lower
the validation loss early, while the convolutions are still weak, and a latency term pushes the
same way (they cost nothing); on NAS-Bench-201 the paper's DARTS ends at the all-skip cell
(54.30 %). On digits here, one epoch of architecture steps after warm-up already puts 5 of the
6 edges on skip or none. The remedy is P-DARTS' search-space regularisation (Chen et al., ICCV
2019), which caps the parameter-free choices of the derived architecture: at most
``max_skip_share`` of the decisions (NB201: 2 of 6 edges) keep a parameter-free choice, those
where it leads by the widest margin; every other decision takes its strongest parametric
choice. It costs nothing, needs no extra training, leaves the latency term free to pick cheaper
convolutions and pools, and makes the collapsed cell impossible by construction. The uncapped
derivation is logged every epoch, so the collapse it prevents stays visible.

Hitting the target: a fixed latency weight sets a trade-off, not a latency (``add#linear``'s
pull toward cheaper choices is the same at 2 ms as at 20 ms). By default the weight of
``add#linear`` is therefore a Lagrange multiplier adapted by dual ascent, as in LightNAS (Luo
et al., DAC 2022): after every architecture step it is multiplied by
``exp(rate * (LAT / T - 1))``, where LAT is the device latency of the architecture that would be
derived now (capped, on the exact latency model when one is given). Over the target the weight
grows and pushes E[LAT] down; under it the weight decays and the cross-entropy takes the
latency back, so the derived architecture settles at T instead of wherever a guessed weight
lands it. ``adapt_weight=False`` keeps the weight fixed (the weight sweep of the benchmark).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hwnas.darts import defaults
from hwnas.darts.latency import AdditiveLatency
from hwnas.darts.supernet import Supernet

#: Latency terms: ProxylessNAS ``mul#log`` and ``add#linear``, FBNet's ``fbnet``.
LATENCY_TERMS = ("mul#log", "add#linear", "fbnet")
SAMPLINGS = ("softmax", "gumbel")


def latency_loss(ce: torch.Tensor, lat_ms: torch.Tensor, target_ms: float, term: str, weight: float) -> torch.Tensor:
    """The architecture loss. Latencies enter the logarithms in microseconds, so every realistic
    latency has a positive log (a sub-millisecond budget stays well defined).

    * ``mul#log``: CE * (log LAT / log T) ** weight (ProxylessNAS, alpha = 1, beta = weight);
    * ``add#linear``: CE + weight * (LAT - T) / T (ProxylessNAS);
    * ``fbnet``: CE * 0.2 * (log LAT) ** weight (FBNet's alpha = 0.2, beta = weight; no target).
    """
    if weight < 0:
        raise ValueError(f"latency weight must be >= 0, got {weight}")
    us = lat_ms.clamp_min(1e-3) * 1e3
    if term == "mul#log":
        return ce * (torch.log(us) / math.log(max(target_ms * 1e3, 1.0 + 1e-6))) ** weight
    if term == "add#linear":
        return ce + weight * (lat_ms - target_ms) / target_ms
    if term == "fbnet":
        return ce * 0.2 * torch.log(us) ** weight
    raise ValueError(f"unknown latency term {term!r}; valid: {', '.join(LATENCY_TERMS)}")


@dataclass
class DartsConfig:
    epochs: int = defaults.EPOCHS
    warmup: int = 5
    batch: int = defaults.BATCH
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_decay: float = 3e-4
    a_lr: float = 3e-3
    a_decay: float = 1e-3
    order: int = 1
    sampling: str = "softmax"
    tau: tuple[float, float] = (5.0, 0.5)
    latency_term: str = "add#linear"
    latency_weight: float = 1.0
    target_ms: float = 1.0
    #: Dual ascent of the add#linear weight toward the target (LightNAS); False: a fixed weight.
    adapt_weight: bool = True
    adapt_rate: float = 0.05
    #: How the trained supernet is turned into one architecture (hwnas.darts.select):
    #: "perturbation" (DARTS-PT) or "alpha" (argmax), both under the budget.
    selection: str = "perturbation"
    #: Validation batches that score the perturbation selection.
    selection_batches: int = 4
    max_skip_share: float | None = None  # None: the supernet's own default
    guard: bool = True
    seed: int = 0
    device: str = "cpu"
    #: CPU threads for torch (0: half the cores, at most 4). Oversubscribed OpenMP threads on a
    #: busy machine made a 2-core epoch 80x slower (119 s against 1.5 s with one thread).
    threads: int = 0

    def check(self) -> None:
        from hwnas.errors import UsageError

        if self.epochs < 1 or self.warmup < 0 or self.warmup >= self.epochs:
            raise UsageError(f"need epochs >= 1 and 0 <= warmup < epochs, got epochs {self.epochs}, warmup {self.warmup}")
        if self.order not in (1, 2):
            raise UsageError(f"--darts-order must be 1 or 2, got {self.order}")
        if self.sampling not in SAMPLINGS:
            raise UsageError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.latency_term not in LATENCY_TERMS:
            raise UsageError(f"--latency-term must be one of {', '.join(LATENCY_TERMS)}, got {self.latency_term!r}")
        if self.selection not in ("perturbation", "alpha"):
            raise UsageError(f"--selection must be perturbation or alpha, got {self.selection!r}")
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")
        if not (self.latency_weight >= 0 and math.isfinite(self.latency_weight)):
            raise UsageError(f"--latency-weight must be a finite number >= 0, got {self.latency_weight}; e.g. --latency-weight 1")
        if self.adapt_weight and self.latency_term == "add#linear" and self.latency_weight == 0:
            raise UsageError("--latency-weight 0 cannot adapt toward the target (it stays 0); give a positive weight, e.g. 1")

    @property
    def adapts(self) -> bool:
        """Whether the latency weight is adapted toward the target (add#linear only)."""
        return self.adapt_weight and self.latency_term == "add#linear"


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    valid_acc: float
    expected_latency_ms: float
    #: Exact latency of the architecture derived now (with the collapse guard's cap).
    derived_latency_ms: float
    latency_weight: float
    skip_share: float
    derived: list[int]
    seconds: float


@dataclass
class DartsResult:
    picks: list[int]
    probabilities: list[list[float]]
    uncapped: list[int]
    guard_note: str
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def skip_share(supernet: Supernet, picks: Sequence[int]) -> float:
    decisions = supernet.decisions()
    return sum(d.choices[p] in supernet.skip_choices for d, p in zip(decisions, picks, strict=True)) / len(decisions)


def derive_picks(supernet: Supernet, alphas: Sequence[torch.Tensor], *, max_share: float | None = 1.0) -> list[int]:
    """Argmax of each decision's alphas, with at most ``max_share`` of the decisions on a
    parameter-free choice (P-DARTS' cap): those where it leads the best parametric choice by the
    widest margin keep it, the others take their best parametric choice. ``None``: no cap."""
    decisions = supernet.decisions()
    picks, margins = [], []
    for d, a in zip(decisions, alphas, strict=True):
        scores = a.detach().cpu()
        best = int(torch.argmax(scores))
        param = [i for i, c in enumerate(d.choices) if c not in supernet.skip_choices]
        best_param = max(param, key=lambda i: float(scores[i])) if param else best
        picks.append(best)
        if d.choices[best] in supernet.skip_choices and param:
            margins.append((float(scores[best] - scores[best_param]), len(picks) - 1, best_param))
    if max_share is None:
        return picks
    allowed = math.floor(max_share * len(decisions) + 1e-9)
    for _, i, best_param in sorted(margins, reverse=True)[allowed:]:
        picks[i] = best_param
    return picks


def search(
    supernet: Supernet,
    train_batches: Batches,
    valid_batches: Batches,
    latency: AdditiveLatency,
    config: DartsConfig,
    *,
    exact: Callable[[list[int]], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> DartsResult:
    """Train ``supernet`` and its architecture parameters; return the derived choices.

    ``train_batches(epoch)`` and ``valid_batches(epoch)`` yield (x, y) batches of the two splits.
    ``exact(picks)`` is the device latency (ms) of a derivation, used to adapt the latency weight
    toward the target (default: the additive model's estimate).
    """
    config.check()
    before = torch.get_num_threads()
    if config.device == "cpu":
        torch.set_num_threads(config.threads or default_threads())
    try:
        return _search(supernet, train_batches, valid_batches, latency, config, exact or latency.of_picks, log)
    finally:
        torch.set_num_threads(before)


def default_threads() -> int:
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _search(
    supernet: Supernet,
    train_batches: Batches,
    valid_batches: Batches,
    latency: AdditiveLatency,
    config: DartsConfig,
    exact: Callable[[list[int]], float],
    log: Callable[[str], None] | None,
) -> DartsResult:
    torch.manual_seed(config.seed)
    dev = torch.device(config.device)
    net = supernet.to(dev)
    alphas = [torch.zeros(len(d.choices), device=dev, requires_grad=True) for d in supernet.decisions()]
    with torch.no_grad():
        for a in alphas:
            a.add_(1e-3 * torch.randn_like(a))
    weights = [p for p in net.parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, lr=config.w_lr, momentum=config.w_momentum, weight_decay=config.w_decay, nesterov=True)
    w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=config.epochs, eta_min=config.w_lr * 0.02)
    a_opt = torch.optim.Adam(alphas, lr=config.a_lr, betas=(0.5, 0.999), weight_decay=config.a_decay)
    max_share = config.max_skip_share if config.max_skip_share is not None else getattr(supernet, "max_skip_share", 1.0)
    history: list[EpochLog] = []
    t_start = time.perf_counter()
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    lam = config.latency_weight  # the add#linear multiplier; adapted toward the target when config.adapts

    def gates(epoch: int) -> list[torch.Tensor]:
        if config.sampling == "softmax":
            return [F.softmax(a, dim=-1) for a in alphas]
        hi, lo = config.tau
        tau = hi * (lo / hi) ** (epoch / max(1, config.epochs - 1))  # FBNet: exponential decay
        out = []
        for a in alphas:
            u = torch.rand(a.shape, generator=gen).clamp(1e-9, 1 - 1e-9).to(dev)
            out.append(F.softmax((a - torch.log(-torch.log(u))) / tau, dim=-1))
        return out

    def arch_loss(x: torch.Tensor, y: torch.Tensor, g: list[torch.Tensor]) -> torch.Tensor:
        ce = F.cross_entropy(net(x, g), y)
        lat = latency.expected([F.softmax(a, dim=-1) for a in alphas])
        return latency_loss(ce, lat, config.target_ms, config.latency_term, lam if config.adapts else config.latency_weight)

    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        net.train()
        search_alpha = epoch >= config.warmup
        n, correct, loss_sum = 0, 0, 0.0
        for (xt, yt), (xv, yv) in zip(train_batches(epoch), valid_batches(epoch), strict=False):
            xt, yt, xv, yv = xt.to(dev), yt.to(dev), xv.to(dev), yv.to(dev)
            if search_alpha:
                a_opt.zero_grad()
                if config.order == 2:
                    _second_order_step(net, weights, alphas, arch_loss, gates(epoch), xt, yt, xv, yv, float(w_sched.get_last_lr()[0]))
                else:
                    arch_loss(xv, yv, gates(epoch)).backward()
                for p in weights:
                    p.grad = None
                a_opt.step()
                if config.adapts:
                    now = exact(derive_picks(supernet, alphas, max_share=max_share if config.guard else None))
                    lam = min(1e3, max(1e-3, lam * math.exp(config.adapt_rate * (now / config.target_ms - 1.0))))
            w_opt.zero_grad()
            g = [t.detach() for t in gates(epoch)]
            out = net(xt, g)
            loss = F.cross_entropy(out, yt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights, 5.0)
            w_opt.step()
            for a in alphas:
                a.grad = None
            n += len(yt)
            correct += int((out.argmax(1) == yt).sum())
            loss_sum += float(loss.detach()) * len(yt)
        w_sched.step()
        picks = derive_picks(supernet, alphas, max_share=None)
        share = skip_share(supernet, picks)
        valid_acc = _accuracy(net, valid_batches(epoch), [F.softmax(a, dim=-1).detach() for a in alphas], dev)
        entry = EpochLog(
            epoch=epoch + 1,
            train_loss=loss_sum / max(1, n),
            train_acc=100.0 * correct / max(1, n),
            valid_acc=valid_acc,
            expected_latency_ms=float(latency.expected([F.softmax(a, dim=-1).detach().cpu() for a in alphas])),
            derived_latency_ms=exact(derive_picks(supernet, alphas, max_share=max_share if config.guard else None)),
            latency_weight=lam if config.adapts else config.latency_weight,
            skip_share=share,
            derived=picks,
            seconds=time.perf_counter() - t0,
        )
        history.append(entry)
        if log:
            log(
                f"epoch {entry.epoch:>3}/{config.epochs}: loss {entry.train_loss:.3f} train {entry.train_acc:5.1f}% "
                f"valid {entry.valid_acc:5.1f}% E[lat] {entry.expected_latency_ms:.3f} ms derived {entry.derived_latency_ms:.3f} ms "
                f"weight {entry.latency_weight:.3g} skip share {share:.2f} (uncapped) ({entry.seconds:.1f} s)"
                f"{'' if search_alpha else ' (warm-up)'}"
            )
    uncapped = derive_picks(supernet, alphas, max_share=None)
    final = derive_picks(supernet, alphas, max_share=max_share if config.guard else None)
    note = ""
    if final != uncapped:
        note = (
            f"uncapped derivation has skip share {skip_share(supernet, uncapped):.2f} > {max_share:.2f}: "
            f"capped to {skip_share(supernet, final):.2f} (P-DARTS)"
        )
        if log:
            log(f"collapse guard: {note}")
    probs = [F.softmax(a.detach(), dim=-1).cpu().tolist() for a in alphas]
    return DartsResult(final, probs, uncapped, note, history, time.perf_counter() - t_start)


@torch.no_grad()
def _accuracy(net: Supernet, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], g: list[torch.Tensor], dev: torch.device) -> float:
    net.eval()
    n = correct = 0
    for x, y in batches:
        out = net(x.to(dev), g)
        correct += int((out.argmax(1) == y.to(dev)).sum())
        n += len(y)
    net.train()
    return 100.0 * correct / max(1, n)


def _second_order_step(
    net: Supernet,
    weights: list[torch.nn.Parameter],
    alphas: list[torch.Tensor],
    arch_loss: Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor],
    g: list[torch.Tensor],
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    xi: float,
) -> None:
    """DARTS' unrolled gradient: d/dalpha L_val(w - xi * dL_train/dw, alpha), with the second
    derivative by finite differences (Liu et al. 2019, eq. 7-8). Leaves it in ``alpha.grad``."""
    backup = [p.detach().clone() for p in weights]
    grads = torch.autograd.grad(F.cross_entropy(net(xt, g), yt), weights, allow_unused=True)
    with torch.no_grad():
        for p, d in zip(weights, grads, strict=True):
            if d is not None:
                p.sub_(xi * d)
    loss = arch_loss(xv, yv, g)
    d_alpha = torch.autograd.grad(loss, alphas, retain_graph=True, allow_unused=True)
    raw = torch.autograd.grad(loss, weights, allow_unused=True)
    d_w = [torch.zeros_like(p) if d is None else d for p, d in zip(weights, raw, strict=True)]
    r = 0.01 / (torch.sqrt(torch.stack([(d * d).sum() for d in d_w]).sum()) + 1e-12)

    def train_grad_alpha(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, b, d in zip(weights, backup, d_w, strict=True):
                p.copy_(b + sign * r * d)
        gg = [F.softmax(a, dim=-1) for a in alphas]
        out = torch.autograd.grad(F.cross_entropy(net(xt, gg), yt), alphas, allow_unused=True)
        return [torch.zeros_like(a) if o is None else o for a, o in zip(alphas, out, strict=True)]

    plus, minus = train_grad_alpha(+1.0), train_grad_alpha(-1.0)
    with torch.no_grad():
        for p, b in zip(weights, backup, strict=True):
            p.copy_(b)
        for a, da, gp, gm in zip(alphas, d_alpha, plus, minus, strict=True):
            base = torch.zeros_like(a) if da is None else da
            a.grad = base - xi * (gp - gm) / (2 * r)


def repair_to_budget(
    supernet: Supernet, picks: list[int], probabilities: list[list[float]], exact: Callable[[list[int]], float], target_ms: float
) -> tuple[list[int], list[str]]:
    """Greedy budget repair of a derived architecture: while its exact latency is over
    ``target_ms``, swap the choice that loses the least log-probability per millisecond saved.
    Never adds a parameter-free choice beyond the current count (so the guard still holds).
    Returns the picks and one line per swap."""
    picks = list(picks)
    steps: list[str] = []
    decisions = supernet.decisions()
    current = exact(picks)
    skips = sum(d.choices[p] in supernet.skip_choices for d, p in zip(decisions, picks, strict=True))
    for _ in range(sum(len(d.choices) for d in decisions)):
        if current <= target_ms:
            break
        best: tuple[float, int, int, float] | None = None
        for i, d in enumerate(decisions):
            for c in range(len(d.choices)):
                if c == picks[i]:
                    continue
                adds_skip = d.choices[c] in supernet.skip_choices and d.choices[picks[i]] not in supernet.skip_choices
                if adds_skip and skips + 1 > len(decisions) * getattr(supernet, "max_skip_share", 1.0) + 1e-9:
                    continue
                trial = [*picks[:i], c, *picks[i + 1 :]]
                lat = exact(trial)
                saved = current - lat
                if saved <= 0:
                    continue
                cost = (math.log(max(probabilities[i][picks[i]], 1e-12)) - math.log(max(probabilities[i][c], 1e-12))) / saved
                if best is None or cost < best[0]:
                    best = (cost, i, c, lat)
        if best is None:
            break
        _, i, c, lat = best
        d = decisions[i]
        steps.append(f"{d.name}: {d.choices[picks[i]]} -> {d.choices[c]} ({current:.3f} -> {lat:.3f} ms)")
        if d.choices[c] in supernet.skip_choices and d.choices[picks[i]] not in supernet.skip_choices:
            skips += 1
        picks[i], current = c, lat
    return picks, steps
