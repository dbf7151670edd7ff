"""Contract tests of :class:`SearchSpace`, run for every registered space.

Parametrised over ``SPACES``, so a newly registered space is held to the same contract the
moment it is registered (Optuna's ``optuna.testing`` style).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from hwnas.errors import HwnasError, UsageError
from hwnas.spaces import OPTIONAL_HOOKS, SPACES, Arch, Benchmark, BlockCodec, SearchSpace

SEEDS = range(20)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny forwards: one intra-op thread is as fast and avoids OpenMP spin-waits on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=SPACES.names())
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return SPACES.get(request.param)


def _samples(space: SearchSpace, n: int = 20) -> list[Arch]:
    return [space.sample(np.random.default_rng(s)) for s in range(n)]


def _cheap(space: SearchSpace, arch: Arch) -> Arch:
    """The arch at the lowest input resolution, where a space searches resolution (keeps forwards fast)."""
    dims = space.dimension_map()
    if "resolution" in dims:
        arch = space.validate({**arch, "resolution": min(dims["resolution"].choices)})
    return arch


class TestSearchSpaceContract:
    # -- dimensions ---------------------------------------------------------
    def test_dimensions(self, space: SearchSpace) -> None:
        dims = space.dimensions()
        assert dims, "a space needs at least one dimension"
        names = [d.name for d in dims]
        assert len(set(names)) == len(names), "dimension names must be unique"
        assert all(isinstance(n, str) and n for n in names)
        for d in dims:
            assert len(d.choices) >= 1
            assert all(isinstance(c, (int, float, str)) and not isinstance(c, bool) for c in d.choices)
        assert space.dimension_map() == {d.name: d for d in dims}
        assert space.size() == int(np.prod([len(d.choices) for d in dims], dtype=object))
        assert space.name and isinstance(space.description, str) and space.description

    def test_dimensions_is_a_copy(self, space: SearchSpace) -> None:
        n = len(space.dimensions())
        space.dimensions().clear()
        assert len(space.dimensions()) == n

    # -- sampling -----------------------------------------------------------
    @pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
    def test_sample_is_valid_and_canonical(self, space: SearchSpace, seed: int) -> None:
        arch = space.sample(np.random.default_rng(seed))
        assert space.validate(arch) == arch
        assert space.canonical(arch) == arch
        assert set(arch) == set(space.dimension_map())
        assert json.loads(json.dumps(arch)) == arch, "architectures are JSON-safe"
        assert space.sample(np.random.default_rng(seed)) == arch, "sampling is reproducible from the seed"

    def test_samples_vary(self, space: SearchSpace) -> None:
        keys = {space.key(a) for a in _samples(space)}
        assert len(keys) > 1 or space.size() == 1

    # -- strings ------------------------------------------------------------
    def test_string_round_trip(self, space: SearchSpace) -> None:
        for arch in _samples(space):
            text = space.to_string(arch)
            assert isinstance(text, str) and text
            back = space.from_string(text)
            assert space.validate(back) == arch
            assert space.to_string(back) == text

    def test_distinct_archs_have_distinct_strings(self, space: SearchSpace) -> None:
        archs = {space.key(a): a for a in _samples(space, 40)}
        strings = {space.to_string(a) for a in archs.values()}
        assert len(strings) == len(archs)

    @pytest.mark.parametrize("text", ["", "not an architecture", "|||", "-"])
    def test_from_string_rejects_garbage(self, space: SearchSpace, text: str) -> None:
        with pytest.raises(UsageError):
            space.validate(space.from_string(text))

    # -- validation ---------------------------------------------------------
    def test_validate_rejects_unknown_key(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        with pytest.raises(UsageError, match="not_a_dimension"):
            space.validate({**arch, "not_a_dimension": 1})

    def test_validate_rejects_missing_key(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        for name in space.dimension_map():
            partial = {k: v for k, v in arch.items() if k != name}
            with pytest.raises(UsageError, match=f"lacks dimension '{name}'"):
                space.validate(partial)

    @pytest.mark.parametrize("bad", ["__bogus__", -12345, 0.123, True, None, [1]])
    def test_validate_rejects_bad_value(self, space: SearchSpace, bad: Any) -> None:
        arch = space.sample(np.random.default_rng(0))
        for dim in space.dimensions():
            if any(bad == c and type(bad) is type(c) for c in dim.choices):
                continue
            with pytest.raises(UsageError, match=f"dimension '{dim.name}'"):
                space.validate({**arch, dim.name: bad})

    def test_validate_rejects_non_dict(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        for bad in (list(arch.items()), space.to_string(arch), None):
            with pytest.raises(UsageError):
                space.validate(bad)  # type: ignore[arg-type]

    def test_validate_does_not_modify_its_input(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        before = json.dumps(arch)
        space.validate(arch)
        space.to_string(arch)
        space.encode(arch)
        assert json.dumps(arch) == before

    # -- mutation -----------------------------------------------------------
    def test_mutate(self, space: SearchSpace) -> None:
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            parent = space.sample(rng)
            snapshot = dict(parent)
            child = space.mutate(parent, rng)
            assert space.validate(child) == child
            assert child != parent, "a mutation never returns its parent"
            assert space.key(child) != space.key(parent)
            assert parent == snapshot, "the parent is not changed in place"

    def test_mutate_several_changes(self, space: SearchSpace) -> None:
        rng = np.random.default_rng(0)
        parent = space.sample(rng)
        child = space.mutate(parent, rng, n_changes=3)
        assert space.validate(child) == child and child != parent
        with pytest.raises(ValueError, match="n_changes"):
            space.mutate(parent, rng, n_changes=0)

    def test_neighbours_are_the_one_change_archs(self, space: SearchSpace) -> None:
        dims = space.dimensions()
        for arch in _samples(space, 5):
            near = space.neighbours(arch)
            keys = [space.key(n) for n in near]
            assert len(set(keys)) == len(keys), "no neighbour twice"
            assert space.key(arch) not in keys, "an arch is not its own neighbour"
            assert 0 < len(near) <= sum(len(d.choices) - 1 for d in dims)
            for n in near:
                assert space.validate(n) == n
                # Reachable by changing one dimension of the parent (then canonicalising).
                assert any(space.canonical({**arch, d.name: n[d.name]}) == n for d in dims)
        # A mutation with one change is always among the neighbours.
        rng = np.random.default_rng(1)
        arch = space.sample(rng)
        near_keys = {space.key(n) for n in space.neighbours(arch)}
        assert all(space.key(space.mutate(arch, rng)) in near_keys for _ in range(10))

    # -- encoding and keys --------------------------------------------------
    def test_encode_is_one_hot(self, space: SearchSpace) -> None:
        dims = space.dimensions()
        for arch in _samples(space, 5):
            vec = space.encode(arch)
            assert vec.shape == (sum(len(d.choices) for d in dims),)
            assert vec.dtype == np.float32
            start = 0
            for d in dims:
                part = vec[start : start + len(d.choices)]
                assert part.sum() == 1.0 and set(part.tolist()) <= {0.0, 1.0}
                assert d.choices[int(np.argmax(part))] == arch[d.name]
                start += len(d.choices)

    def test_encode_and_key_separate_exactly_the_canonical_forms(self, space: SearchSpace) -> None:
        base = space.sample(np.random.default_rng(0))
        for d in space.dimensions():
            for choice in d.choices:
                other = {**base, d.name: choice}
                same = space.canonical(other) == space.canonical(base)
                assert (space.key(other) == space.key(base)) is same
                assert np.array_equal(space.encode(other), space.encode(base)) is same

    def test_key_is_stable(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        reordered = dict(reversed(list(arch.items())))
        assert space.key(reordered) == space.key(arch)
        assert isinstance(space.key(arch), str)
        assert json.loads(space.key(arch)) == arch

    # -- probes and models --------------------------------------------------
    def test_smallest(self, space: SearchSpace) -> None:
        arch = space.smallest()
        assert space.validate(arch) == arch == space.canonical(arch)
        assert space.from_string(space.to_string(arch)) == arch

    def test_build_forward(self, space: SearchSpace) -> None:
        archs = [space.smallest(), *(_cheap(space, a) for a in _samples(space, 2))]
        for arch in archs:
            shape = space.input_shape(arch)
            assert len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)
            model = space.build(arch)
            assert isinstance(model, torch.nn.Module)
            model.eval()
            with torch.no_grad():
                out = model(torch.randn(2, *shape))
            assert out.shape == (2, space.num_classes)  # type: ignore[attr-defined]
            assert torch.isfinite(out).all()

    def test_build_refuses_invalid(self, space: SearchSpace) -> None:
        arch = space.sample(np.random.default_rng(0))
        with pytest.raises(UsageError):
            space.build({**arch, "not_a_dimension": 1})


# -- optional hooks: each space either offers a working one or refuses it in one line --------------
def _refused(call: Any, *args: Any, **kwargs: Any) -> str | None:
    """The message of the one-line UsageError ``call`` refuses with, or None if it returned."""
    try:
        call(*args, **kwargs)
    except UsageError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"a refusal is one line: {message!r}"
        return message
    return None


class _FakeTable:
    """A latency table without measured sections: every block takes 0.01 ms."""

    def __init__(self, codec: BlockCodec) -> None:
        self.codec = codec
        self.data: dict[str, Any] = {}
        self.path = "fake.json"

    def block_sum(self, space: SearchSpace, arch: Arch) -> float:
        return 0.01 * len(self.codec.blocks(arch))


def _codec(space: SearchSpace) -> BlockCodec:
    message = _refused(space.lut_codec)
    if message is not None:
        assert not space.offers("lut_codec")
        assert "has no latency-table blocks" in message and "--latency-source measure" in message
        pytest.skip(f"space {space.name} has no latency-table blocks")
    assert space.offers("lut_codec")
    codec = space.lut_codec()
    assert isinstance(codec, BlockCodec) and codec.space is space
    return codec


def _cheap_resolutions(codec: BlockCodec) -> list[int] | None:
    return [min(codec.resolutions)] if codec.resolutions else None


class TestOptionalHooksContract:
    def test_offers_names_only_optional_hooks(self, space: SearchSpace) -> None:
        assert all(isinstance(space.offers(h), bool) for h in OPTIONAL_HOOKS)
        with pytest.raises(ValueError, match="hook must be one of"):
            space.offers("build")

    # -- the latency-table block codec ------------------------------------------------
    def test_lut_blocks_cover_every_arch(self, space: SearchSpace) -> None:
        codec = _codec(space)
        keys = codec.all_blocks(_cheap_resolutions(codec))
        assert keys and len(set(keys)) == len(keys) and all(isinstance(k, str) and k for k in keys)
        archs = [_cheap(space, a) for a in _samples(space, 10)]
        if not codec.resolutions:
            archs.append(space.smallest())
        for arch in archs:
            blocks = codec.blocks(arch)
            assert blocks and set(blocks) <= set(keys), sorted(set(blocks) - set(keys))
        if codec.resolutions:
            assert set(codec.all_blocks(_cheap_resolutions(codec))) <= set(codec.all_blocks())
        with pytest.raises(UsageError):
            codec.blocks({"not_a_dimension": 1})

    def test_lut_blocks_build_at_their_input_shape(self, space: SearchSpace) -> None:
        codec = _codec(space)
        keys = codec.blocks(_cheap(space, space.smallest()))
        for key in dict.fromkeys([keys[0], keys[1], keys[-1]]):
            module, shape = codec.build_block(key)
            assert isinstance(module, torch.nn.Module)
            assert len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)
            module.eval()
            with torch.no_grad():
                out = module(torch.randn(1, *shape))
            assert torch.isfinite(out).all()
        assert _refused(codec.build_block, "not-a-block-key") is not None

    def test_lut_features_match_their_names(self, space: SearchSpace) -> None:
        codec = _codec(space)
        names = codec.feature_names()
        assert names[0] == "block_sum_ms" and len(set(names)) == len(names)
        assert codec.feature_names(["extra.a", "extra.b"])[-2:] == ["extra.a", "extra.b"]
        arch = _cheap(space, space.sample(np.random.default_rng(0)))
        table = _FakeTable(codec)
        try:
            x = codec.features(table, arch)
        except HwnasError as exc:
            # The features read a section the profile measures besides the blocks.
            assert "\n" not in str(exc) and "hwnas profile" in str(exc)
            assert type(codec).measure_structure is not BlockCodec.measure_structure
            with pytest.raises(ValueError, match="structure"):
                codec.check_structure({}, ValueError)
            return
        assert x.shape == (len(names),) and np.isfinite(x).all()
        assert x[0] == pytest.approx(table.block_sum(space, arch))
        assert codec.check_structure({}, ValueError) == []

    def test_lut_profile_settings(self, space: SearchSpace) -> None:
        codec = _codec(space)
        assert isinstance(codec.default_calibrate, int) and codec.default_calibrate >= 5
        reference = codec.reference_arch(_cheap_resolutions(codec))
        assert space.validate(reference) == reference
        codec.check_profile_options(resolutions=None)
        codec.check_profile_options(resolutions=[])
        if codec.resolutions:
            codec.check_profile_options(resolutions=list(codec.resolutions))
            message = _refused(codec.check_profile_options, resolutions=[max(codec.resolutions) + 1])
            assert message is not None and str(max(codec.resolutions) + 1) in message
        else:
            message = _refused(codec.check_profile_options, resolutions=[224])
            assert message == f"--resolution applies to the mbconv space only, not {space.name!r}"
        assert all(isinstance(codec.profile_hint(k), str) for k in codec.blocks(_cheap(space, space.smallest())))

    # -- networks for other data ---------------------------------------------------------
    def test_for_data(self, space: SearchSpace) -> None:
        arch = _cheap(space, space.smallest())
        own = space.input_shape(arch)[0], space.num_classes  # type: ignore[attr-defined]
        assert space.for_data(in_channels=own[0], num_classes=own[1]) is space
        message = _refused(space.for_data, in_channels=1, num_classes=3)
        if message is not None:
            return
        other = space.for_data(in_channels=1, num_classes=3)
        assert other.name == space.name and other.dimensions() == space.dimensions()
        shape = other.input_shape(arch)
        assert shape[0] == 1
        model = other.build(arch).eval()
        with torch.no_grad():
            out = model(torch.randn(2, *shape))
        assert out.shape == (2, 3)

    # -- supernets -------------------------------------------------------------------------
    def test_supernet(self, space: SearchSpace) -> None:
        from hwnas.darts.run import make_supernet
        from hwnas.darts.supernet import Supernet

        message = _refused(make_supernet, space, num_classes=3, in_channels=1)
        if message is not None:
            assert not space.offers("supernet")
            assert message.startswith(f"no supernet for space {space.name!r}")
            return
        assert space.offers("supernet")
        net = make_supernet(space, num_classes=3, in_channels=1)
        assert isinstance(net, Supernet)
        decisions = net.decisions()
        assert decisions
        arch = net.derive([0] * len(decisions))
        assert space.validate(arch) == arch

    def test_elastic_supernet(self, space: SearchSpace) -> None:
        message = _refused(space.elastic_supernet)
        if message is not None:
            assert not space.offers("elastic_supernet")
            assert "has no elastic supernet" in message
            return
        assert space.offers("elastic_supernet")
        net = space.for_data(in_channels=1, num_classes=3).elastic_supernet()
        assert isinstance(net, torch.nn.Module) and sum(p.numel() for p in net.parameters()) > 0

    # -- benchmarks --------------------------------------------------------------------------
    def test_benchmark(self, space: SearchSpace) -> None:
        bench = space.benchmark()
        if bench is None:
            return
        assert isinstance(bench, Benchmark)
        for attr in ("name", "dataset", "signal", "test_metric", "index_key"):
            assert isinstance(getattr(bench, attr), str) and getattr(bench, attr), attr
        assert isinstance(bench.epochs, int) and bench.epochs > 0
        for arch in _samples(space, 5):
            acc = bench.accuracy(arch)
            assert acc.index == bench.index(arch) and isinstance(acc.index, int)
            assert 0.0 <= acc.value <= 100.0 and 0.0 <= acc.test_value <= 100.0

    def test_with_dataset(self, space: SearchSpace) -> None:
        assert isinstance(space.benchmark_datasets, tuple)
        if not space.benchmark_datasets:
            assert not space.offers("with_dataset")
            message = _refused(space.with_dataset, "cifar10")
            assert message is not None and "drop --dataset" in message
            return
        assert space.offers("with_dataset") and space.benchmark() is not None
        for name in space.benchmark_datasets:
            other = space.with_dataset(name)
            assert other.name == space.name and other.dimensions() == space.dimensions()
            bench = other.benchmark()
            assert bench is not None and bench.dataset == name
        assert _refused(space.with_dataset, "not-a-dataset") is not None


class _BareSpace(SearchSpace):
    """The least a space implements: every optional hook keeps its refusing default."""

    name = "bare"
    description = "a test space with one dimension and no optional hooks"
    num_classes = 2

    def dimensions(self) -> list[Any]:
        from hwnas.spaces import Dimension

        return [Dimension("hidden", (2, 4))]

    def to_string(self, arch: Arch) -> str:
        return f"h{self.validate(arch)['hidden']}"

    def from_string(self, text: str) -> Arch:
        if not text.startswith("h") or not text[1:].isdigit():
            raise UsageError(f"bad bare architecture {text!r}; expected e.g. 'h2'")
        return {"hidden": int(text[1:])}

    def smallest(self) -> Arch:
        return {"hidden": 2}

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        return (1, 2, 2)

    def build(self, arch: Arch) -> torch.nn.Module:
        h = self.validate(arch)["hidden"]
        return torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(4, h), torch.nn.Linear(h, self.num_classes))


def test_a_bare_space_refuses_every_optional_hook_in_one_line() -> None:
    space = _BareSpace()
    assert not any(space.offers(h) for h in OPTIONAL_HOOKS)
    assert space.benchmark() is None and space.benchmark_datasets == ()
    assert _refused(space.lut_codec) == "space 'bare' has no latency-table blocks; use --latency-source measure"
    assert _refused(space.with_dataset, "cifar10") == "the bare space has no benchmark datasets; drop --dataset"
    message = _refused(space.supernet, num_classes=2, in_channels=1)
    assert message is not None and message.startswith("no supernet for space 'bare'; differentiable search supports ")
    assert all(name in message for name in SPACES.names() if SPACES.get(name).offers("supernet"))
    message = _refused(space.elastic_supernet)
    assert message is not None and "space 'bare' has no elastic supernet" in message
    assert space.for_data(in_channels=1, num_classes=2) is space
    message = _refused(space.for_data, in_channels=3, num_classes=10)
    assert message is not None and "1 channel(s) and 2 classes only, not 3 channel(s) and 10 classes" in message
