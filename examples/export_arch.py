"""Export one NB201 architecture to a verified ONNX file and read it back with ONNX Runtime.

``export_verified`` builds the network (untrained, seeded weights), exports it, runs
``onnx.checker`` and an ORT-vs-PyTorch parity check, stores the arch in the model's
metadata and re-measures its latency on this machine's CPU.

    python examples/export_arch.py ["|nor_conv_3x3~0|+|...|"] [--out model.onnx]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwnas.device import get_device
from hwnas.export import export_verified
from hwnas.spaces import get_space

ARCH_6111 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def export_and_load(arch_text: str, path: Path) -> None:
    space = get_space("nb201")
    arch = space.from_string(arch_text)
    result = export_verified(space, arch, path, device=get_device("cpu"))
    print(f"wrote       {result.path} ({result.size_bytes / 1e6:.2f} MB, {result.exporter} exporter, opset {result.opset})")
    print(f"checks      {result.checker}; parity max |diff| {result.parity_max_abs_diff:.1e} on batches {result.parity_batches}")
    if result.measurement is not None:
        m = result.measurement
        print(f"latency     {m.median_ms:.3f} ms median (p90 {m.p90_ms:.3f}, {m.repeats} runs, {m.threads} thread) on {result.measured_on}")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta()
    print("metadata:")
    for key, value in sorted(meta.custom_metadata_map.items()):
        print(f"  {key} = {value}")
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((2, *space.input_shape(arch)), dtype=np.float32)
    (logits,) = session.run(None, {inp.name: x})
    print(f"input       {inp.name} {inp.shape}; a batch of {x.shape[0]} gives logits {logits.shape}")
    print(f"predicted   classes {logits.argmax(1).tolist()} (untrained weights)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arch", nargs="?", default=ARCH_6111, help="NB201 arch string (default: benchmark index 6111)")
    p.add_argument("--out", type=Path, default=None, help="where to write the .onnx (default: a temp dir, removed afterwards)")
    args = p.parse_args()
    if args.out is not None:
        export_and_load(args.arch, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmp:
            export_and_load(args.arch, Path(tmp) / "model.onnx")


if __name__ == "__main__":
    main()
