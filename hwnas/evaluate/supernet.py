"""The ``supernet`` evaluator: candidates inherit their weights from one Once-for-All supernet.

One elastic supernet of the space (:meth:`~hwnas.spaces.SearchSpace.elastic_supernet`; for
mbconv :mod:`hwnas.ofa`: elastic width, depth, kernel and expansion) is trained once with the
sandwich rule on the training split of ``--data``, lazily at the first evaluation, checkpointed
every epoch to ``<run folder>/supernet.pt`` (a rerun resumes it). A candidate is then scored in
well under a second: its subnet's BatchNorm statistics are re-estimated on a fixed set of
training images (the shared running statistics fit no single subnet) and its accuracy is
measured on the validation split. The test split is never used here.

Every width, depth, kernel and expansion of the space inherits weights; each subnet takes the
images resized to its arch's resolution, in training (Once-for-All's elastic resolution), in
scoring and in deployment: the network that is timed is the one that is scored and exported.
:meth:`SupernetEvaluator.build_trained` gives the search the candidate with its inherited weights,
so ``best.onnx`` is the network that was scored.

Options (``SearchConfig.evaluator_options``): ``epochs`` (supernet training epochs), ``batch``,
``lr``; any other is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hwnas.errors import UsageError
from hwnas.evaluate import Accuracy, EvalContext, check_train_device
from hwnas.registry import did_you_mean
from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import torch

    from hwnas.ofa.elastic import ElasticMBConvNet
    from hwnas.ofa.train import SupernetSettings

#: The options a user may set (``--epochs``, ``--batch``, ``--lr``).
OPTIONS = ("epochs", "batch", "lr")
#: Split seed of :func:`~hwnas.datasets.evaluation_splits` (as the ``train`` evaluator: one split for every seed).
SPLIT_SEED = 0
#: Training images that re-estimate a subnet's BatchNorm statistics (the same ones for every candidate).
RECALIBRATION_IMAGES = 640
CHECKPOINT_NAME = "supernet.pt"


@dataclass(frozen=True)
class TrainedNetwork:
    """A candidate with trained weights, for export.

    Attributes:
        model: the space's own network (``MBConvNet``) on the CPU, in eval mode.
        input_shape: (C, H, W) it is deployed and timed at (H = W = the arch's resolution).
        data_shape: (C, H, W) of the images it was trained and scored on.
        weights: where the weights come from, in words.
    """

    model: torch.nn.Module
    input_shape: tuple[int, int, int]
    data_shape: tuple[int, int, int]
    weights: str


def resolve_options(options: dict[str, Any], *, seed: int = 0) -> SupernetSettings:
    """The supernet training settings with the user's ``epochs``, ``batch`` and ``lr`` (None: the default) and ``seed``.

    Raises:
        UsageError: an option other than those, or a bad value.
    """
    from hwnas.ofa.train import SupernetSettings

    for name in options:
        if name not in OPTIONS:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"evaluator 'supernet' does not take {flag}{did_you_mean(name, list(OPTIONS))}: it trains one supernet with the sandwich "
                f"rule; its options are --epochs, --batch and --lr (or use --evaluator train)"
            )
    given = {k: v for k, v in options.items() if v is not None}
    defaults = SupernetSettings()
    for name, low in (("epochs", 1), ("batch", 2)):  # BatchNorm cannot train on batches of one
        v = given.get(name, getattr(defaults, name))
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            example = getattr(defaults, name)
            raise UsageError(f"evaluator 'supernet': {name} {v!r} is invalid, it must be a whole number >= {low}; e.g. --{name} {example}")
    lr = given.get("lr", defaults.lr)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UsageError(f"evaluator 'supernet': lr {lr!r} is invalid, it must be a finite number > 0; e.g. --lr {defaults.lr:g}")
    return SupernetSettings(**{**asdict(defaults), **given, "lr": float(lr), "seed": seed})


class SupernetEvaluator:
    """Weight-sharing evaluation (Once-for-All, Cai et al., ICLR 2020) of the candidates of a space with an elastic supernet."""

    name = "supernet"
    trains_on_data = True

    def __init__(self, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> None:
        if not space.offers("elastic_supernet"):
            from hwnas.spaces import SPACES

            elastic = " and ".join(n for n in SPACES.names() if SPACES.get(n).offers("elastic_supernet")) or "no registered space"
            tables = " and ".join(n for n in SPACES.names() if SPACES.get(n).benchmark() is not None)
            table = f" (or --evaluator table for {tables})" if tables else ""
            raise UsageError(
                f"evaluator 'supernet' trains an elastic supernet of space {elastic} only, not {space.name!r}; use --evaluator train{table}"
            )
        self.space = space
        self.context = context or EvalContext()
        check_train_device(self.context.train_device)
        self.settings = resolve_options(options, seed=self.context.seed)
        from hwnas.datasets import evaluation_splits
        from hwnas.evaluate.train import data_space

        self.data = self.context.load_data()
        self.train, self.valid, self.test = evaluation_splits(self.data, SPLIT_SEED)
        self.local = data_space(space, self.data)
        out = self.context.out_dir
        self.checkpoint = None if out is None else out / CHECKPOINT_NAME
        self._supernet: ElasticMBConvNet | None = None
        self._recorded = False
        self.train_seconds: float | None = None

    # -- words -------------------------------------------------------------------
    def source(self) -> str:
        s = self.settings
        _, h, w = self.data.input_shape
        distill = ", in-place distillation" if s.distill else ""
        return (
            f"supernet: inherited weights from an OFA supernet ({s.epochs} epochs, sandwich rule: largest + smallest + "
            f"{s.random_subnets} random{distill}) on {self.data.name}, {h}x{w} images resized to each subnet's input, "
            f"BN recalibrated on {self._recalibration_count()} training images, validation split ({len(self.valid)} images)"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "evaluator": self.name,
            **asdict(self.settings),
            "data": self.context.data,
            "data_name": self.data.name,
            "data_source": self.data.source,
            "split": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test), "seed": SPLIT_SEED},
            "recalibration_images": self._recalibration_count(),
            "train_device": self.context.train_device,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "supernet_train_seconds": None if self.train_seconds is None else round(self.train_seconds, 1),
            "signal": "validation accuracy (%) with weights inherited from the supernet; the test split is not used during the search",
            "source": self.source(),
        }

    # -- the supernet --------------------------------------------------------------
    def supernet(self) -> ElasticMBConvNet:
        """The trained supernet: trained (or resumed, or loaded) on the first call."""
        if self._supernet is not None:
            return self._supernet
        import torch

        from hwnas.darts.train import default_threads
        from hwnas.datasets import batches
        from hwnas.ofa.train import train_supernet

        s, say = self.settings, self.context.log
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            net = cast("ElasticMBConvNet", self.local.elastic_supernet(kernel_transform=s.kernel_transform))
        weights = sum(p.numel() for p in net.parameters())
        say(
            f"supernet: OFA supernet of {self.local.name} ({weights:,} weights) on {self.data.name} ({len(self.train)} training images, "
            f"{'x'.join(map(str, self.data.input_shape))}), {s.epochs} epochs, batch {s.batch}, lr {s.lr:g}, sandwich rule "
            f"(largest + smallest + {s.random_subnets} random), on {self.context.train_device}; checkpoint {self.checkpoint}"
        )
        threads = torch.get_num_threads()
        if self.context.train_device == "cpu":
            torch.set_num_threads(default_threads())
        t0 = time.perf_counter()
        try:
            with _lock(self.checkpoint):  # other workers of this run folder wait, then load what this one trained
                train_supernet(
                    net,
                    lambda e: batches(self.train, s.batch, shuffle=True, seed=s.seed * 100_003 + e),
                    s,
                    checkpoint=self.checkpoint,
                    identity=self._identity(),
                    device=self.context.train_device,
                    log=say,
                    input_for=self._input_for,
                )
        except FloatingPointError as exc:
            raise UsageError(f"supernet training diverged: {exc}") from None
        finally:
            torch.set_num_threads(threads)
        self.train_seconds = time.perf_counter() - t0
        net.eval()
        self._supernet = net
        for label, arch in (("largest", net.largest()), ("smallest", net.smallest())):
            say(f"supernet: {label} subnet {self._score(arch):.2f} % on the validation split (BN recalibrated)")
        return net

    def _size(self, arch: Arch) -> int | None:
        """The side ``arch``'s subnet takes the images at (None: their own size)."""
        from hwnas.evaluate.train import input_size

        return input_size(self.local, arch, self.data)

    def _input_for(self, x: torch.Tensor, arch: Arch) -> torch.Tensor:
        """A batch as ``arch``'s subnet takes it: resized to its input (bilinear, antialiased)."""
        import torch.nn.functional as F

        size = self._size(arch)
        if size is None or tuple(x.shape[2:]) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def _identity(self) -> dict[str, Any]:
        """What else a checkpoint must match to be resumed: the data and its split."""
        return {
            "space": self.local.name,
            "data": self.context.data,
            "num_classes": self.data.num_classes,
            "input_shape": list(self.data.input_shape),
            "train_images": len(self.train),
            "split_seed": SPLIT_SEED,
            "subnet_input": "resized to the arch's resolution",
        }

    def _recalibration_count(self) -> int:
        return min(RECALIBRATION_IMAGES, len(self.train))

    def _recalibrate(self, arch: Arch) -> None:
        """Re-estimate the supernet's BatchNorm statistics for ``arch`` on the fixed recalibration images."""
        from hwnas.datasets import batches
        from hwnas.ofa.train import recalibrate_batchnorm

        net = self.supernet()
        dev = self.context.train_device
        # The first images of the seeded order, decoded alone (an image folder is never read whole).
        x_all, _ = next(batches(self.train, self._recalibration_count(), shuffle=True, seed=self.settings.seed, size=self._size(arch)))
        images = (x_all[i : i + self.settings.batch].to(dev) for i in range(0, len(x_all), self.settings.batch))
        recalibrate_batchnorm(net, lambda x: net(x, arch), (x for x in images if len(x) >= 2))

    def _score(self, arch: Arch) -> float:
        """Validation accuracy (%) of ``arch`` with inherited weights, BN recalibrated."""
        self._recalibrate(arch)
        return self._accuracy(arch, self.valid)

    def _accuracy(self, arch: Arch, ds: Any) -> float:
        """Top-1 accuracy (%) of ``arch``'s subnet (BN recalibrated already) on ``ds``."""
        import torch

        from hwnas.datasets import batches

        net = self.supernet()
        dev = self.context.train_device
        correct = n = 0
        with torch.no_grad():
            for x, y in batches(ds, 256, shuffle=False, size=self._size(arch)):
                out = net(x.to(dev), arch)
                correct += int((out.argmax(1).cpu() == y).sum())
                n += len(y)
        return 100.0 * correct / max(1, n)

    def test_accuracy(self, arch: Arch) -> tuple[float | None, str]:
        """Top-1 accuracy (%) of ``arch`` with inherited weights on the held-out test split."""
        if len(self.test) == 0:
            return None, f"{self.data.name} has no test split"
        arch = self.space.validate(arch)
        self._recalibrate(arch)
        value = self._accuracy(arch, self.test)
        return value, f"held-out test split of {self.data.name} ({len(self.test)} images), inherited weights, never used by the search"

    # -- the evaluator interface -------------------------------------------------------
    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        arch = self.space.validate(arch)
        t0 = time.perf_counter()
        value = self._score(arch)
        if trial is not None and not self._recorded and hasattr(trial, "study"):
            trial.study.set_user_attr("supernet", self.describe())  # the resolved settings, once per run
            self._recorded = True
        extras = {
            "supernet_epochs": self.settings.epochs,
            "supernet_checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "evaluate_seconds": round(time.perf_counter() - t0, 3),
        }
        return Accuracy(value=value, source=self.source(), extras=extras)

    def scored_network(self, arch: Arch) -> TrainedNetwork:
        """The network :meth:`evaluate` scored (its INT8 accuracy is measured on it, see :mod:`hwnas.evaluate.quantized`)."""
        return self.build_trained(arch)

    def build_trained(self, arch: Arch) -> TrainedNetwork:
        """``arch`` as the space's network with the weights and recalibrated BatchNorm it was scored with."""
        arch = self.space.validate(arch)
        net = self.supernet()
        self._recalibrate(arch)
        model = net.subnet(arch).cpu().eval()
        s = self.settings
        return TrainedNetwork(
            model=model,
            input_shape=self.local.input_shape(arch),
            data_shape=self.local.input_shape(arch),  # the images are resized to it to train and score it
            weights=(
                f"inherited from an OFA supernet trained {s.epochs} epochs on {self.data.name} (seed {s.seed}), BatchNorm recalibrated "
                f"on {self._recalibration_count()} training images; {self.data.num_classes} classes, "
                f"{self.data.input_shape[0]} input channel(s)"
            ),
        )


@contextmanager
def _lock(checkpoint: Path | None) -> Iterator[None]:
    """An exclusive lock next to the checkpoint among the processes of this machine (none without fcntl or a run folder)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if checkpoint is None or fcntl is None:
        yield
        return
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with open(checkpoint.with_name(checkpoint.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
