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

from hwnas.errors import UsageError
from hwnas.spaces import SPACES, Arch, SearchSpace

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
        keys = {space.key(n) for n in space.neighbours(arch)}
        assert all(space.key(space.mutate(arch, rng)) in keys for _ in range(10))

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
