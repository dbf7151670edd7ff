"""Plain supervised training of a stand-alone network: SGD with Nesterov momentum and a cosine
schedule, and top-1 accuracy. Shared by the DARTS benchmark (derived vs random networks under
the same budget) and training-based evaluators."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip: float = 5.0
    seed: int = 0
    device: str = "cpu"


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def train_classifier(
    model: torch.nn.Module,
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    settings: TrainSettings,
    *,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``batches(epoch)``; return the mean training loss per epoch.

    Raises:
        DivergedError: on a NaN or infinite loss (the caller decides what a diverged run means).
    """
    torch.manual_seed(settings.seed)
    dev = torch.device(settings.device)
    model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
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
    return losses


@torch.no_grad()
def accuracy(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: str = "cpu") -> float:
    """Top-1 accuracy in percent, in eval mode."""
    was = model.training
    model.eval()
    dev = torch.device(device)
    n = correct = 0
    for x, y in batches:
        out = model(x.to(dev))
        correct += int((out.argmax(1) == y.to(dev)).sum())
        n += len(y)
    model.train(was)
    return 100.0 * correct / max(1, n)
