"""The Once-for-All supernet of the mbconv space, its sandwich-rule training and checkpoints, and the
``supernet`` evaluator (weights inherited by search candidates, and by the exported model)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SUPERNET_OPTIONS, with_trained_supernet
from torch import nn

from hwnas.errors import UsageError
from hwnas.evaluate import EvalContext, make_evaluator
from hwnas.ofa.elastic import ElasticMBConvNet, compact_copy
from hwnas.ofa.train import Interrupted, SupernetSettings, load_checkpoint, recalibrate_batchnorm, train_supernet
from hwnas.spaces import get_space
from hwnas.spaces._mbconv_model import MBConvNet
from hwnas.spaces.mbconv import MBConvSpace

ARCH = "r160-w0.75-k5e4.k7e3.k3e6|k3e3.k7e6|k5e6.k3e4.k7e4.k3e3|k7e6.k5e3|k3e4.k5e6.k7e3|k7e4"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space() -> MBConvSpace:
    return MBConvSpace(num_classes=10, in_channels=1)


@pytest.fixture(scope="module")
def supernet(space: MBConvSpace) -> ElasticMBConvNet:
    """A supernet whose BatchNorm statistics, affine parameters and kernel transforms are not at
    their initial values, so that comparisons exercise every copied tensor."""
    torch.manual_seed(0)
    net = ElasticMBConvNet(space)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.classifier.weight.normal_(0, 0.5)
    return net.eval()


def _archs(net: ElasticMBConvNet, space: MBConvSpace, n: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    return [net.largest(), net.smallest(), space.from_string(ARCH)] + [net.sample(rng) for _ in range(n)]


def _x(n: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# -- the elastic network ----------------------------------------------------------------------------
def test_forward_shapes_for_every_kind_of_arch(space: MBConvSpace, supernet: ElasticMBConvNet) -> None:
    for arch in _archs(supernet, space):
        for size in (8, 20):
            with torch.no_grad():
                assert supernet(_x(3, size), arch).shape == (3, 10)


def test_largest_uses_every_weight_and_smallest_is_the_spaces(space: MBConvSpace, supernet: ElasticMBConvNet) -> None:
    largest = supernet.largest()
    assert largest["width"] == 1.4 and all(largest[f"d{s}"] == 4 for s in range(1, 6))
    assert set(re.findall(r"k\d+e\d+", space.to_string(largest))) == {"k7e6"}
    assert supernet.smallest() == space.smallest()
    # The supernet holds as many conv weights as the largest subnet plus the kernel transforms.
    transforms = sum(p.numel() for n, p in supernet.named_parameters() if "transforms" in n)
    assert sum(p.numel() for p in supernet.parameters()) - transforms == sum(p.numel() for p in space.build(largest).parameters())


def test_extracted_subnet_is_the_spaces_network_and_computes_the_supernets_forward(space: MBConvSpace, supernet: ElasticMBConvNet) -> None:
    for arch in _archs(supernet, space, n=1):
        sub = supernet.subnet(arch)
        assert isinstance(sub, MBConvNet) and not sub.training
        built = space.build(arch)
        assert [p.shape for p in sub.state_dict().values()] == [p.shape for p in built.state_dict().values()]
        for size in (8, 20):
            x = _x(2, size, seed=size)
            with torch.no_grad():
                torch.testing.assert_close(sub(x), supernet(x, arch), rtol=1e-5, atol=1e-5)
    # A copy: changing it leaves the supernet alone.
    sub = supernet.subnet(space.from_string(ARCH))
    before = supernet.stem.conv.weight.clone()
    with torch.no_grad():
        next(sub.parameters()).add_(1.0)
    assert torch.equal(supernet.stem.conv.weight, before)


def test_kernel_transform_starts_as_the_centre_crop(space: MBConvSpace) -> None:
    torch.manual_seed(0)
    net = ElasticMBConvNet(space)
    dw = net.blocks[0].depthwise
    full = dw.conv.weight[:6]
    torch.testing.assert_close(dw.kernel(6, 5), full[:, :, 1:6, 1:6])
    torch.testing.assert_close(dw.kernel(6, 3), full[:, :, 2:5, 2:5])
    with torch.no_grad():
        dw.transforms["7to5"].mul_(2.0)
    torch.testing.assert_close(dw.kernel(6, 5), 2.0 * full[:, :, 1:6, 1:6])
    plain = ElasticMBConvNet(space, kernel_transform=False)
    assert not any("transforms" in n for n, _ in plain.named_parameters())


def test_compact_copy_computes_the_same_at_its_input_size(space: MBConvSpace) -> None:
    torch.manual_seed(0)
    net = space.build(space.from_string(ARCH)).eval()
    small = compact_copy(net, (1, 8, 8))
    kernels = [m.kernel_size for m in small.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert max(k[0] for k in kernels) < 7 and (1, 1) in kernels  # 1x1 maps keep only the centre tap
    with torch.no_grad():
        torch.testing.assert_close(small(_x(4)), net(_x(4)), rtol=1e-5, atol=1e-6)


def test_batchnorm_recalibration_gives_the_batch_statistics(space: MBConvSpace) -> None:
    torch.manual_seed(0)
    net = ElasticMBConvNet(space)
    arch = space.from_string(ARCH)
    x = _x(16)
    recalibrate_batchnorm(net, lambda b: net(b, arch), [x[:8], x[8:]])
    assert not net.training
    stem_out = nn.functional.conv2d(x, net.stem.conv.weight[: net.plan(arch)[0]], stride=2, padding=1)
    means = torch.stack([stem_out[:8].mean((0, 2, 3)), stem_out[8:].mean((0, 2, 3))]).mean(0)
    torch.testing.assert_close(net.stem.bn.running_mean[: len(means)], means, rtol=1e-4, atol=1e-5)


# -- training and checkpoints -----------------------------------------------------------------------
def _tiny_batches(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from hwnas.datasets import load_data

    ds = load_data("digits")
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
    return torch.from_numpy(ds.x[idx]), torch.from_numpy(ds.y[idx])


def test_one_sandwich_step_sums_the_subnets_gradients_and_lowers_their_losses(space: MBConvSpace) -> None:
    x, y = _tiny_batches(16)
    torch.manual_seed(0)
    net = ElasticMBConvNet(space)
    net.dropout.p = 0.0
    archs = [net.largest(), net.smallest()]
    manual = copy.deepcopy(net)

    def losses(n: ElasticMBConvNet) -> list[float]:
        n.train()  # batch statistics: the loss the step descends
        with torch.no_grad():
            return [float(nn.functional.cross_entropy(n(x, a), y)) for a in archs]

    before = losses(net)
    settings = SupernetSettings(epochs=1, batch=16, lr=0.003, momentum=0.0, weight_decay=0.0, random_subnets=0, distill=False)
    train_supernet(net, lambda epoch: [(x, y)], settings)
    # The same step by hand: the largest's and the smallest's gradients summed, clipped, one SGD step.
    manual.train()
    for a in archs:
        nn.functional.cross_entropy(manual(x, a), y).backward()
    torch.nn.utils.clip_grad_norm_(manual.parameters(), settings.clip)
    with torch.no_grad():
        for p in manual.parameters():
            if p.grad is not None:
                p.sub_(settings.lr * p.grad)
    for (name, a), b in zip(net.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    after = losses(net)
    assert after[0] < before[0] - 0.02 and after[1] < before[1] - 0.02, (before, after)


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(space: MBConvSpace, tmp_path: Path) -> None:
    x, y = _tiny_batches(8)
    settings = SupernetSettings(epochs=2, batch=8, random_subnets=1, seed=3)
    batches = lambda epoch: [(x, y)]  # noqa: E731

    def fresh() -> ElasticMBConvNet:
        torch.manual_seed(0)
        return ElasticMBConvNet(space)

    straight = fresh()
    train_supernet(straight, batches, settings, checkpoint=tmp_path / "a.pt")

    def stop(epoch: int) -> None:
        raise Interrupted(f"stopped after epoch {epoch}")

    path = tmp_path / "b.pt"
    with pytest.raises(Interrupted):
        train_supernet(fresh(), batches, settings, checkpoint=path, after_epoch=stop)
    assert load_checkpoint(path)["epoch"] == 1  # type: ignore[index]
    lines: list[str] = []
    resumed = fresh()
    result = train_supernet(resumed, batches, settings, checkpoint=path, log=lines.append)
    assert result.resumed_from == 1 and [h.epoch for h in result.history] == [1, 2]
    assert any("resuming" in line and "after epoch 1/2" in line for line in lines)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # Finished: a further call loads it and trains no more.
    again = fresh()
    assert len(train_supernet(again, batches, settings, checkpoint=path).history) == 2
    assert torch.equal(again.classifier.weight, straight.classifier.weight)
    # Other settings are refused, naming the setting.
    with pytest.raises(UsageError, match=r"settings\.lr=0\.1, not 0\.2"):
        train_supernet(fresh(), batches, replace(settings, lr=0.2), checkpoint=path)


def test_checkpoints_load_with_weights_only_and_refuse_pickled_objects(space: MBConvSpace, tmp_path: Path) -> None:
    x, y = _tiny_batches(4)
    path = tmp_path / "s.pt"
    train_supernet(ElasticMBConvNet(space), lambda e: [(x, y)], SupernetSettings(epochs=1, batch=4, random_subnets=0), checkpoint=path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and state["identity"]["settings"]["epochs"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hwnas.ofa.supernet", "version": 1, "payload": _NotAllowed()}, evil)
    with pytest.raises(UsageError, match="cannot read supernet checkpoint"):
        load_checkpoint(evil)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read supernet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _NotAllowed:
    pass


# -- the evaluator ------------------------------------------------------------------------------------
def test_evaluator_refuses_other_spaces_and_options(tiny_data: str) -> None:
    with pytest.raises(UsageError, match=r"mbconv only, not 'nb201'.*--evaluator train"):
        make_evaluator("supernet", get_space("nb201"))
    space = get_space("mbconv")
    with pytest.raises(UsageError, match=r"does not take --optimizer.*--epochs, --batch and --lr"):
        make_evaluator("supernet", space, context=EvalContext(data=tiny_data), optimizer="adam")
    with pytest.raises(UsageError, match="epochs 0 is invalid"):
        make_evaluator("supernet", space, context=EvalContext(data=tiny_data), epochs=0)
    with pytest.raises(UsageError, match="lr -1 is invalid"):
        make_evaluator("supernet", space, context=EvalContext(data=tiny_data), lr=-1)
    ev = make_evaluator("supernet", space, context=EvalContext(data=tiny_data), epochs=3, batch=None)
    assert ev.describe()["epochs"] == 3 and ev.describe()["batch"] == SupernetSettings().batch


@pytest.mark.slow
def test_evaluator_scores_and_exports_the_inherited_network(
    tiny_data: str, trained_supernet: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import onnxruntime as ort

    from hwnas.export import export_verified

    folder, trained_lines = trained_supernet  # trained once for the session, with these options
    assert (folder / "supernet.pt").exists() and any("supernet epoch 1/1" in line for line in trained_lines)
    space = get_space("mbconv")
    lines: list[str] = []
    context = EvalContext(data=tiny_data, out_dir=with_trained_supernet(trained_supernet, tmp_path / "run"), log=lines.append)
    ev = make_evaluator("supernet", space, context=context, **SUPERNET_OPTIONS)
    arch = space.from_string(ARCH)
    acc = ev.evaluate(arch)
    assert 0.0 <= acc.value <= 100.0 and acc.source.startswith("supernet: inherited weights")
    assert "1 epochs" in acc.source and "validation split (20 images)" in acc.source
    assert any("loaded the trained supernet" in line for line in lines), lines  # a run folder's supernet is not trained again
    assert ev.evaluate(arch).value == acc.value  # deterministic: same recalibration images

    trained = ev.build_trained(arch)
    # One shape truth: the images are resized to the arch's resolution to train, score and deploy it.
    assert trained.input_shape == (1, 160, 160) and trained.data_shape == (1, 160, 160)
    result = export_verified(space, arch, tmp_path / "best.onnx", trained=trained, exporter="torchscript")
    assert result.parity_shapes == [[1, 160, 160]] and "inherited from an OFA supernet" in result.weights
    session = ort.InferenceSession(str(tmp_path / "best.onnx"), providers=["CPUExecutionProvider"])
    import torch

    logits = session.run(None, {"input": ev._input_for(torch.from_numpy(ev.valid.x), arch).numpy()})[0]
    assert 100.0 * float((logits.argmax(1) == ev.valid.y).mean()) == pytest.approx(acc.value)
    assert session.run(None, {"input": np.zeros((2, 1, 160, 160), np.float32)})[0].shape == (2, 10)

    # A second evaluator on the same run folder loads the finished supernet instead of training it.
    lines.clear()
    again = make_evaluator("supernet", space, context=replace(context, log=lines.append), **SUPERNET_OPTIONS)
    assert again.evaluate(arch).value == acc.value
    assert any("loaded the trained supernet" in line and "(1/1 epochs)" in line for line in lines)


@pytest.mark.slow
def test_search_with_the_supernet_evaluator_records_its_settings(
    tiny_data: str, trained_supernet: tuple[Path, list[str]], tmp_path: Path
) -> None:
    from hwnas.search import Search, SearchConfig
    from hwnas.trials import TrialRecord

    quick_cpu = tmp_path / "quick-cpu.toml"  # a few timed runs are enough here
    quick_cpu.write_text(
        'name = "quick-cpu"\nkind = "onnxruntime"\ndescription = "this CPU, few repeats"\nprovider = "CPUExecutionProvider"\n'
        "threads = 1\nbatch = 1\nwarmup = 1\nrepeats = 3\n"
    )
    config = SearchConfig(
        space="mbconv",
        device=str(quick_cpu),
        latency_ms=1000.0,
        trials=2,
        strategy="random",
        evaluator="supernet",
        evaluator_options=SUPERNET_OPTIONS,
        data=tiny_data,
        out=str(tmp_path / "run"),
        export=False,
    )
    lines: list[str] = []

    def log(line: str) -> None:
        # The evaluator says what it will train before it looks for a checkpoint: the session's
        # supernet is put there then, as a resumed run finds its own (the run folder exists by now).
        if line.startswith("supernet: OFA supernet"):
            with_trained_supernet(trained_supernet, tmp_path / "run")
        lines.append(line)

    report = Search(config, log=log).run()
    assert any("loaded the trained supernet" in line for line in lines), lines
    assert report["accuracy_source"].startswith("supernet: inherited weights") and report["evaluator"]["epochs"] == 1
    import optuna

    from hwnas.storage import open_storage

    study = optuna.load_study(study_name=config.study, storage=open_storage(config.storage))
    assert study.user_attrs["supernet"]["epochs"] == 1 and study.user_attrs["supernet"]["data"] == tiny_data
    assert all(TrialRecord.of(t).attrs["supernet_epochs"] == 1 for t in study.get_trials() if t.state.name == "COMPLETE")
    assert json.loads((tmp_path / "run" / "report.json").read_text())["evaluator"]["evaluator"] == "supernet"
