"""The final training of a searched network: the recipe, checkpoints every epoch, resume.

A search trains its candidates briefly (or scores them with a supernet's shared weights); the
network a user deploys is trained once more, fully, with a recipe a practitioner would accept:

* SGD with Nesterov momentum 0.9 (or AdamW), weight decay 5e-4 (not on BatchNorm and biases);
* a linear warm-up over the first epochs, then a cosine decay to zero, stepped every batch;
* cross-entropy with label smoothing 0.1;
* augmentation sized to the images: a random shift of up to 1/8 of the side (zero padding and a
  random crop back to size) for every size; random horizontal flips only on request (``flip``),
  since they change the meaning of digits, letters and many sensor images.

The state (weights, optimizer, epoch, curve) is written atomically after every epoch. Each epoch's
shuffling and augmentation are drawn from the seed and the epoch number alone, so a run killed
at any moment and resumed from its checkpoint ends with the same weights as one never stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hwnas import final_defaults as defaults
from hwnas.errors import UsageError
from hwnas.search.progress import clock_text

OPTIMIZERS = ("sgd", "adamw")
#: A checkpoint written with other settings, another network or other data is not resumed.
CHECKPOINT_SCHEMA = "hwnas.final.checkpoint/1"
#: Fewer optimizer steps than this in all for a network trained from scratch: warned about before training.
MIN_STEPS = 600
#: Fewer training images per class than this: warned about before training.
MIN_PER_CLASS = 50


@dataclass(frozen=True)
class FinalSettings:
    """How the final network is trained (all of it is part of the checkpoint's identity)."""

    epochs: int = defaults.EPOCHS
    batch: int = defaults.BATCH
    lr: float = defaults.LR
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    #: Random horizontal flips (off by default: they change the meaning of digits and text).
    flip: bool = False
    clip: float = 5.0
    seed: int = 0
    device: str = "cpu"

    def check(self) -> None:
        """UsageError naming the first bad setting and a valid example."""
        for name, low, example in (("epochs", 1, "--epochs 60"), ("batch", 2, "--batch 64"), ("warmup_epochs", 0, "3")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UsageError(f"final training: {name} {v!r} is invalid, it must be a whole number >= {low}; e.g. {example}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"final training: lr {self.lr!r} is invalid, it must be a finite number > 0; e.g. --lr 0.05")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"final training: optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}; e.g. --optimizer sgd")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"final training: label smoothing {self.label_smoothing!r} must be in [0, 1)")

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to 0."""
        total = self.epochs * steps_per_epoch
        warm = min(self.warmup_epochs * steps_per_epoch, max(0, total - 1))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    valid_accuracy: float
    valid_loss: float
    seconds: float


@dataclass
class FinalResult:
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0


def data_warnings(n_train: int, num_classes: int, settings: FinalSettings) -> list[str]:
    """What to say before a training that the data is too small for (each a line), else []."""
    out = []
    per_class = n_train / max(1, num_classes)
    steps = settings.epochs * math.ceil(n_train / settings.batch)
    if per_class < MIN_PER_CLASS:
        out.append(
            f"warning: only {n_train} training images for {num_classes} classes ({per_class:.0f} a class): a network trained from "
            f"scratch on so few is likely to stay near chance ({100 / num_classes:.0f} %) or to overfit; at least {MIN_PER_CLASS} "
            "a class is a floor, hundreds are better"
        )
    if steps < MIN_STEPS:
        want = math.ceil(MIN_STEPS / max(1, math.ceil(n_train / settings.batch)))
        out.append(
            f"warning: {settings.epochs} epochs of {math.ceil(n_train / settings.batch)} batches are {steps} optimizer steps, "
            f"too few for a network trained from scratch (it may end near chance); use --epochs {want} or more, or a smaller --batch"
        )
    return out


def augment(x: torch.Tensor, gen: torch.Generator, *, flip: bool) -> torch.Tensor:
    """A random shift of each image by up to 1/8 of its side (zero padding, then a random crop back
    to size), and a random horizontal flip of half of them when ``flip``."""
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = shifted.gather(3, cols)
    if flip:
        mirror = torch.rand(n, generator=gen) < 0.5
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the convolution and linear weights only (not BatchNorm, not biases)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, s: FinalSettings) -> torch.optim.Optimizer:
    groups = _param_groups(model, s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr)
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=True)


Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def estimate_seconds(model: torch.nn.Module, example: torch.Tensor, steps_per_epoch: int, s: FinalSettings, valid_images: int) -> float:
    """Seconds the training will take, from timing a few steps on a copy of ``model`` (one batch ``example``)."""
    import copy

    probe = copy.deepcopy(model).to(s.device).train()
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    x = example.to(s.device)
    y = torch.zeros(len(x), dtype=torch.long, device=s.device)
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(probe(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[1:]))
    evaluation = step / 3 * valid_images / max(1, len(x))  # a forward pass is about a third of a step
    return s.epochs * (steps_per_epoch * step + evaluation)


def train_final(
    model: torch.nn.Module,
    batches: Batches,
    steps_per_epoch: int,
    validate: Callable[[torch.nn.Module], tuple[float, float]],
    s: FinalSettings,
    *,
    checkpoint: Path | None,
    identity: dict[str, Any],
    log: Callable[[str], None],
    progress_every_s: float = 10.0,
) -> FinalResult:
    """Train ``model`` in place; resume from ``checkpoint`` where it holds an earlier part of the same training.

    Args:
        batches: ``batches(epoch)``: that epoch's (x, y) mini-batches, shuffled from the seed and the epoch.
        steps_per_epoch: how many batches an epoch has (for the schedule).
        validate: ``validate(model) -> (accuracy %, loss)`` on the validation split.
        identity: JSON-safe facts a checkpoint must match to be resumed (the network, the data).

    Raises:
        UsageError: the checkpoint is unreadable, or was written for another training.
        FloatingPointError: the loss became NaN or infinite.
    """
    s.check()
    dev = torch.device(s.device)
    model.to(dev)
    opt = make_optimizer(model, s)
    ident = {"schema": CHECKPOINT_SCHEMA, "settings": asdict(s) | {"device": None}, **identity}
    result = FinalResult()
    start = 0
    state = _load(checkpoint, ident) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        result.history = [EpochRecord(**h) for h in state["history"]]
        result.resumed_from = start
        log(f"final training: resuming from {checkpoint} after epoch {start}/{s.epochs}")
    t_start = last = time.perf_counter()
    devices = [dev.index or 0] if dev.type == "cuda" else []
    for epoch in range(start, s.epochs):
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)
        total_loss = 0.0
        correct = n = 0
        lr = s.lr_at(epoch * steps_per_epoch, steps_per_epoch)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s.seed * 1_000_033 + epoch)
            for i, (x, y) in enumerate(batches(epoch)):
                lr = s.lr_at(epoch * steps_per_epoch + i, steps_per_epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                x = augment(x, gen, flip=s.flip).to(dev)
                y = y.to(dev)
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = F.cross_entropy(out, y, label_smoothing=s.label_smoothing)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"the loss is {value} in epoch {epoch + 1}; a lower --lr may help, e.g. --lr {s.lr / 10:g}")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
                opt.step()
                total_loss += value * len(y)
                correct += int((out.detach().argmax(1) == y).sum())
                n += len(y)
                now = time.perf_counter()
                if now - last >= progress_every_s:
                    log(_progress(epoch, i + 1, steps_per_epoch, s.epochs, start, t_start, now, total_loss / max(1, n)))
                    last = now
        valid_acc, valid_loss = validate(model)
        rec = EpochRecord(
            epoch + 1, lr, total_loss / max(1, n), 100.0 * correct / max(1, n), valid_acc, valid_loss, time.perf_counter() - t0
        )
        result.history.append(rec)
        if checkpoint is not None:
            _save(checkpoint, model, opt, epoch + 1, result.history, ident)
        now = time.perf_counter()
        done = epoch + 1 - start
        eta = (now - t_start) / done * (s.epochs - epoch - 1)
        if now - last >= progress_every_s or epoch + 1 == s.epochs or epoch == start:
            log(
                f"final training: epoch {epoch + 1}/{s.epochs}, loss {rec.train_loss:.4f}, valid {valid_acc:.2f} % "
                f"({clock_text(now - t_start)} elapsed, eta {clock_text(eta)})"
            )
            last = now
    result.seconds = time.perf_counter() - t_start
    return result


def _progress(epoch: int, step: int, steps: int, epochs: int, start: int, t_start: float, now: float, loss: float) -> str:
    done = (epoch - start) + step / max(1, steps)
    eta = (now - t_start) / max(1e-9, done) * (epochs - epoch - step / max(1, steps))
    where = f"epoch {epoch + 1}/{epochs} ({step}/{steps} batches)"
    return f"final training: {where}, loss {loss:.4f} ({clock_text(now - t_start)} elapsed, eta {clock_text(eta)})"


def _save(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int, history: list[EpochRecord], ident: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    state = {
        "identity": ident,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "history": [asdict(h) for h in history],
    }
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def _load(path: Path, ident: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise UsageError(f"cannot read the checkpoint {path} ({exc.__class__.__name__}); delete it to train from the start") from None
    if not isinstance(state, dict) or state.get("identity") != ident:
        raise UsageError(
            f"checkpoint {path} is of another training (other settings, network or data); delete it to train anew, "
            "or rerun with the settings it was written with"
        )
    return state
