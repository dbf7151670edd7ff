"""The name -> object registry and the built-in registries that loop-over tests rely on."""

from __future__ import annotations

import re

import pytest

from hwnas.errors import UsageError
from hwnas.evaluate import EVALUATORS
from hwnas.registry import Registry, did_you_mean
from hwnas.spaces import SPACES, SearchSpace
from hwnas.strategies import STRATEGIES


@pytest.fixture
def registry() -> Registry[int]:
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    return reg


def test_lookup_and_listing(registry: Registry[int]) -> None:
    assert registry.get("alpha") == 1 and registry.get("beta") == 2
    assert registry.names() == ["alpha", "beta"] and list(registry) == ["alpha", "beta"]
    assert len(registry) == 2
    assert "alpha" in registry and "gamma" not in registry


def test_names_are_sorted_whatever_the_registration_order() -> None:
    reg: Registry[int] = Registry("widget")
    for i, name in enumerate(["zeta", "alpha", "mu"]):
        reg.add(name, i)
    assert reg.names() == ["alpha", "mu", "zeta"]


def test_duplicate_is_refused_and_first_kept(registry: Registry[int]) -> None:
    with pytest.raises(ValueError, match=r"widget 'alpha' is already registered"):
        registry.add("alpha", 99)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("beta")(99)
    assert registry.get("alpha") == 1 and registry.get("beta") == 2 and len(registry) == 2


def test_register_decorator_returns_the_object(registry: Registry[object]) -> None:
    @registry.register("gamma")
    def gamma() -> int:
        return 3

    assert registry.get("gamma") is gamma and gamma() == 3


def test_unknown_name_lists_valid_names_and_suggests(registry: Registry[int]) -> None:
    with pytest.raises(UsageError) as info:
        registry.get("alpah")
    message = str(info.value)
    assert "unknown widget 'alpah'" in message
    assert "did you mean 'alpha'?" in message
    assert "valid: alpha, beta" in message


def test_unknown_name_without_close_match_has_no_suggestion(registry: Registry[int]) -> None:
    with pytest.raises(UsageError) as info:
        registry.get("zzzzzz")
    assert "did you mean" not in str(info.value)
    assert "valid: alpha, beta" in str(info.value)


def test_did_you_mean() -> None:
    assert did_you_mean("pixel33", ["pixel2", "pixel3", "raspi4"]) == " (did you mean 'pixel3'?)"
    assert did_you_mean("qqq", ["pixel3"]) == ""
    assert did_you_mean("x", []) == ""


@pytest.mark.parametrize("builtin", [SPACES, STRATEGIES, EVALUATORS], ids=["spaces", "strategies", "evaluators"])
def test_builtin_registries_are_populated(builtin: Registry[object]) -> None:
    assert len(builtin) > 0
    for name in builtin:
        assert builtin.get(name) is not None
    with pytest.raises(UsageError, match=re.escape("valid: " + ", ".join(builtin.names()))):
        builtin.get("no-such-thing")


def test_builtin_names() -> None:
    assert {"nb201", "mbconv"} <= set(SPACES)
    assert {"random", "tpe"} <= set(STRATEGIES)
    assert "table" in EVALUATORS


@pytest.mark.parametrize("name", SPACES.names())
def test_space_is_registered_under_its_own_name(name: str) -> None:
    # device files and evaluators look spaces up by ``space.name``
    space = SPACES.get(name)
    assert isinstance(space, SearchSpace)
    assert space.name == name


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_factories_make_seeded_samplers(name: str) -> None:
    import optuna

    from hwnas.strategies import make_sampler

    sampler = make_sampler(name, seed=0, space=SPACES.get("nb201"), latency_ms=5.0)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
