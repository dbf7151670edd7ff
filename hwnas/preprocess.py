"""The preprocessing a deployed model needs, as data a program reads: ``hwnas.preprocessing``.

Every model hwnas exports carries one JSON object in its ONNX metadata under
``hwnas.preprocessing``::

    {"input_shape": [C, H, W], "layout": "NCHW", "dtype": "float32", "color": "grey",
     "resize": "bilinear", "scale": 0.00392157, "mean": [0.0], "std": [1.0],
     "labels": ["cat", "dog"], "baked": false}

An image becomes the model's input by: decoding it to ``color`` (grey, grey+alpha, rgb, rgba),
resizing it to H x W (``resize``), multiplying its pixel values by ``scale``, subtracting ``mean``
and dividing by ``std`` per channel, and laying it out as ``layout`` with a batch axis in front.
Output ``i`` is the score of ``labels[i]``. Where ``baked`` is true the model does the scaling and
normalisation itself (``--bake-preprocessing``): it takes the raw pixel values as float32.

:func:`load_images` does exactly that with Pillow and nothing but the metadata (``hwnas predict``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwnas.errors import UsageError

if TYPE_CHECKING:
    from hwnas.datasets import Dataset

KEY = "hwnas.preprocessing"
#: Pillow's mode for each channel count (what an image is converted to before it is resized).
COLORS = {1: "grey", 2: "grey+alpha", 3: "rgb", 4: "rgba"}
_PIL_MODES = {"grey": "L", "grey+alpha": "LA", "rgb": "RGB", "rgba": "RGBA"}


def preprocessing(
    shape: Sequence[int],
    *,
    scale: float,
    labels: Sequence[str],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    baked: bool = False,
) -> dict[str, Any]:
    """The ``hwnas.preprocessing`` object of a model taking (C, H, W) ``shape`` inputs."""
    c, h, w = (int(v) for v in shape)
    mean = [0.0] * c if mean is None else [float(m) for m in mean]
    std = [1.0] * c if std is None else [float(s) for s in std]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean and std need {c} values (one per channel), got {len(mean)} and {len(std)}")
    return {
        "input_shape": [c, h, w],
        "layout": "NCHW",
        "dtype": "float32",
        "color": COLORS.get(c, f"{c} channels"),
        "resize": "bilinear",
        "scale": float(scale),
        "mean": mean,
        "std": std,
        "labels": [str(label) for label in labels],
        "baked": bool(baked),
    }


def from_dataset(ds: Dataset, shape: Sequence[int]) -> dict[str, Any]:
    """The preprocessing of a network trained on ``ds`` (images in [0, 1], not normalised) taking ``shape`` inputs."""
    labels = list(ds.labels) if ds.labels else [str(i) for i in range(ds.num_classes)]
    return preprocessing(shape, scale=getattr(ds, "pixel_scale", 1 / 255), labels=labels)


def read(model: str | Path) -> dict[str, Any]:
    """The ``hwnas.preprocessing`` object of an ONNX file.

    Raises:
        UsageError: the file is not an ONNX model, or carries no (or a malformed) preprocessing object.
    """
    import onnx

    path = Path(model)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise UsageError(f"model {str(path)!r} does not exist; give the .onnx file hwnas exported, e.g. RUN/final/best.onnx") from None
    except Exception as exc:  # onnx raises DecodeError and others on a file that is no model
        raise UsageError(f"{str(path)!r} is not an ONNX model ({exc.__class__.__name__}); give the .onnx file hwnas exported") from None
    props = {p.key: p.value for p in proto.metadata_props}
    text = props.get(KEY)
    if text is None:
        raise UsageError(
            f"model {str(path)!r} carries no {KEY} metadata (exported by another tool or an older hwnas); "
            "export it again with 'hwnas export' or 'hwnas train'"
        )
    try:
        pre = json.loads(text)
        c = int(pre["input_shape"][0])
        if len(pre["input_shape"]) != 3:
            raise ValueError("input_shape is not [C, H, W]")
        if len(pre["mean"]) != c or len(pre["std"]) != c or not isinstance(pre["labels"], list):
            raise ValueError("mean, std or labels")
        float(pre["scale"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"model {str(path)!r}: its {KEY} metadata is malformed ({exc}); export it again") from None
    return dict(pre)


def load_images(paths: Sequence[str | Path], pre: dict[str, Any]) -> np.ndarray:
    """Image files as the model of ``pre`` takes them: float32 (N, C, H, W).

    Raises:
        UsageError: naming a file that does not exist or cannot be decoded.
    """
    from hwnas.image_folder import _decode_errors, _pil

    image = _pil()
    c, h, w = (int(v) for v in pre["input_shape"])
    mode = _PIL_MODES.get(str(pre.get("color")))
    if mode is None:
        raise UsageError(f"the model's preprocessing names colour {pre.get('color')!r}, which hwnas cannot decode to")
    out = np.empty((len(paths), c, h, w), dtype=np.float32)
    for k, p in enumerate(paths):
        path = Path(p)
        if not path.is_file():
            raise UsageError(f"image {str(path)!r} does not exist; give image files, e.g. hwnas predict model.onnx photo.png")
        try:
            with image.open(path) as im:
                sixteen = im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N") and c == 1
                im = im.convert("I") if sixteen else im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.float32)
        except _decode_errors(image) as exc:
            raise UsageError(f"cannot decode image {str(path)!r} ({exc.__class__.__name__}); give a PNG, JPEG or BMP file") from None
        if sixteen:
            pixels = pixels * (255.0 / 65535.0)  # as 8-bit values, which ``scale`` is for
        out[k] = pixels.reshape(h, w, c).transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None]
    if pre.get("baked"):
        return out
    return normalise(out, pre)


def raw_pixels(x: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """The raw pixel values of network inputs ``x`` (N, C, H, W): :func:`normalise` undone."""
    c = x.shape[1]
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, c, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, c, 1, 1)
    return ((x * std + mean) / np.float32(pre["scale"])).astype(np.float32)


def baked(model: Any, pre: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``model`` (a torch module taking normalised inputs) behind its own scaling and
    normalisation, so it takes raw pixel values, and the preprocessing object that says so."""
    import torch

    c = len(pre["mean"])
    scale = torch.tensor([pre["scale"] / s for s in pre["std"]], dtype=torch.float32).reshape(1, c, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(pre["mean"], pre["std"], strict=True)], dtype=torch.float32).reshape(1, c, 1, 1)

    class Baked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.register_buffer("scale", scale)
            self.register_buffer("shift", shift)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x * self.scale - self.shift)  # (x * scale - mean) / std, in one multiply and add

    return Baked().eval(), {**pre, "baked": True}


def normalise(pixels: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Raw pixel values (N, C, H, W) scaled and normalised as ``pre`` says."""
    c = pixels.shape[1]
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, c, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, c, 1, 1)
    return ((pixels * np.float32(pre["scale"]) - mean) / std).astype(np.float32)
