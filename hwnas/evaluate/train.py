"""The ``train`` evaluator: every candidate is trained briefly on the user's data (``--data``) and
the search sees its accuracy on the validation split.

The data is loaded once and split by :func:`hwnas.datasets.evaluation_splits` (split seed 0, so
runs with different seeds share one split): candidates train on ``train``, the search sees
``valid``, and ``test`` is never touched here (it is kept for final checks). The network is built
for the data's channels and classes. A candidate starts from the run's seed, so the same seed and
arch give the same accuracy.

Multi-fidelity: Optuna's pruners (median; successive halving, Li et al., MLSys 2020) judge one
objective, and the search study has two (accuracy, latency), so a side study
``<study>.fidelity`` in the same storage (shared by every worker) holds one trial per trained
candidate with its validation accuracy per epoch; the pruner decides there and the search trial
is recorded as pruned. A diverged training (NaN or infinite loss) raises
:class:`~hwnas.evaluate.EvaluationFailed`: that trial fails and the search goes on.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwnas.errors import UsageError
from hwnas.evaluate import Accuracy, EvalContext, EvaluationFailed, check_train_device
from hwnas.registry import did_you_mean
from hwnas.spaces import Arch, SearchSpace

if TYPE_CHECKING:
    import optuna
    import torch

    from hwnas.datasets import Dataset
    from hwnas.training import TrainSettings

#: Defaults, chosen on the shipped digits data on a 2-core machine (see the README).
DEFAULTS: dict[str, Any] = {
    "epochs": 8,
    "batch": 64,
    "lr": 0.05,
    "optimizer": "sgd",
    "schedule": "cosine",
    "weight_decay": 5e-4,
    "pruner": "none",
}
PRUNERS = ("none", "median", "halving")
#: MedianPruner: no pruning before 5 candidates have completed, and a candidate is judged from the
#: middle of its training on: on digits most networks are still at chance level in eval mode after
#: epoch 1 and their ranking settles only halfway through the cosine schedule.
MEDIAN_STARTUP = 5
#: SuccessiveHalvingPruner (asynchronous): rungs at epochs/4, epochs/2, ...; the top half goes on.
HALVING_FACTOR = 2
#: Split seed of :func:`~hwnas.datasets.evaluation_splits`: fixed, so seeds share one split.
SPLIT_SEED = 0
#: Seconds between progress lines while a candidate trains.
PROGRESS_EVERY_S = 10.0
#: Folder of the run where each trained candidate's weights are kept (for its export and ``hwnas train``).
WEIGHTS_DIR = "weights"


def pruner_settings(pruner: str, epochs: int) -> dict[str, int] | None:
    """Keyword arguments of the Optuna pruner ``pruner`` for ``epochs`` epochs (None for ``none``)."""
    if pruner == "median":
        return {"n_startup_trials": MEDIAN_STARTUP, "n_warmup_steps": max(1, epochs // 2), "interval_steps": 1}
    if pruner == "halving":
        return {"min_resource": max(1, epochs // 4), "reduction_factor": HALVING_FACTOR, "min_early_stopping_rate": 0}
    return None


def _example(name: str) -> str:
    value = DEFAULTS[name]
    return f"--{name} {value}" if name in ("epochs", "batch", "lr", "optimizer", "schedule", "pruner") else f"{name}={value!r}"


def resolve_options(options: dict[str, Any]) -> dict[str, Any]:
    """The defaults updated by ``options``, each checked.

    Raises:
        UsageError: for an unknown option or a bad value, naming the option, the value and an example.
    """
    if "resolution" in options:
        raise UsageError(
            "evaluator 'train' has no option 'resolution' any more: a network is trained at the input it is timed and deployed at "
            "(the data's size, or the arch's resolution in a space that searches it); drop it"
        )
    for name in options:
        if name not in DEFAULTS:
            valid = sorted(DEFAULTS)
            raise UsageError(f"evaluator 'train' has no option {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    out = DEFAULTS | options

    def bad(name: str, rule: str) -> UsageError:
        return UsageError(f"evaluator 'train': {name} {out[name]!r} is invalid, it must be {rule}; e.g. {_example(name)}")

    for name in ("epochs", "batch"):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(name, "a whole number >= 1")
    for name, positive in (("lr", True), ("weight_decay", False)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise bad(name, "a finite number > 0" if positive else "a finite number >= 0")
        out[name] = float(v)
    from hwnas.training import OPTIMIZERS, SCHEDULES

    choices: dict[str, tuple[str, ...]] = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "pruner": PRUNERS}
    for name, allowed in choices.items():
        if out[name] not in allowed:
            raise bad(name, " | ".join(allowed))
    return out


class TrainEvaluator:
    """Short stand-alone training of each candidate; the signal is its validation accuracy."""

    name = "train"
    trains_on_data = True

    def __init__(self, space: SearchSpace, *, context: EvalContext | None = None, **options: Any) -> None:
        self.options = resolve_options(options)
        self.context = context or EvalContext()
        check_train_device(self.context.train_device)
        from hwnas.datasets import evaluation_splits

        self.data = self.context.load_data()
        self.train, self.valid, self.test = evaluation_splits(self.data, SPLIT_SEED)
        # Fail now, not at the first trial, when the space cannot be built for this data.
        self.space = data_space(space, self.data)
        self.space.build(self.space.smallest())
        self._side: optuna.Study | None = None
        #: The last network trained: (arch string, module, image side or None), for :meth:`scored_network`.
        self._scored: tuple[str, torch.nn.Module, int | None] | None = None

    # -- settings ----------------------------------------------------------------
    def settings(self) -> TrainSettings:
        from hwnas.training import TrainSettings

        o = self.options
        return TrainSettings(
            epochs=o["epochs"],
            lr=o["lr"],
            weight_decay=o["weight_decay"],
            optimizer=o["optimizer"],
            schedule=o["schedule"],
            seed=self.context.seed,
            device=self.context.train_device,
        )

    def _input_size(self, arch: Arch) -> int | None:
        """The side length images are resized to for ``arch`` (the network's input, where that is
        not the images' own size), or None for their own size."""
        return input_size(self.space, arch, self.data)

    def source(self, arch: Arch) -> str:
        o = self.options
        text = (
            f"train: {o['epochs']} epochs {o['optimizer'].upper()} {o['schedule']} lr {o['lr']:g} batch {o['batch']} "
            f"on {self.data.name}, validation split ({len(self.valid)} images)"
        )
        size = self._input_size(arch)
        if size is not None:
            _, h, w = self.data.input_shape
            text += f", images resized from {h}x{w} to {size}x{size} (the network's input)"
        return text

    # -- the trained networks ------------------------------------------------------
    def _weights_path(self, text: str) -> Path | None:
        """Where the weights a candidate trained to are kept (None outside a run folder)."""
        out = self.context.out_dir
        if out is None:
            return None
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        return out / WEIGHTS_DIR / f"{digest}.pt"

    def _keep(self, text: str, model: torch.nn.Module) -> None:
        import torch

        path = self._weights_path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"arch": text, "state_dict": model.state_dict(), "seed": self.context.seed, "options": dict(self.options)}, tmp)
        tmp.replace(path)

    def _trained_model(self, arch: Arch) -> tuple[torch.nn.Module, str]:
        """``arch``'s network with the weights its evaluation trained (read back from the run folder,
        or trained again, the same way: the same seed gives the same weights) and how they were got."""
        import torch

        text = self.space.to_string(self.space.validate(arch))
        if self._scored is not None and self._scored[0] == text:
            return self._scored[1], "kept from its evaluation"
        path = self._weights_path(text)
        if path is not None and path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                model = self.space.build(arch)
                model.load_state_dict(blob["state_dict"])
                if blob.get("arch") == text:
                    return model, f"kept from its evaluation in {path}"
            except (OSError, RuntimeError, KeyError, ValueError, TypeError):
                pass  # a damaged or foreign file: train it again below
        self.context.log(f"  train {text}: its weights were not kept; training it again the same way (seed {self.context.seed})")
        self.evaluate(arch)
        assert self._scored is not None
        return self._scored[1], "trained again the same way (its weights had not been kept)"

    def build_trained(self, arch: Arch) -> Any:
        """``arch``'s network with the weights its evaluation trained (a :class:`TrainedNetwork`)."""
        from hwnas.evaluate.supernet import TrainedNetwork

        model, how = self._trained_model(arch)
        shape = tuple(self.space.input_shape(arch))
        o = self.options
        weights = (
            f"trained {o['epochs']} epochs ({o['optimizer'].upper()} {o['schedule']} lr {o['lr']:g}, seed {self.context.seed}) on the "
            f"training split of {self.data.name} ({len(self.train)} images) during the search, {how}; "
            f"'hwnas train RUN' trains it fully"
        )
        return TrainedNetwork(model=model.cpu().eval(), input_shape=shape, data_shape=shape, weights=weights)  # type: ignore[arg-type]

    def test_accuracy(self, arch: Arch) -> tuple[float | None, str]:
        """Top-1 accuracy (%) of ``arch``'s trained network on the held-out test split."""
        from hwnas.training import accuracy

        if len(self.test) == 0:
            return None, f"{self.data.name} has no test split"
        model, _ = self._trained_model(arch)
        size = self._input_size(arch)
        value = accuracy(model, _batches(self.test, 256, size=size), self.context.train_device)
        return value, f"held-out test split of {self.data.name} ({len(self.test)} images), never used by the search"

    def scored_network(self, arch: Arch) -> Any:
        """The network the last :meth:`evaluate` trained, if it was ``arch`` (else None): its INT8
        accuracy is measured on it (:mod:`hwnas.evaluate.quantized`)."""
        from hwnas.evaluate.quantized import ScoredNetwork

        text = self.space.to_string(self.space.validate(arch))
        if self._scored is None or self._scored[0] != text:
            return None
        return ScoredNetwork(self._scored[1], tuple(self.data.input_shape), self._scored[2])

    def describe(self) -> dict[str, Any]:
        o = self.options
        return {
            "evaluator": self.name,
            **o,
            "pruner_settings": pruner_settings(o["pruner"], o["epochs"]),
            "momentum": self.settings().momentum if o["optimizer"] == "sgd" else None,
            "clip_grad_norm": self.settings().clip,
            "data": self.context.data,
            "data_name": self.data.name,
            "data_source": self.data.source,
            "split": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test), "seed": SPLIT_SEED},
            "train_device": self.context.train_device,
            "seed": self.context.seed,
            "signal": "validation accuracy (%) after the last epoch; the test split is not used during the search",
        }

    # -- one candidate -----------------------------------------------------------
    def evaluate(self, arch: Arch, trial: Any = None) -> Accuracy:
        import optuna
        import torch

        from hwnas.darts.train import default_threads
        from hwnas.training import DivergedError, evaluate_classifier, train_classifier

        arch = self.space.validate(arch)
        settings = self.settings()
        size = self._input_size(arch)
        batch = self.options["batch"]
        seed = self.context.seed
        text = self.space.to_string(arch)
        say = self.context.log
        side, side_trial = self._fidelity_trial(trial, text)
        curve: list[float] = []
        t0 = last = time.perf_counter()
        model: torch.nn.Module | None = None

        def on_epoch(epoch: int, loss: float) -> None:
            nonlocal last
            assert model is not None
            acc, valid_loss = evaluate_classifier(model, _batches(self.valid, 256, size=size), settings.device)
            if not math.isfinite(valid_loss):
                raise DivergedError(f"validation loss is {valid_loss} after epoch {epoch}")
            curve.append(acc)
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S:
                say(f"  train {text}: epoch {epoch}/{settings.epochs}, loss {loss:.4f}, valid {acc:.2f} % ({now - t0:.0f} s)")
                last = now
            if side_trial is not None:
                side_trial.report(acc, epoch)
                # Never after the last epoch: the training is paid for, and the candidate may be on the front.
                if epoch < settings.epochs and side_trial.should_prune():
                    raise optuna.TrialPruned(f"validation accuracy {acc:.2f} % after epoch {epoch}")

        threads = torch.get_num_threads()
        if settings.device == "cpu":
            torch.set_num_threads(default_threads())
        try:
            torch.manual_seed(seed)
            model = _network_for(self.space, arch, self.data)
            losses = train_classifier(
                model,
                lambda e: _batches(self.train, batch, seed=1000 * seed + e, size=size),
                settings,
                on_epoch=on_epoch,
            )
        except DivergedError as exc:
            self._tell(side, side_trial, optuna.trial.TrialState.FAIL)
            say(f"  train {text}: diverged ({exc})")
            raise EvaluationFailed(
                f"training diverged: {exc} ({settings.optimizer} lr {settings.lr:g}); a lower --lr may help, e.g. --lr {settings.lr / 10:g}"
            ) from None
        except optuna.TrialPruned as exc:
            self._tell(side, side_trial, optuna.trial.TrialState.PRUNED)
            if trial is not None and curve:
                trial.set_user_attr("pruned_at_epoch", len(curve))
                trial.set_user_attr("valid_accuracy_last", curve[-1])
                trial.set_user_attr("valid_curve", curve)
                trial.set_user_attr("train_seconds", round(time.perf_counter() - t0, 3))
                trial.set_user_attr("accuracy_source", f"pruned by the {self.options['pruner']} pruner: {exc}")
            say(f"  train {text}: pruned by the {self.options['pruner']} pruner, {exc}")
            raise
        except BaseException:
            self._tell(side, side_trial, optuna.trial.TrialState.FAIL)
            raise
        finally:
            torch.set_num_threads(threads)
        self._tell(side, side_trial, optuna.trial.TrialState.COMPLETE, curve[-1])
        if model is not None:
            self._scored = (text, model, size)
            self._keep(text, model)
        extras: dict[str, Any] = {
            "train_epochs": len(curve),
            "train_seconds": round(time.perf_counter() - t0, 3),
            "train_loss": losses[-1],
            "valid_curve": curve,
            "train_settings": {k: self.options[k] for k in ("epochs", "batch", "lr", "optimizer", "schedule", "weight_decay")},
        }
        if side_trial is not None:
            extras["fidelity_trial"] = side_trial.number
        return Accuracy(value=curve[-1], source=self.source(arch), extras=extras)

    # -- the side study of the pruner --------------------------------------------
    def _fidelity_trial(self, trial: Any, text: str) -> tuple[optuna.Study | None, optuna.Trial | None]:
        """The side study and a new trial in it, or (None, None) without a pruner or a search trial."""
        if trial is None or self.options["pruner"] == "none":
            return None, None
        side = self._side_study()
        t = side.ask()
        t.set_user_attr("arch", text)
        number = getattr(trial, "number", None)
        if number is not None:
            t.set_user_attr("search_trial", number)
            trial.set_user_attr("fidelity_trial", t.number)
        return side, t

    def _side_study(self) -> optuna.Study:
        if self._side is None:
            import optuna

            storage = None
            if self.context.storage:
                from hwnas.storage import open_storage

                storage = open_storage(self.context.storage)
            kwargs = pruner_settings(self.options["pruner"], self.options["epochs"]) or {}
            pruner: optuna.pruners.BasePruner
            if self.options["pruner"] == "median":
                pruner = optuna.pruners.MedianPruner(**kwargs)
            else:
                pruner = optuna.pruners.SuccessiveHalvingPruner(**kwargs)
            self._side = optuna.create_study(
                study_name=f"{self.context.study or 'hwnas'}.fidelity",
                storage=storage,
                direction="maximize",
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(seed=self.context.seed),
                load_if_exists=True,
            )
        return self._side

    @staticmethod
    def _tell(side: optuna.Study | None, t: optuna.Trial | None, state: Any, value: float | None = None) -> None:
        if side is not None and t is not None:
            side.tell(t, value, state=state)


def _batches(ds: Dataset, batch: int, seed: int | None = None, size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``ds``, shuffled when a seed is given, resized to ``size`` (an image folder decodes straight at it)."""
    from hwnas.datasets import batches

    return batches(ds, batch, shuffle=seed is not None, seed=seed, size=size)


def data_space(space: SearchSpace, data: Dataset) -> SearchSpace:
    """``space`` built for the data's image channels, image size and number of classes
    (:meth:`~hwnas.spaces.SearchSpace.for_data`; the space itself where it is built for them already).

    Raises:
        UsageError: for a space that builds for fixed inputs that differ from the data's.
    """
    channels, height, width = data.input_shape
    try:
        return space.for_data(in_channels=channels, num_classes=data.num_classes, image_size=(height, width))
    except UsageError as exc:
        raise UsageError(f"cannot build space {space.name!r} for {data.name}: {exc}") from None


def input_size(space: SearchSpace, arch: Arch, data: Dataset) -> int | None:
    """The side the images are resized to for ``arch``'s network (its input), or None where the
    network takes them at their own size."""
    _, h, w = space.input_shape(arch)
    if (h, w) == tuple(data.input_shape[1:]):
        return None
    return int(h)


def _network_for(space: SearchSpace, arch: Arch, data: Dataset) -> torch.nn.Module:
    """``arch`` of ``space`` built for the data (:func:`data_space`)."""
    return data_space(space, data).build(arch)
