"""Train an elastic supernet with the sandwich rule, checkpointed every epoch, resumable.

Each step runs the largest subnet, the smallest and ``random_subnets`` uniformly drawn ones on
the same batch, accumulates their gradients and takes one SGD step (the sandwich rule of
US-Nets, Yu & Huang, ICCV 2019, also used by BigNAS). With ``distill`` the smaller subnets
learn from the largest one's soft predictions (in-place distillation) instead of the labels.
The learning rate follows a cosine over the epochs.

After every epoch the state is written atomically to the checkpoint (a temporary file, then
``os.replace``): model and optimizer state dicts, the epoch, the history and the settings. A
run with the same settings resumes after the last finished epoch; randomness (data order,
drawn subnets, dropout) is reseeded at every epoch from ``(seed, epoch)``, so a resumed run
trains exactly as an uninterrupted one. Checkpoints hold only tensors and plain data and are
read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import UsageError
from hwnas.ofa import defaults
from hwnas.ofa.elastic import ElasticMBConvNet

CHECKPOINT_FORMAT = "hwnas.ofa.supernet"
CHECKPOINT_VERSION = 1

Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class SupernetSettings:
    """How the supernet is trained; all of it is part of a checkpoint's identity."""

    # Defaults chosen on the shipped digits (benchmarks/evaluators.py): epochs, batch and lr in hwnas.ofa.defaults (read by
    # --help too), weight decay 5e-4 worse than 5e-5, in-place distillation better than labels for the smaller subnets.
    epochs: int = defaults.EPOCHS
    batch: int = defaults.BATCH
    lr: float = defaults.LR
    momentum: float = 0.9
    weight_decay: float = 5e-5
    random_subnets: int = 2
    distill: bool = True
    kernel_transform: bool = True
    clip: float = 5.0
    seed: int = 0

    def check(self) -> None:
        """Raise UsageError naming the first bad setting."""
        for name, low in (("epochs", 1), ("batch", 2), ("random_subnets", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"supernet {name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise UsageError(f"supernet {name} must be a number > 0, got {value!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise UsageError(f"supernet {name} must be a number in [0, 1), got {value!r}")

    def lr_at(self, epoch: int) -> float:
        """Cosine from ``lr`` at epoch 0 towards 0 at ``epochs``."""
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))


@dataclass
class EpochLog:
    epoch: int
    lr: float
    loss_largest: float
    loss_others: float
    train_acc_largest: float
    train_acc_smallest: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochLog] = field(default_factory=list)
    #: Epochs already done when this call started (0: trained from scratch).
    resumed_from: int = 0
    seconds: float = 0.0


class Interrupted(Exception):
    """Raised by an ``after_epoch`` callback to stop training (tests simulate an interruption with it)."""


def train_supernet(
    supernet: ElasticMBConvNet,
    batches: Batches,
    settings: SupernetSettings,
    *,
    checkpoint: Path | None = None,
    identity: dict[str, Any] | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
    input_for: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``supernet`` in place on ``batches(epoch)`` until ``settings.epochs`` are done.

    Args:
        supernet: the network; its weights are replaced by the checkpoint's when resuming.
        batches: ``batches(epoch)`` yields the (x, y) mini-batches of one epoch (shuffled by the caller).
        settings: training settings.
        checkpoint: where the state is saved after every epoch and resumed from (None: not saved).
        identity: more JSON-safe facts the checkpoint must match to be resumed (e.g. the data).
        device: ``cpu`` or ``cuda``.
        log: progress lines.
        after_epoch: called with the finished epoch number (1-based) after its checkpoint is written.
        input_for: ``input_for(x, arch)`` is the batch as ``arch``'s subnet takes it (e.g. resized to
            its resolution, Once-for-All's elastic resolution); None: every subnet takes ``x``.

    Raises:
        UsageError: the checkpoint is unreadable or was written with other settings.
        FloatingPointError: the loss became NaN or infinite.
    """
    settings.check()
    say = log or (lambda _: None)
    ident = _identity(settings, identity)
    dev = torch.device(device)
    supernet.to(dev)
    opt = _optimizer(supernet, settings)
    start = 0
    history: list[EpochLog] = []
    state = load_checkpoint(checkpoint, ident) if checkpoint is not None else None
    if state is not None:
        supernet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        history = [EpochLog(**h) for h in state["history"]]
        if start >= settings.epochs:
            say(f"supernet: loaded the trained supernet from {checkpoint} ({start}/{settings.epochs} epochs)")
        else:
            say(f"supernet: resuming from {checkpoint} after epoch {start}/{settings.epochs}")
    result = TrainResult(history=history, resumed_from=start)
    t_start = time.perf_counter()
    largest, smallest = supernet.largest(), supernet.smallest()
    devices = [dev.index or 0] if dev.type == "cuda" else []
    for epoch in range(start, settings.epochs):
        t0 = time.perf_counter()
        lr = settings.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        supernet.train()
        rng = np.random.default_rng([settings.seed, epoch])
        sums = np.zeros(4)
        n = n_others = 0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(settings.seed * 100_003 + epoch)
            for x, y in _usable(batches(epoch)):
                x, y = x.to(dev), y.to(dev)
                opt.zero_grad(set_to_none=True)
                shaped = input_for or (lambda t, _arch: t)
                logits = supernet(shaped(x, largest), largest)
                loss = F.cross_entropy(logits, y)
                _check_finite(loss, "largest", epoch)
                loss.backward()
                soft = F.softmax(logits.detach(), dim=1)
                sums[0] += float(loss.detach()) * len(y)
                sums[2] += float((logits.argmax(1) == y).sum())
                others = [smallest] + [supernet.sample(rng) for _ in range(settings.random_subnets)]
                for i, arch in enumerate(others):
                    out = supernet(shaped(x, arch), arch)
                    if settings.distill:
                        loss = -(soft * F.log_softmax(out, dim=1)).sum(1).mean()
                    else:
                        loss = F.cross_entropy(out, y)
                    _check_finite(loss, "smallest" if i == 0 else "random", epoch)
                    loss.backward()
                    sums[1] += float(loss.detach()) * len(y)
                    if i == 0:
                        sums[3] += float((out.argmax(1) == y).sum())
                torch.nn.utils.clip_grad_norm_(supernet.parameters(), settings.clip)
                opt.step()
                n += len(y)
                n_others += len(y) * len(others)
        entry = EpochLog(
            epoch=epoch + 1,
            lr=lr,
            loss_largest=float(sums[0] / max(1, n)),
            loss_others=float(sums[1] / max(1, n_others)),
            train_acc_largest=float(100.0 * sums[2] / max(1, n)),
            train_acc_smallest=float(100.0 * sums[3] / max(1, n)),
            seconds=time.perf_counter() - t0,
        )
        history.append(entry)
        if checkpoint is not None:
            save_checkpoint(checkpoint, supernet, opt, epoch + 1, history, ident)
        done = epoch + 1 - start
        eta = (time.perf_counter() - t_start) / done * (settings.epochs - epoch - 1)
        say(
            f"supernet epoch {epoch + 1}/{settings.epochs}: loss {entry.loss_largest:.3f} (largest) "
            f"{entry.loss_others:.3f} (others), train acc {entry.train_acc_largest:.1f} % largest "
            f"{entry.train_acc_smallest:.1f} % smallest, {entry.seconds:.1f} s, about {eta / 60:.1f} min left"
        )
        if after_epoch is not None:
            after_epoch(epoch + 1)
    result.seconds = time.perf_counter() - t_start
    return result


def _usable(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Skip a batch of one sample: BatchNorm cannot train on it (1x1 feature maps, one value per channel)."""
    for x, y in batches:
        if len(y) >= 2:
            yield x, y


def _check_finite(loss: torch.Tensor, which: str, epoch: int) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"supernet loss of the {which} subnet is {value} in epoch {epoch + 1}; lower the learning rate (--lr)")


def _optimizer(supernet: torch.nn.Module, settings: SupernetSettings) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on conv and linear weights only (not BatchNorm, biases, kernel transforms)."""
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, p in supernet.named_parameters():
        (decay if name.endswith("conv.weight") or name == "classifier.weight" else plain).append(p)
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=settings.momentum > 0)


def _identity(settings: SupernetSettings, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {"settings": asdict(settings), **(extra or {})}


def save_checkpoint(
    path: Path, supernet: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int, history: list[EpochLog], identity: dict[str, Any]
) -> None:
    """Write the training state to ``path`` atomically (a crash leaves the previous checkpoint intact)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "identity": identity,
        "epoch": epoch,
        "model": supernet.state_dict(),
        "optimizer": opt.state_dict(),
        "history": [asdict(h) for h in history],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | None, identity: dict[str, Any] | None = None, *, map_location: str = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when there is none), loaded with ``weights_only=True``.

    Raises:
        UsageError: unreadable, not a supernet checkpoint, or (when ``identity`` is given) written with other settings.
    """
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, unsupported global)
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UsageError(f"cannot read supernet checkpoint {path} ({why}); delete it to train the supernet again") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise UsageError(f"{path} is not a version-{CHECKPOINT_VERSION} hwnas supernet checkpoint; delete it or pick another --out")
    if identity is not None and state.get("identity") != identity:
        old = state.get("identity") or {}
        key, was, now = _first_difference(old, identity)
        raise UsageError(
            f"{path} holds a supernet trained with {key}={was!r}, not {now!r}; rerun with the same settings to resume, "
            "or delete the checkpoint (or pick another --out) to train a new one"
        )
    return state


def _first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> tuple[str, Any, Any]:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{key}.")
            return f"{prefix}{key}", a, b
    return prefix.rstrip(".") or "?", old, new


def recalibrate_batchnorm(module: torch.nn.Module, run: Callable[[torch.Tensor], Any], images: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``images`` batches.

    ``run(x)`` does one forward pass (e.g. ``lambda x: supernet(x, arch)``). Other layers stay
    in eval mode (no dropout); the module is left in eval mode. Returns the number of images seen.
    """
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.eval()
    for bn in bns:
        bn.train()
    seen = 0
    try:
        with torch.no_grad():
            for x in images:
                run(x)
                seen += len(x)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        module.eval()
    return seen
