"""The ``train`` evaluator: short training on real data, seeded, pruned through a side study,
diverged candidates as failed trials, and its CLI flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from hwnas.errors import UsageError
from hwnas.evaluate import EVALUATORS, EvalContext, EvaluationFailed, make_evaluator
from hwnas.evaluate import train as train_mod
from hwnas.spaces import get_space
from hwnas.spaces.mbconv import MBConvSpace
from hwnas.spaces.nb201 import NB201Space
from hwnas.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


#: A small NB-201 network (4 channels, 1 cell per stage): an epoch on 240 digits takes a fraction of a second.
TINY = NB201Space(channels=4, cells_per_stage=1)
#: Few images and small batches: enough steps to learn in 3 epochs.
FAST = {"batch": 16}


def cell(op: str) -> dict[str, str]:
    return {d.name: op for d in TINY.dimensions()}


def _digits_npz(folder: Path, per_class: int) -> str:
    from hwnas.datasets import load_data

    ds = load_data("digits")
    idx = np.concatenate([np.flatnonzero(ds.y == c)[:per_class] for c in range(10)])
    path = folder / f"digits{10 * per_class}.npz"
    np.savez(path, x=(ds.x[idx, 0] * 255).round().astype(np.uint8), y=ds.y[idx])
    return f"npz:{path}"


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """400 digits (40 per class): 240 train / 80 valid / 80 test images, enough to learn in 3 epochs."""
    return _digits_npz(tmp_path_factory.mktemp("data"), 40)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """100 digits (10 per class): 60 train / 20 valid / 20 test images, for whole searches."""
    return _digits_npz(tmp_path_factory.mktemp("data"), 10)


# -- options -----------------------------------------------------------------------
def test_registered() -> None:
    assert "train" in EVALUATORS


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"epoch": 3}, ["no option 'epoch'", "did you mean 'epochs'", "valid:"]),
        ({"epochs": 0}, ["epochs 0", "whole number >= 1", "--epochs 8"]),
        ({"batch": 2.5}, ["batch 2.5", "--batch 64"]),
        ({"lr": 0.0}, ["lr 0.0", "> 0", "--lr 0.05"]),
        ({"lr": float("nan")}, ["lr nan", "--lr 0.05"]),
        ({"optimizer": "rmsprop"}, ["optimizer 'rmsprop'", "sgd | adam | adamw", "--optimizer sgd"]),
        ({"schedule": "linear"}, ["schedule 'linear'", "cosine | step | constant"]),
        ({"pruner": "hyperband"}, ["pruner 'hyperband'", "none | median | halving", "--pruner none"]),
        ({"weight_decay": -1}, ["weight_decay -1", ">= 0"]),
        ({"resolution": 128}, ["no option 'resolution' any more", "timed and deployed"]),
    ],
)
def test_bad_options_are_one_line_usage_errors(options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        make_evaluator("train", TINY, **options)
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_train_device_cuda_without_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(UsageError, match="--train-device cuda but torch sees no CUDA GPU"):
        make_evaluator("train", TINY, context=EvalContext(train_device="cuda"))


def test_describe_records_resolved_settings() -> None:
    ev = make_evaluator("train", TINY, epochs=3, pruner="median")
    d = ev.describe()
    assert d["evaluator"] == "train"
    assert (d["epochs"], d["batch"], d["lr"], d["optimizer"], d["schedule"]) == (3, 64, 0.05, "sgd", "cosine")
    assert d["pruner_settings"] == {"n_startup_trials": 5, "n_warmup_steps": 1, "interval_steps": 1}
    assert d["split"] == {"train": 1078, "valid": 360, "test": 359, "seed": 0}
    json.dumps(d)  # a study attribute must be JSON


# -- a tiny run ----------------------------------------------------------------------
def test_tiny_nb201_run_learns_and_reports_validation_accuracy(small_npz: str) -> None:
    ev = make_evaluator("train", TINY, context=EvalContext(data=small_npz), epochs=3, **FAST)
    good = ev.evaluate(cell("nor_conv_3x3"))
    dead = ev.evaluate(cell("none"))  # every cell outputs zeros: constant logits, chance level
    assert good.extras["valid_curve"][-1] == good.value and len(good.extras["valid_curve"]) == 3
    assert good.value > 50.0, good.extras
    assert dead.value == pytest.approx(10.0)  # 8 of the 80 validation images per class
    assert good.source == "train: 3 epochs SGD cosine lr 0.05 batch 16 on digits400, validation split (80 images)"
    assert "test_accuracy" not in good.extras  # the test split stays held out
    assert good.extras["train_epochs"] == 3 and good.extras["train_seconds"] > 0
    assert good.extras["train_settings"]["epochs"] == 3


def test_same_seed_same_accuracy_other_seed_other_training(small_npz: str) -> None:
    a = make_evaluator("train", TINY, context=EvalContext(data=small_npz), epochs=2, **FAST).evaluate(cell("nor_conv_1x1"))
    b = make_evaluator("train", TINY, context=EvalContext(data=small_npz), epochs=2, **FAST).evaluate(cell("nor_conv_1x1"))
    c = make_evaluator("train", TINY, context=EvalContext(data=small_npz, seed=1), epochs=2, **FAST).evaluate(cell("nor_conv_1x1"))
    assert a.value == b.value and a.extras["train_loss"] == b.extras["train_loss"]
    assert c.extras["train_loss"] != a.extras["train_loss"]


def test_optimizer_and_schedule_choices_change_the_training(small_npz: str) -> None:
    ctx = EvalContext(data=small_npz)
    losses = {
        (opt, sched): make_evaluator("train", TINY, context=ctx, epochs=2, optimizer=opt, schedule=sched, lr=0.01, **FAST)
        .evaluate(cell("skip_connect"))
        .extras["train_loss"]
        for opt, sched in [("sgd", "cosine"), ("adam", "cosine"), ("adamw", "cosine"), ("sgd", "step"), ("sgd", "constant")]
    }
    assert len(set(losses.values())) == len(losses), losses


def test_mbconv_is_built_for_the_data_and_trains_at_its_own_size(small_npz: str) -> None:
    space = get_space("mbconv")  # 3 channels, 1000 classes as registered; the data has 1 and 10
    ev = make_evaluator("train", space, context=EvalContext(data=small_npz), epochs=1, batch=32)
    arch = space.smallest()
    acc = ev.evaluate(arch)
    assert 0.0 <= acc.value <= 100.0 and len(acc.extras["valid_curve"]) == 1
    # One shape truth: the network is trained at the input it is timed and deployed at.
    assert "images resized from 8x8 to 128x128 (the network's input)" in acc.source
    assert "validation split (80 images)" in acc.source


def test_images_are_resized_to_the_arch_resolution(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 255, (20, 160, 160), dtype=np.uint8), y=np.repeat(np.arange(2), 10))
    space = MBConvSpace(num_classes=2, in_channels=1)
    small, large = space.smallest(), {**space.smallest(), "resolution": 160}
    ev = make_evaluator("train", space, context=EvalContext(data=f"npz:{path}"))
    assert ev._input_size(small) == 128 and ev._input_size(large) is None


def test_resized_images_reach_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 255, (10, 130, 130), dtype=np.uint8), y=np.repeat(np.arange(2), 5))
    seen: list[tuple[int, ...]] = []
    build = train_mod._network_for

    def spy(*args: Any) -> torch.nn.Module:
        net = build(*args)
        net.register_forward_pre_hook(lambda m, inp: seen.append(tuple(inp[0].shape[1:])))
        return net

    monkeypatch.setattr(train_mod, "_network_for", spy)
    space = MBConvSpace(num_classes=2, in_channels=1)
    acc = make_evaluator("train", space, context=EvalContext(data=f"npz:{path}"), epochs=1).evaluate(space.smallest())
    assert seen and set(seen) == {(1, 128, 128)}
    assert "images resized from 130x130 to 128x128" in acc.source


# -- diverged training -----------------------------------------------------------------
class _NaNHead(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * float("nan")


def test_nan_loss_raises_evaluation_failed(monkeypatch: pytest.MonkeyPatch, small_npz: str) -> None:
    build = train_mod._network_for
    monkeypatch.setattr(train_mod, "_network_for", lambda *a: _NaNHead(build(*a)))
    ev = make_evaluator("train", TINY, context=EvalContext(data=small_npz), epochs=2)
    with pytest.raises(EvaluationFailed, match=r"training diverged: loss is nan at epoch 1 \(sgd lr 0.05\); .*--lr 0.005"):
        ev.evaluate(cell("skip_connect"))


def test_huge_learning_rate_diverges(small_npz: str) -> None:
    ev = make_evaluator("train", TINY, context=EvalContext(data=small_npz), epochs=2, optimizer="adam", lr=1e30, schedule="constant")
    with pytest.raises(EvaluationFailed, match="training diverged"):
        ev.evaluate(cell("nor_conv_3x3"))


def _search_config(tmp_path: Path, data: str, **kw: Any) -> Any:
    from hwnas.search import SearchConfig

    base = dict(
        space="nb201",
        device="pixel3",
        force=True,
        latency_ms=1000.0,
        trials=3,
        strategy="random",
        evaluator="train",
        evaluator_options={"epochs": 1, "batch": 32},
        data=data,
        out=str(tmp_path / "run"),
        export=False,
    )
    return SearchConfig(**(base | kw))


def test_diverged_candidates_fail_and_the_search_reaches_its_budget(tmp_path: Path, tiny_npz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.search import Search

    build = train_mod._network_for
    calls = {"n": 0}

    def first_and_third_diverge(*a: Any) -> torch.nn.Module:
        calls["n"] += 1  # calls 1, 2, ... are trials 0, 1, ... (the constructor checks the space's own build)
        net = build(*a)
        return _NaNHead(net) if calls["n"] in (1, 3) else net

    monkeypatch.setattr(train_mod, "_network_for", first_and_third_diverge)
    search = Search(_search_config(tmp_path, tiny_npz))
    report = search.run()
    study = search._study()
    states = [t.state for t in study.get_trials()]
    failed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.FAIL]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert [t.number for t in failed] == [0, 2]
    assert all("training diverged" in t.user_attrs["failed_because"] for t in failed)
    assert report["trials"]["complete"] == 3
    assert report["accuracy_source"].startswith("train: 1 epochs SGD cosine")


# -- pruning through the side study -------------------------------------------------------
@pytest.mark.parametrize("storage_kind", ["journal", "sqlite"])
def test_median_pruner_stops_a_bad_candidate(tmp_path: Path, storage_kind: str, monkeypatch: pytest.MonkeyPatch, small_npz: str) -> None:
    monkeypatch.setattr(train_mod, "MEDIAN_STARTUP", 2)
    url = f"journal:{tmp_path / 'study.journal'}" if storage_kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    context = EvalContext(data=small_npz, storage=url, study="s")
    ev = make_evaluator("train", TINY, context=context, epochs=3, pruner="median", **FAST)
    main = optuna.create_study(study_name="s", storage=open_storage(url), directions=["maximize", "minimize"])
    for op in ("nor_conv_3x3", "skip_connect", "none"):
        main.enqueue_trial(cell(op))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        arch = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in TINY.dimensions()}
        return ev.evaluate(arch, trial).value, 1.0

    main.optimize(objective, n_trials=3)
    trials = main.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = trials[2]
    assert pruned.user_attrs["pruned_at_epoch"] in (1, 2)  # judged from epoch epochs // 2 = 1, never after the last
    assert pruned.user_attrs["valid_accuracy_last"] == pytest.approx(10.0, abs=1.0)
    assert pruned.user_attrs["accuracy_source"].startswith("pruned by the median pruner")
    # The side study in the same storage, reopened from its URL as another worker would.
    side = optuna.load_study(study_name="s.fidelity", storage=open_storage(url))
    assert [t.state.name for t in side.get_trials()] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t.user_attrs["search_trial"] for t in side.get_trials()] == [0, 1, 2]
    assert side.get_trials()[0].intermediate_values.keys() == {1, 2, 3}
    assert trials[0].values[0] == side.get_trials()[0].value


def test_halving_pruner_and_no_pruning_without_a_trial(tmp_path: Path, small_npz: str) -> None:
    url = f"journal:{tmp_path / 'study.journal'}"
    ev = make_evaluator("train", TINY, context=EvalContext(data=small_npz, storage=url, study="h"), epochs=4, pruner="halving", **FAST)
    main = optuna.create_study(study_name="h", storage=open_storage(url), directions=["maximize", "minimize"])
    good = ev.evaluate(cell("nor_conv_3x3"), main.ask())
    bad = main.ask()
    with pytest.raises(optuna.TrialPruned):
        ev.evaluate(cell("none"), bad)  # rung 1 (epoch 1): not in the top half of the two candidates
    assert good.extras["train_epochs"] == 4
    side = optuna.load_study(study_name="h.fidelity", storage=open_storage(url))
    assert [t.state.name for t in side.get_trials()] == ["COMPLETE", "PRUNED"]
    # Outside a study the same candidate trains to the end.
    assert ev.evaluate(cell("none")).extras["train_epochs"] == 4


# -- the command line -------------------------------------------------------------------------
def test_cli_search_with_train_evaluator_records_settings(tmp_path: Path, tiny_npz: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    out = tmp_path / "run"
    argv = [
        "search",
        "--space",
        "nb201",
        "--device",
        "pixel3",
        "--latency",
        "1000ms",
        "--evaluator",
        "train",
        "--data",
        tiny_npz,
        "--force",
    ]
    argv += ["--epochs", "2", "--batch", "32", "--lr", "0.02", "--optimizer", "adamw", "--schedule", "step", "--pruner", "halving"]
    argv += ["--trials", "3", "--strategy", "random", "--out", str(out), "--no-export", "--quiet", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy_source"] == "train: 2 epochs ADAMW step lr 0.02 batch 32 on digits100, validation split (20 images)"
    config = json.loads((out / "config.json").read_text())
    options = {"epochs": 2, "batch": 32, "lr": 0.02, "optimizer": "adamw", "schedule": "step", "pruner": "halving"}
    assert config["evaluator_options"] == options
    study = optuna.load_study(study_name="hwnas", storage=open_storage(f"journal:{out / 'study.journal'}"))
    recorded = study.user_attrs["hwnas_evaluator"]
    assert (recorded["epochs"], recorded["batch"], recorded["pruner"], recorded["weight_decay"]) == (2, 32, "halving", 5e-4)
    counted = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 3


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--pruner", "median"], ["evaluator 'table' takes no training options", "pruner"]),
        (["--evaluator", "train", "--optimizer", "rmsprop"], ["optimizer 'rmsprop'", "--optimizer sgd"]),
        (["--evaluator", "train", "--lr", "-1"], ["lr -1.0", "--lr 0.05"]),
    ],
)
def test_cli_refuses_bad_training_flags(tmp_path: Path, flags: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    argv = ["search", "--device", "pixel3", "--latency", "5ms", "--out", str(tmp_path / "r"), "--no-export", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


def test_cli_darts_keeps_its_defaults(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import hwnas.search
    from hwnas.cli import main

    seen = []

    class Fake:
        def __init__(self, config: Any, **kw: Any) -> None:
            from hwnas.search import resolve

            resolve(config)  # the library fills the defaults, as Search does
            seen.append(config)

        def run(self) -> dict[str, Any]:
            return {}

    monkeypatch.setattr(hwnas.search, "Search", Fake)
    assert main(["search", "--strategy", "darts", "--json"]) == 0
    assert main(["search", "--strategy", "darts", "--epochs", "10", "--batch", "32", "--json"]) == 0
    assert main(["search", "--evaluator", "train", "--epochs", "3", "--json"]) == 0
    darts, darts_set, train = seen
    assert (darts.epochs, darts.batch, darts.warmup, darts.evaluator_options) == (30, 64, 5, {})
    assert (darts_set.epochs, darts_set.batch, darts_set.warmup, darts_set.evaluator_options) == (10, 32, 2, {})
    assert train.evaluator_options == {"epochs": 3}


@pytest.mark.slow
def test_cli_mbconv_with_train_evaluator_needs_no_table(tmp_path: Path, tiny_npz: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hwnas.cli import main

    out = tmp_path / "run"
    argv = ["search", "--space", "mbconv", "--device", "cpu", "--latency", "1s", "--evaluator", "train", "--data", tiny_npz]
    argv += ["--epochs", "1", "--batch", "32", "--trials", "2", "--strategy", "random", "--out", str(out), "--no-export", "--quiet"]
    argv += ["--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trials"]["complete"] == 2
    assert report["accuracy_source"].startswith("train: 1 epochs SGD cosine")
    assert report["latency_source"].startswith("measured")
