"""hwnas-agent: measure ONNX models on the device they will ship to (protocol in agent/PROTOCOL.md).

Needs only Python, onnxruntime and numpy; never imports hwnas, torch or optuna.
"""

__version__ = "0.1.0"
PROTOCOL = 1

__all__ = ["PROTOCOL", "__version__"]
