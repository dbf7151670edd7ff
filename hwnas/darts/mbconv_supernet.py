"""A ProxylessNAS-style weight-sharing network over the MBConv space.

ProxylessNAS (Cai et al., ICLR 2019) puts a *mixed block* in every block slot of the
MobileNetV2 skeleton: nine MBConv candidates (kernel 3/5/7 x expansion 3/4/6), each with
its own weights, plus an identity ("skip") where the slot may be absent, which is how depth
is searched. The caller passes one gate vector per slot; the block returns
``sum_c gate[c] * op_c(x)`` and runs only the candidates whose gate is non-zero, so a one-hot
or sparse gate (ProxylessNAS' binarised paths) costs one or a few paths instead of all.

Resolution and width are fixed per supernet: they go into every derived arch, while the
network itself is fully convolutional and runs at whatever input size it is given.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from hwnas.darts.supernet import Decision, Supernet
from hwnas.spaces import Arch
from hwnas.spaces._mbconv_model import ConvBNAct, InvertedResidual, MBConvNet, init_weights
from hwnas.spaces.mbconv import (
    DEPTHS,
    EXPANSIONS,
    INACTIVE_E,
    INACTIVE_K,
    KERNELS,
    LAST_CHANNELS,
    MAX_DEPTH,
    RESOLUTIONS,
    SEARCHED_DEPTH_STAGES,
    STAGES,
    WIDTHS,
    MBConvSpace,
    make_divisible,
)

SKIP = "skip"
#: Labels of the MBConv candidates of every mixed block, kernel-major.
BLOCK_CHOICES: tuple[str, ...] = tuple(f"k{k}e{e}" for k in KERNELS for e in EXPANSIONS)
_KERNEL_EXPANSION = {f"k{k}e{e}": (k, e) for k in KERNELS for e in EXPANSIONS}
_MIN_DEPTH = min(DEPTHS)


class MixedBlock(nn.Module):
    """One block slot: an :class:`InvertedResidual` per choice of :data:`BLOCK_CHOICES`,
    plus an identity when ``skippable``.

    Attributes:
        candidates: the MBConv candidates, in :data:`BLOCK_CHOICES` order.
        choices: the labels, candidates first and ``"skip"`` last when skippable.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, *, skippable: bool) -> None:
        super().__init__()
        if skippable and (stride != 1 or c_in != c_out):
            raise ValueError(f"a skippable slot needs stride 1 and c_in == c_out, got {c_in}->{c_out} stride {stride}")
        self.candidates = nn.ModuleList(InvertedResidual(c_in, c_out, k, e, stride) for k, e in _KERNEL_EXPANSION.values())
        self.choices = BLOCK_CHOICES + ((SKIP,) if skippable else ())

    def forward(self, x: torch.Tensor, gate: torch.Tensor, active: Sequence[bool]) -> torch.Tensor:
        """``sum_c gate[c] * op_c(x)`` over the choices whose ``active`` flag is set
        (``active[c]`` is ``gate[c] != 0``, read once per supernet forward)."""
        out: torch.Tensor | None = None
        for index, flag in enumerate(active):
            if not flag:
                continue
            y = x if index == len(self.candidates) else self.candidates[index](x)
            term = gate[index] * y
            out = term if out is None else out + term
        if out is None:
            raise ValueError("a gate vector has no non-zero entry")
        return out


class MBConvSupernet(Supernet):
    """ProxylessNAS supernet of :class:`MBConvSpace` at one resolution and width.

    Channels and strides are the space's model's at ``width``: a stride-2 stem, the fixed
    first block, one :class:`MixedBlock` per block slot (stage 1-6, block 1 to its maximum
    depth), the 1x1 head conv, global pooling and the classifier. Slots 3 and 4 of stages
    1-5 have a ``"skip"`` choice (the stage's depth is 2 plus its non-skip slots); those slots
    have stride 1 and equal in/out channels, so skip is an identity.

    Args:
        space: the space that :meth:`derive` returns archs of (its ``num_classes`` and
            ``in_channels`` shape the network).
        resolution: the ``resolution`` of every derived arch (not used by the forward pass).
        width: the width multiplier of the network and of every derived arch.

    Shapes: ``forward(x, gates)``: ``(N, in_channels, H, W) -> (N, num_classes)``, any ``H, W``.
    """

    skip_choices = frozenset({SKIP})

    def __init__(self, space: MBConvSpace, *, resolution: int, width: float) -> None:
        super().__init__()
        if not isinstance(space, MBConvSpace):
            raise TypeError(f"space must be an MBConvSpace, got {type(space).__name__}")
        if isinstance(resolution, bool) or resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")
        if isinstance(width, bool) or width not in WIDTHS:
            raise ValueError(f"width must be one of {list(WIDTHS)}, got {width!r}")
        self.space = space
        self.resolution = int(resolution)
        self.width = float(width)

        # The deepest arch lists every slot with the space's own channel and stride rules.
        deepest = self.space.blocks(self._full_depth_arch())
        first, slots = deepest[0], deepest[1:]
        self._slots: list[tuple[int, int]] = [(s, b) for s in range(1, len(STAGES) + 1) for b in range(1, MAX_DEPTH[s - 1] + 1)]
        self.stem = ConvBNAct(space.in_channels, first.c_in, 3, stride=2)
        self.first = InvertedResidual(first.c_in, first.c_out, first.kernel, first.expansion, first.stride)
        self.blocks = nn.ModuleList(
            MixedBlock(spec.c_in, spec.c_out, spec.stride, skippable=block > _MIN_DEPTH)
            for spec, (_, block) in zip(slots, self._slots, strict=True)
        )
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, self.width))  # as MBConvSpace.build
        self.head = ConvBNAct(slots[-1].c_out, last_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(last_channels, space.num_classes))
        self._decisions = [Decision(f"s{s}b{b}", blk.choices) for (s, b), blk in zip(self._slots, self._mixed(), strict=True)]
        init_weights(self)

    def _full_depth_arch(self) -> Arch:
        arch: Arch = {"resolution": self.resolution, "width": self.width}
        arch.update({f"d{s}": max(DEPTHS) for s in range(1, SEARCHED_DEPTH_STAGES + 1)})
        for stage in range(1, len(STAGES) + 1):
            for block in range(1, MAX_DEPTH[stage - 1] + 1):
                arch[f"s{stage}b{block}_k"], arch[f"s{stage}b{block}_e"] = INACTIVE_K, INACTIVE_E
        return arch

    # -- the Supernet interface -------------------------------------------------
    def decisions(self) -> list[Decision]:
        """One decision per block slot, named ``s{stage}b{block}``, in stage and block order."""
        return list(self._decisions)

    def forward(self, x: torch.Tensor, gates: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(gates) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} gate vectors (one per decision), got {len(gates)}")
        for decision, gate in zip(self._decisions, gates, strict=True):
            if gate.shape != (len(decision.choices),):
                raise ValueError(f"gate of decision {decision.name!r} has shape {tuple(gate.shape)}; expected ({len(decision.choices)},)")
        # One host read for all decisions (one device sync on a GPU) tells which paths to run.
        flags = torch.cat([g.detach() for g in gates]).ne(0).tolist()
        out = self.first(self.stem(x))
        start = 0
        for decision, block, gate in zip(self._decisions, self.blocks, gates, strict=True):
            stop = start + len(decision.choices)
            if not any(flags[start:stop]):
                raise ValueError(f"gate of decision {decision.name!r} is all zeros")
            out = block(out, gate, flags[start:stop])
            start = stop
        return self.classifier(self.flatten(self.pool(self.head(out))))

    def derive(self, picks: Sequence[int]) -> Arch:
        """The canonical arch at this resolution and width: each stage's active blocks are its
        non-skip picks in slot order (a skip in block 3 then ``k5e6`` in block 4 gives depth 3
        with block 3 = k5e6)."""
        labels = self._labels(picks)
        arch: Arch = {"resolution": self.resolution, "width": self.width}
        per_stage: dict[int, list[str]] = {s: [] for s in range(1, len(STAGES) + 1)}
        for (stage, _), label in zip(self._slots, labels, strict=True):
            if label != SKIP:
                per_stage[stage].append(label)
        for stage, chosen in per_stage.items():
            if stage <= SEARCHED_DEPTH_STAGES:
                arch[f"d{stage}"] = len(chosen)
            for block in range(1, MAX_DEPTH[stage - 1] + 1):
                kernel, expansion = _KERNEL_EXPANSION[chosen[block - 1]] if block <= len(chosen) else (INACTIVE_K, INACTIVE_E)
                arch[f"s{stage}b{block}_k"], arch[f"s{stage}b{block}_e"] = kernel, expansion
        return self.space.validate(arch)

    def picks_of(self, arch: Arch) -> list[int]:
        """The picks whose :meth:`derive` is ``arch``: active blocks in order, then skips.

        Raises:
            UsageError: if ``arch`` is not an arch of the space.
            ValueError: if its resolution or width is not this supernet's.
        """
        arch = self.space.validate(arch)
        if arch["resolution"] != self.resolution or arch["width"] != self.width:
            raise ValueError(
                f"arch has resolution {arch['resolution']} and width {arch['width']}; "
                f"this supernet derives resolution {self.resolution} and width {self.width}"
            )
        picks = []
        for (stage, block), decision in zip(self._slots, self._decisions, strict=True):
            depth = arch[f"d{stage}"] if stage <= SEARCHED_DEPTH_STAGES else 1
            label = f"k{arch[f's{stage}b{block}_k']}e{arch[f's{stage}b{block}_e']}" if block <= depth else SKIP
            picks.append(decision.choices.index(label))
        return picks

    # -- inheritance ------------------------------------------------------------
    def subnet(self, picks: Sequence[int]) -> MBConvNet:
        """``space.build(derive(picks))`` with this supernet's weights and BatchNorm statistics
        copied in (stem, first block, the picked candidates, head, classifier).

        In eval mode its output equals :meth:`forward` with one-hot gates at ``picks``. The
        copy shares no tensors with the supernet and is left in the supernet's train/eval mode.
        """
        labels = self._labels(picks)
        net = self.space.build(self.derive(picks))
        if not isinstance(net, MBConvNet):
            raise TypeError(f"MBConvSpace.build returned {type(net).__name__}, expected MBConvNet")
        chosen = [blk.candidates[blk.choices.index(label)] for blk, label in zip(self._mixed(), labels, strict=True) if label != SKIP]
        sources: list[nn.Module] = [self.stem, self.first, *chosen, self.head]
        if len(net.features) != len(sources):
            raise RuntimeError(f"built network has {len(net.features)} feature layers, the picks give {len(sources)}")
        like = next(self.parameters())
        net = net.to(device=like.device, dtype=like.dtype)  # before copying, so nothing is rounded
        with torch.no_grad():
            for target, source in zip(net.features, sources, strict=True):
                target.load_state_dict(source.state_dict())
            net.classifier.load_state_dict(self.classifier.state_dict())
        return net.train(self.training)

    def _mixed(self) -> list[MixedBlock]:
        return cast(list[MixedBlock], list(self.blocks))

    def _labels(self, picks: Sequence[int]) -> list[str]:
        if len(picks) != len(self._decisions):
            raise ValueError(f"expected {len(self._decisions)} picks (one per decision), got {len(picks)}")
        labels = []
        for decision, pick in zip(self._decisions, picks, strict=True):
            try:
                index = -1 if isinstance(pick, bool) else operator.index(pick)
            except TypeError:
                index = -1
            if not 0 <= index < len(decision.choices):
                raise ValueError(f"pick {pick!r} of decision {decision.name!r} must be an index in [0, {len(decision.choices)})")
            labels.append(decision.choices[index])
        return labels
