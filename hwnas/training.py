"""Plain supervised training of a stand-alone network, and top-1 accuracy. Shared by the DARTS
benchmark (derived vs random networks under the same budget) and the ``train`` evaluator.

Defaults: SGD with Nesterov momentum and a cosine schedule. Also Adam / AdamW, a step schedule
(lr x 0.1 at 50 % and 75 % of the epochs) and a constant one; gradients are clipped by norm.
A per-epoch callback lets a caller validate, report and stop a run (a pruner raises from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    lr: float = 0.05
    #: SGD's (Nesterov) momentum; Adam and AdamW keep their default betas.
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip: float = 5.0
    seed: int = 0
    device: str = "cpu"
    optimizer: str = "sgd"
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def make_optimizer(params: Iterable[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer ``settings.optimizer`` at ``settings.lr`` with ``settings.weight_decay``."""
    s = settings
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=s.momentum > 0)


def make_schedule(opt: torch.optim.Optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to 0 over the epochs, x0.1 at 50 % and 75 % of them, or constant."""
    if settings.schedule == "step":
        e = settings.epochs
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=sorted({math.ceil(0.5 * e), math.ceil(0.75 * e)}), gamma=0.1)
    if settings.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)


def train_classifier(
    model: torch.nn.Module,
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    settings: TrainSettings,
    *,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``batches(epoch)``; return the mean training loss per epoch.

    Args:
        model: trained in place, on ``settings.device``.
        batches: epoch (0-based) -> (x, y) mini-batches.
        settings: optimizer, schedule and budget.
        log: gets one line per epoch.
        on_epoch: called after each epoch (and its schedule step) with the epoch number
            (1-based) and its mean training loss; an exception it raises ends the training.

    Raises:
        DivergedError: on a NaN or infinite loss (the caller decides what a diverged run means).
    """
    torch.manual_seed(settings.seed)
    dev = torch.device(settings.device)
    model.to(dev).train()
    opt = make_optimizer(model.parameters(), settings)
    sched = make_schedule(opt, settings)
    losses = []
    for epoch in range(settings.epochs):
        total, n = 0.0, 0
        for x, y in batches(epoch):
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if not math.isfinite(float(loss.detach())):
                raise DivergedError(f"loss is {float(loss.detach())} at epoch {epoch + 1}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            opt.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        sched.step()
        losses.append(total / max(1, n))
        if log:
            log(f"epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}")
        if on_epoch:
            on_epoch(epoch + 1, losses[-1])
    return losses


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu"
) -> tuple[float, float]:
    """(top-1 accuracy in percent, mean cross-entropy) in eval mode; the loss is NaN when the
    outputs are (a diverged network)."""
    was = model.training
    model.eval()
    dev = torch.device(device)
    n = correct = 0
    total = 0.0
    for x, y in batches:
        y = y.to(dev)
        out = model(x.to(dev))
        correct += int((out.argmax(1) == y).sum())
        total += float(F.cross_entropy(out, y, reduction="sum"))
        n += len(y)
    model.train(was)
    return 100.0 * correct / max(1, n), total / max(1, n)


def accuracy(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu") -> float:
    """Top-1 accuracy in percent, in eval mode."""
    return evaluate_classifier(model, batches, device)[0]
