"""The supernet interface shared by every space's weight-sharing network.

A supernet exposes its *decisions*: each one picks one of a few labelled choices, and any
assignment of a choice to every decision is a valid architecture of the space (``derive``).
The trainer owns the architecture parameters and passes, on every forward, one gate vector per
decision (softmax weights for DARTS, a Gumbel-softmax sample for FBNet); the supernet mixes
its candidate ops with those gates. Latency and collapse checks read the same decisions.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.spaces import Arch, SearchSpace


@dataclass(frozen=True)
class Decision:
    """One choice point of a supernet: a unique name and its choice labels (JSON-safe)."""

    name: str
    choices: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"decision {self.name!r} needs at least two choices, got {self.choices!r}")


class Supernet(nn.Module, abc.ABC):
    """Base class: subclasses build the mixed ops in ``__init__`` and implement the four methods.

    Attributes:
        space: the search space that ``derive`` returns architectures of.
        skip_choices: labels that add no computation (skip / identity / zero): what a collapsed
            search piles onto. The collapse guard watches their share of the derived choices.
    """

    space: SearchSpace
    skip_choices: frozenset[str] = frozenset()
    #: Labels whose output is zero (NB201's ``none``). Taking one out of a mixture only rescales
    #: the others, so the perturbation selection cannot score it; it never selects one.
    zero_choices: frozenset[str] = frozenset()
    #: Largest share of parameter-free derived choices before the collapse guard acts (1.0: off,
    #: for spaces where a skip is a legitimate depth choice).
    max_skip_share: float = 1.0

    @abc.abstractmethod
    def decisions(self) -> list[Decision]:
        """The decisions, in the order gates are passed to :meth:`forward`."""

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of a batch ``x`` with decision ``i`` mixing its choices by ``gates[i]``
        (a 1-D tensor with one weight per choice; a one-hot gate runs that single choice)."""

    @abc.abstractmethod
    def derive(self, picks: Sequence[int]) -> Arch:
        """The canonical arch of ``space`` that takes choice ``picks[i]`` at decision ``i``."""

    @abc.abstractmethod
    def picks_of(self, arch: Arch) -> list[int]:
        """The inverse of :meth:`derive`: the choice index per decision that gives ``arch``
        (for archs that ``derive`` can produce)."""
