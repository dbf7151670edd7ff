"""A folder of image files, one subfolder per class (``--data folder:DIR``), decoded as it streams.

The layout is torchvision's ``ImageFolder`` convention, with the optional splits beside it::

    DIR/<class>/**/*.png        the training images, one subfolder per class
    DIR/val/<class>/...         optional: the validation split (the same class names, or some of them)
    DIR/test/<class>/...        optional: the held-out test split

or, the layout of ImageNet-style downloads, ``DIR/train/<class>/...`` beside ``DIR/val`` and
``DIR/test``. ``val`` and ``test`` are therefore not class names at the top of DIR. The classes
are the training root's subfolders sorted by name (label ``i`` is the ``i``-th name, as
``ImageFolder`` numbers them); hidden entries (``.name``) and files of other types are skipped,
and each class folder is read recursively. Accepted files: :data:`EXTENSIONS`.

Loading reads only each file's header (its mode and size), so a folder of any size loads in
seconds and holds no pixels: a batch decodes its own files (Pillow) and resizes them straight to
the size asked for (the candidate's resolution) or else to the folder's most common size. Every
image must have the same number of channels (grey 1, grey+alpha 2, RGB 3, RGBA 4; a palette image
counts as RGB, or RGBA with a transparent colour); 8-bit values are scaled by 1/255, 16-bit grey
by 1/65535. Bad input is one :class:`~hwnas.errors.UsageError` line that names the folder or file:
a missing folder, no class folders, a single class, an empty class folder, mixed channel counts,
an unreadable image (at load) or a truncated one (when its batch decodes it).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import UsageError

#: File endings read as images (case-insensitive), torchvision's IMG_EXTENSIONS plus .gif.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
#: Folder names at the top of DIR that are splits, not classes.
SPLITS = ("train", "val", "test")
EXAMPLE = "folder:/data/flowers (flowers/roses/*.jpg, flowers/tulips/*.jpg, ...)"
INSTALL = "pip install 'hwnas[images]'"

_GREY = frozenset({"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_CHANNEL_NAMES = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(f"--data folder: decodes images with Pillow, which is not installed; {INSTALL} (or pip install pillow)") from None
    return Image


def _decode_errors(image: Any) -> tuple[type[BaseException], ...]:
    return (OSError, SyntaxError, ValueError, EOFError, struct.error, image.DecompressionBombError)


def _channels(im: Any, path: Path) -> int:
    """Channels an image decodes to, from its header: 1, 2, 3 or 4."""
    mode = im.mode
    if mode in _GREY:
        return 1
    if mode in ("LA", "La"):
        return 2
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        return 4
    if mode in ("P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return 3
    raise UsageError(f"image {str(path)!r} has mode {mode!r} (e.g. floating-point pixels), which hwnas does not read; save it as 8-bit PNG")


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Image files decoded on demand: what a :class:`~hwnas.datasets.Dataset` holds instead of pixels.

    Attributes:
        paths: the files, one per sample (a 1-D array of str).
        channels: channels of every image (1 to 4).
        height, width: the size a batch is decoded at unless it asks for another.
    """

    paths: np.ndarray
    channels: int
    height: int
    width: int

    ndim = 4
    dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W), as an image array of the same data would have."""
        return (len(self.paths), self.channels, self.height, self.width)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: np.ndarray) -> ImageFiles:
        """The files at ``idx``, still undecoded."""
        return ImageFiles(self.paths[idx], self.channels, self.height, self.width)

    def resized(self, height: int, width: int) -> ImageFiles:
        """The same files, decoded at ``height`` x ``width`` by default."""
        return ImageFiles(self.paths, self.channels, height, width)

    def read(self, idx: np.ndarray, size: int | None = None) -> np.ndarray:
        """float32 (len(idx), C, H, W) in [0, 1]: the files at ``idx`` decoded now, each resized to
        ``size`` x ``size`` when given, else to ``height`` x ``width`` (Pillow's antialiased bilinear).

        Raises:
            UsageError: naming the file, for one that cannot be decoded (truncated, corrupt).
        """
        h, w = (size, size) if size is not None else (self.height, self.width)
        out = np.empty((len(idx), self.channels, h, w), dtype=np.float32)
        for k, i in enumerate(idx):
            out[k] = decode(Path(str(self.paths[i])), self.channels, (h, w))
        return out


def decode(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as float32 (channels, H, W) in [0, 1] at ``size`` (H, W)."""
    image = _pil()
    try:
        with image.open(path) as im:
            got = _channels(im, path)
            if got != channels:
                raise UsageError(f"image {str(path)!r} has {got} channel(s), the others {channels}; convert it to the same mode")
            if im.mode in _SIXTEEN_BIT:
                im, scale = im.convert("I"), 65535.0
            else:
                im, scale = im.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]), 255.0
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), image.Resampling.BILINEAR)
            pixels = np.asarray(im, dtype=np.float32)
    except _decode_errors(image) as exc:
        raise UsageError(f"cannot decode image {str(path)!r} ({_why(exc)}); remove or replace the file") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.clip(pixels.transpose(2, 0, 1) / np.float32(scale), 0.0, 1.0)


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text[:120]}" if text else exc.__class__.__name__


@dataclass(frozen=True)
class Split:
    """One split of a folder: its files (header-checked), labels and where it lives."""

    root: Path
    files: ImageFiles
    labels: np.ndarray


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


@dataclass(frozen=True)
class Folder:
    """A scanned image folder: its class names (label order) and splits."""

    top: Path
    names: list[str]
    train: Split
    val: Split | None
    test: Split | None


def scan(arg: str) -> Folder:
    """Read the layout and every file's header of the image folder ``arg``."""
    top = Path(arg).expanduser()
    if not top.is_dir():
        what = "is not a folder" if top.exists() else "does not exist"
        raise UsageError(f"image folder {str(top)!r} {what}; give a folder with one subfolder of images per class, e.g. {EXAMPLE}")
    dirs = {p.name: p for p in _visible_dirs(top)}
    if "train" in dirs:
        stray = [n for n in dirs if n not in SPLITS]
        if stray:
            raise UsageError(
                f"image folder {str(top)!r} has train/ and also {', '.join(s + '/' for s in stray[:3])}: with a train/ folder, "
                f"the class folders go inside train/ (and val/, test/)"
            )
        train_root = dirs["train"]
        classes = _visible_dirs(train_root)
    else:
        train_root = top
        classes = [p for n, p in dirs.items() if n not in SPLITS]
    if not classes:
        loose = len(_image_files(train_root))
        held = f" (it holds {loose} image(s) directly)" if loose else ""
        raise UsageError(
            f"image folder {str(train_root)!r} has no class subfolders{held}; put each class's images in a subfolder named "
            f"after the class, e.g. {EXAMPLE}"
        )
    names = [p.name for p in classes]
    if len(names) == 1:
        raise UsageError(
            f"image folder {str(train_root)!r} has a single class folder ({names[0]}/); a classifier needs two or more, e.g. {EXAMPLE}"
        )
    train = _read_split(train_root, names, exclude=() if train_root != top else SPLITS)
    others: dict[str, Split | None] = {}
    for split in ("val", "test"):
        part = _read_split(dirs[split], names) if split in dirs else None
        if part is not None and part.files.channels != train.files.channels:
            raise UsageError(
                f"image folder {str(part.root)!r} holds {_CHANNEL_NAMES[part.files.channels]} images, the training images are "
                f"{_CHANNEL_NAMES[train.files.channels]}; convert every image to one mode"
            )
        # Every split decodes at the training images' size unless a batch asks for another.
        others[split] = None if part is None else Split(part.root, part.files.resized(train.files.height, train.files.width), part.labels)
    return Folder(top, names, train, others["val"], others["test"])


def _read_split(root: Path, names: Sequence[str], *, exclude: Sequence[str] = ()) -> Split:
    """The files of one split, header-checked (its subfolders named in ``exclude`` are other
    splits). The training split has every class folder by construction; val and test may hold a
    subset of the classes, and no others."""
    image = _pil()
    present = {p.name: p for p in _visible_dirs(root) if p.name not in exclude}
    unknown = [n for n in present if n not in names]
    if unknown:
        raise UsageError(
            f"image folder {str(root)!r} has class folder(s) {', '.join(unknown[:3])} that the training images lack "
            f"(classes: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); use the same class names"
        )
    if not present:
        raise UsageError(f"image folder {str(root)!r} has no class subfolders; give it the training classes' folders, e.g. {names[0]}/")
    paths: list[str] = []
    labels: list[int] = []
    sizes: Counter[tuple[int, int]] = Counter()
    seen: dict[int, Path] = {}  # channels -> the first file that has them
    for label, name in enumerate(names):
        if name not in present:
            continue
        files = _image_files(present[name])
        if not files:
            raise UsageError(f"class folder {str(present[name])!r} holds no images ({' '.join(EXTENSIONS)}); add some or remove it")
        for path in files:
            try:
                with image.open(path) as im:
                    c = _channels(im, path)
                    w, h = im.size
            except _decode_errors(image) as exc:
                raise UsageError(f"cannot read image {str(path)!r} ({_why(exc)}); remove or replace the file") from None
            seen.setdefault(c, path)
            sizes[(h, w)] += 1
            paths.append(str(path))
            labels.append(label)
    if len(seen) > 1:
        kinds = "; ".join(f"{_CHANNEL_NAMES[c]} ({c}), e.g. {str(p)!r}" for c, p in sorted(seen.items()))
        raise UsageError(f"image folder {str(root)!r} mixes channel counts: {kinds}; convert every image to one mode (all RGB or all grey)")
    # The most common size (the larger one on a tie): images of other sizes are resized to it.
    (h, w), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    return Split(root, ImageFiles(np.array(paths), next(iter(seen)), h, w), np.array(labels, dtype=np.int64))
