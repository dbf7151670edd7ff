"""The MBConv space: MobileNetV2's skeleton with searchable depth, kernels and expansions.

The skeleton is torchvision's MobileNetV2 (Sandler et al., CVPR 2018): a stride-2 stem, a
fixed first block (expansion 1, 3x3), six searchable stages of inverted-residual blocks
with output channels (24, 32, 64, 96, 160, 320), a 1x1 conv to 1280 and a linear
classifier. As in ProxylessNAS (Cai et al., ICLR 2019) each block slot chooses its depthwise
kernel {3, 5, 7} and expansion {3, 4, 6}, and each of stages 1-5 its depth {2, 3, 4} (the
last stage keeps one block). The input resolution and a width multiplier are searched too.

Architectures are dicts such as ``{"resolution": 224, "width": 1.0, "d1": 2, ...,
"s1b1_k": 3, "s1b1_e": 6, ...}``; the string form lists the active blocks per stage::

    r224-w1.0-k3e6.k3e6|k3e6.k3e6.k3e6|k3e6.k3e6.k3e6.k3e6|k3e6.k3e6.k3e6|k3e6.k3e6.k3e6|k3e6
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hwnas.errors import UsageError
from hwnas.spaces._base import Arch, Dimension, SearchSpace

if TYPE_CHECKING:
    import torch.nn

    from hwnas.spaces._counts import Counts
    from hwnas.spaces._lut import BlockCodec

RESOLUTIONS = (128, 160, 192, 224)
WIDTHS = (0.5, 0.75, 1.0, 1.4)  # MobileNetV2's published width multipliers
DEPTHS = (2, 3, 4)
KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)

#: (output channels, stride of the first block) of the six searchable stages.
STAGES = ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1))
#: Searched depth for stages 1-5; the last stage (320 channels) always has one block.
SEARCHED_DEPTH_STAGES = 5
MAX_DEPTH = (4, 4, 4, 4, 4, 1)
#: Kernel and expansion that inactive block slots are reset to by :meth:`MBConvSpace.canonical`.
INACTIVE_K, INACTIVE_E = 3, 3

STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
LAST_CHANNELS = 1280

_MOBILENET_V2_DEPTHS = (2, 3, 4, 3, 3, 1)
_BLOCK_RE = re.compile(r"k(\d+)e(\d+)")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90 % of it (torchvision's rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class MBBlock:
    """One inverted-residual block: the unit a latency table is keyed by.

    ``size_in`` is the input height (= width) in pixels; ``expansion`` 1 means no 1x1
    expansion conv. The block has a residual add when ``stride == 1 and c_in == c_out``.
    """

    c_in: int
    c_out: int
    kernel: int
    expansion: int
    stride: int
    size_in: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.c_in == self.c_out


def _kdim(stage: int, block: int) -> str:
    return f"s{stage}b{block}_k"


def _edim(stage: int, block: int) -> str:
    return f"s{stage}b{block}_e"


def _depth(arch: Arch, stage: int) -> int:
    return arch[f"d{stage}"] if stage <= SEARCHED_DEPTH_STAGES else 1


def mobilenet_v2_arch(resolution: int = 224, width: float = 1.0) -> Arch:
    """The arch that builds torchvision's ``mobilenet_v2(width_mult=width)`` at ``resolution``.

    Raises:
        ValueError: if ``resolution`` or ``width`` is not a choice of the space.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {list(WIDTHS)}, got {width!r}")
    arch: Arch = {"resolution": resolution, "width": float(width)}
    for stage in range(1, SEARCHED_DEPTH_STAGES + 1):
        arch[f"d{stage}"] = _MOBILENET_V2_DEPTHS[stage - 1]
    for stage, depth in enumerate(_MOBILENET_V2_DEPTHS, start=1):
        for block in range(1, MAX_DEPTH[stage - 1] + 1):
            active = block <= depth
            arch[_kdim(stage, block)] = 3 if active else INACTIVE_K
            arch[_edim(stage, block)] = 6 if active else INACTIVE_E
    return arch


class MBConvSpace(SearchSpace):
    """MobileNetV2 / ProxylessNAS-style space: 49 dimensions over 21 block slots.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input image.
    """

    name = "mbconv"
    description = (
        "MobileNetV2/ProxylessNAS space: resolution 128-224, width 0.5-1.4, depth 2-4 per stage, kernel 3/5/7 and expansion 3/4/6 per block"
    )

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3) -> None:
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        dims = [Dimension("resolution", RESOLUTIONS), Dimension("width", WIDTHS)]
        dims += [Dimension(f"d{s}", DEPTHS) for s in range(1, SEARCHED_DEPTH_STAGES + 1)]
        for stage in range(1, len(STAGES) + 1):
            for block in range(1, MAX_DEPTH[stage - 1] + 1):
                dims.append(Dimension(_kdim(stage, block), KERNELS))
                dims.append(Dimension(_edim(stage, block), EXPANSIONS))
        self._dims = dims

    def dimensions(self) -> list[Dimension]:
        return list(self._dims)

    def canonical(self, arch: Arch) -> Arch:
        """Copy of the arch with the kernel and expansion of blocks beyond a stage's depth reset."""
        out = {d.name: arch[d.name] for d in self._dims}
        for stage in range(1, len(STAGES) + 1):
            for block in range(_depth(arch, stage) + 1, MAX_DEPTH[stage - 1] + 1):
                out[_kdim(stage, block)] = INACTIVE_K
                out[_edim(stage, block)] = INACTIVE_E
        return out

    # -- strings --------------------------------------------------------------
    def to_string(self, arch: Arch) -> str:
        arch = self.validate(arch)
        groups = []
        for stage in range(1, len(STAGES) + 1):
            blocks = range(1, _depth(arch, stage) + 1)
            groups.append(".".join(f"k{arch[_kdim(stage, b)]}e{arch[_edim(stage, b)]}" for b in blocks))
        return f"r{arch['resolution']}-w{arch['width']}-" + "|".join(groups)

    def short(self, arch: Arch) -> str:
        """Resolution, width and the blocks per stage, e.g. ``r224 w1.0 d2343``."""
        arch = self.validate(arch)
        depths = "".join(str(_depth(arch, stage)) for stage in range(1, SEARCHED_DEPTH_STAGES + 1))
        return f"r{arch['resolution']} w{arch['width']} d{depths}"

    def from_string(self, text: str) -> Arch:
        def fail(reason: str) -> UsageError:
            example = self.to_string(mobilenet_v2_arch())
            return UsageError(f"bad mbconv architecture {text!r}: {reason}; expected e.g. {example!r}")

        parts = text.strip().split("-") if isinstance(text, str) else []
        if len(parts) != 3:
            raise fail("expected three '-'-separated parts 'r<resolution>-w<width>-<stages>'")
        res_token, width_token, stages_token = parts
        if not re.fullmatch(r"r\d+", res_token):
            raise fail(f"resolution token {res_token!r} is not 'r<integer>'")
        resolution = int(res_token[1:])
        if resolution not in RESOLUTIONS:
            raise fail(f"resolution {resolution} not allowed (choices {list(RESOLUTIONS)})")
        if not re.fullmatch(r"w\d+(\.\d+)?", width_token):
            raise fail(f"width token {width_token!r} is not 'w<number>'")
        width = float(width_token[1:])
        if width not in WIDTHS:
            raise fail(f"width {width_token[1:]} not allowed (choices {list(WIDTHS)})")
        groups = stages_token.split("|")
        if len(groups) != len(STAGES):
            raise fail(f"{len(groups)} stage group(s) separated by '|', need {len(STAGES)}")

        arch: Arch = {"resolution": resolution, "width": width}
        for stage, group in enumerate(groups, start=1):
            tokens = group.split(".")
            allowed = DEPTHS if stage <= SEARCHED_DEPTH_STAGES else (1,)
            if len(tokens) not in allowed:
                raise fail(f"stage {stage} has {len(tokens)} block(s); allowed depths {list(allowed)}")
            if stage <= SEARCHED_DEPTH_STAGES:
                arch[f"d{stage}"] = len(tokens)
            for block in range(1, MAX_DEPTH[stage - 1] + 1):
                arch[_kdim(stage, block)], arch[_edim(stage, block)] = INACTIVE_K, INACTIVE_E
            for block, token in enumerate(tokens, start=1):
                match = _BLOCK_RE.fullmatch(token)
                if match is None:
                    raise fail(f"block token {token!r} in stage {stage} is not 'k<kernel>e<expansion>'")
                kernel, expansion = int(match[1]), int(match[2])
                where = f"in stage {stage} block {block}"
                if kernel not in KERNELS:
                    raise fail(f"kernel {kernel} {where} not allowed (choices {list(KERNELS)})")
                if expansion not in EXPANSIONS:
                    raise fail(f"expansion {expansion} {where} not allowed (choices {list(EXPANSIONS)})")
                arch[_kdim(stage, block)], arch[_edim(stage, block)] = kernel, expansion
        return self.validate(arch)

    # -- probes ---------------------------------------------------------------
    def smallest(self) -> Arch:
        arch: Arch = {"resolution": min(RESOLUTIONS), "width": min(WIDTHS)}
        for stage in range(1, SEARCHED_DEPTH_STAGES + 1):
            arch[f"d{stage}"] = min(DEPTHS)
        for d in self._dims[2 + SEARCHED_DEPTH_STAGES :]:
            arch[d.name] = min(d.choices)
        return self.canonical(arch)

    def blocks(self, arch: Arch) -> list[MBBlock]:
        """The inverted-residual blocks of the arch in order, the fixed first block included."""
        arch = self.validate(arch)
        width = arch["width"]
        size = -(-arch["resolution"] // 2)  # after the stride-2 stem (padding 1)
        c_in = make_divisible(STEM_CHANNELS * width)
        c_out = make_divisible(FIRST_BLOCK_CHANNELS * width)
        out = [MBBlock(c_in, c_out, 3, 1, 1, size)]
        c_in = c_out
        for stage, (channels, first_stride) in enumerate(STAGES, start=1):
            c_out = make_divisible(channels * width)
            for block in range(1, _depth(arch, stage) + 1):
                stride = first_stride if block == 1 else 1
                kernel, expansion = arch[_kdim(stage, block)], arch[_edim(stage, block)]
                out.append(MBBlock(c_in, c_out, kernel, expansion, stride, size))
                size = -(-size // stride)
                c_in = c_out
        return out

    # -- models ---------------------------------------------------------------
    def counts(self, arch: Arch) -> Counts:
        from hwnas.spaces._mbconv_counts import mbconv_counts

        return mbconv_counts(self, arch)  # validates the arch

    def peak_memory_bytes(self, arch: Arch) -> int:
        from hwnas.spaces._mbconv_memory import mbconv_peak_bytes

        return mbconv_peak_bytes(self, arch)  # validates the arch

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        arch = self.validate(arch)
        return (self.in_channels, arch["resolution"], arch["resolution"])

    def build(self, arch: Arch) -> torch.nn.Module:
        from hwnas.spaces._mbconv_model import MBConvNet

        arch = self.validate(arch)
        width = arch["width"]
        return MBConvNet(
            self.blocks(arch),
            in_channels=self.in_channels,
            stem_channels=make_divisible(STEM_CHANNELS * width),
            last_channels=make_divisible(LAST_CHANNELS * max(1.0, width)),
            num_classes=self.num_classes,
        )

    # -- what the space offers ------------------------------------------------------
    def for_data(self, *, in_channels: int, num_classes: int, image_size: tuple[int, int] | None = None) -> MBConvSpace:
        """The same space with a stem for ``in_channels`` and a classifier for ``num_classes``. The
        input resolution is searched, so ``image_size`` changes nothing: a network takes its arch's
        resolution, and the images are resized to it to train, score and deploy it."""
        if (in_channels, num_classes) == (self.in_channels, self.num_classes):
            return self
        return MBConvSpace(num_classes=num_classes, in_channels=in_channels)

    def lut_codec(self) -> BlockCodec:
        from hwnas.spaces._mbconv_lut import MBConvCodec

        return MBConvCodec(self)

    def supernet(self, *, num_classes: int, in_channels: int, resolution: int | None = None, width: float | None = None) -> torch.nn.Module:
        """The ProxylessNAS supernet at one ``resolution`` and ``width`` (None: the smallest choice)."""
        from hwnas.darts.mbconv_supernet import MBConvSupernet

        local = self.for_data(in_channels=in_channels, num_classes=num_classes)
        return MBConvSupernet(local, resolution=resolution or min(RESOLUTIONS), width=width if width is not None else min(WIDTHS))

    def elastic_supernet(self, *, kernel_transform: bool = True) -> torch.nn.Module:
        """The Once-for-All supernet (:class:`hwnas.ofa.elastic.ElasticMBConvNet`) of this space."""
        from hwnas.ofa.elastic import ElasticMBConvNet

        return ElasticMBConvNet(self, kernel_transform=kernel_transform)
