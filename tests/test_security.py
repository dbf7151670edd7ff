"""No code execution from files a user can hand in: a static scan of hwnas's own source.

Tables and results are JSON/CSV/NPZ read with schema checks, so nothing in ``hwnas/``,
``agent/``, ``tools/``, ``benchmarks/`` or ``examples/`` may unpickle (``pickle``/``dill``/``joblib``/
``shelve``/``marshal`` loads, ``np.load(allow_pickle=True)``, ``torch.load`` without
``weights_only=True``, ``pandas.read_pickle``), evaluate text (``eval``, ``exec``, ``compile``; so
ONNX metadata and config values stay data), or load YAML with a loader that builds objects.
The one exception is a restricted unpickler: a ``pickle.Unpickler`` subclass whose
``find_class`` only raises (``tools/convert_benchmarks.py`` reads upstream ``.pt`` files of
plain lists and dicts that way). The scanner is tested on planted snippets first, so a scan
that finds nothing means something.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("hwnas", "agent", "tools", "benchmarks", "examples")

#: Calls that deserialise executable objects whatever their arguments.
ALWAYS_UNSAFE = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "_pickle.Unpickler",
    "cPickle.load",
    "cPickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
    "pandas.read_pickle",
    "torch.hub.load",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
    "numpy.lib.format.read_array_header_pickle",
}
#: Builtins that run text as code.
CODE_BUILTINS = {"eval", "exec", "compile"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNPICKLERS = {"pickle.Unpickler", "_pickle.Unpickler"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """'np.load' -> 'numpy.load' (through the file's imports); None for calls on computed values."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _only_raises(func: ast.FunctionDef) -> bool:
    body = [s for s in func.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]  # drop the docstring
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe load or evaluation in ``source``, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {"np": "numpy", "pd": "pandas"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {_dotted(b, aliases) for b in node.bases}
            if bases & UNPICKLERS:
                find_class = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "find_class"), None)
                if find_class is None or not _only_raises(find_class):
                    flag(node, f"pickle.Unpickler subclass {node.name} whose find_class does not refuse every class")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        if name in ALWAYS_UNSAFE or name.endswith(".read_pickle"):
            flag(node, f"{name}() deserialises code")
        elif isinstance(node.func, ast.Name) and name in CODE_BUILTINS:
            flag(node, f"{name}() runs text as code")
        elif name in ("torch.load", "torch.serialization.load"):
            if not _is_const(_kw(node, "weights_only"), True):
                flag(node, "torch.load() without weights_only=True")
        elif name in ("numpy.load", "numpy.lib.npyio.load"):
            allow = _kw(node, "allow_pickle")
            if (allow is not None and not _is_const(allow, False)) or any(k.arg is None for k in node.keywords):
                flag(node, "numpy.load() that may allow pickles")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or (_dotted(loader, aliases) or "").rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                flag(node, f"{name}() without a safe Loader")
    return found


# ------------------------------------------------------------------ the scanner itself
PLANTED = [
    ("import pickle\npickle.load(open('f', 'rb'))\n", "pickle.load"),
    ("import pickle as pk\nx = pk.loads(b'')\n", "pickle.loads"),
    ("from pickle import load\nload(f)\n", "pickle.load"),
    ("import pickle\nobj = pickle.Unpickler(f).load()\n", "pickle.Unpickler"),
    ("import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n        return super().find_class(m, n)\n", "subclass U"),
    ("import pickle\nclass V(pickle.Unpickler):\n    pass\n", "subclass V"),
    ("import torch\ntorch.load('w.pt')\n", "weights_only"),
    ("import torch\ntorch.load('w.pt', weights_only=False)\n", "weights_only"),
    ("import torch\nflag = True\ntorch.load('w.pt', weights_only=flag)\n", "weights_only"),
    ("from torch import load\nload('w.pt', map_location='cpu')\n", "weights_only"),
    ("import numpy as np\nnp.load('a.npz', allow_pickle=True)\n", "numpy.load"),
    ("import numpy\nkw = {}\nnumpy.load('a.npz', **kw)\n", "numpy.load"),
    ("import onnx\nm = onnx.load('m.onnx')\nv = eval(m.metadata_props[0].value)\n", "eval"),
    ("exec(open('cfg.py').read())\n", "exec"),
    ("code = compile(text, 'f', 'exec')\n", "compile"),
    ("import yaml\nyaml.load(open('c.yaml'))\n", "yaml.load"),
    ("import yaml\nyaml.load(text, Loader=yaml.FullLoader)\n", "yaml.load"),
    ("import yaml\nyaml.unsafe_load(text)\n", "yaml.unsafe_load"),
    ("import joblib\njoblib.load('m.joblib')\n", "joblib.load"),
    ("import pandas as pd\npd.read_pickle('f.pkl')\n", "read_pickle"),
    ("import dill\ndill.loads(blob)\n", "dill.loads"),
    ("import shelve\nshelve.open('db')\n", "shelve.open"),
    ("import marshal\nmarshal.loads(blob)\n", "marshal.loads"),
]
SAFE = [
    "import numpy as np\nnp.load('a.npz', allow_pickle=False)\n",
    "import numpy as np\nwith np.load(io.BytesIO(blob)) as z:\n    pass\n",
    "import torch\ntorch.load('w.pt', map_location='cpu', weights_only=True)\n",
    "model.eval()\nnet = net.cpu().eval()\n",
    "import json\njson.loads(meta['hwnas.arch'])\n",
    "import yaml\nyaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)\n",
    "import ast\nast.literal_eval('[1, 2]')\n",
    (
        "import pickle\nclass R(pickle.Unpickler):\n    def find_class(self, m, n):\n"
        "        '''refuse'''\n        raise pickle.UnpicklingError(m)\nR(f).load()\n"
    ),
]


@pytest.mark.parametrize(("snippet", "needle"), PLANTED, ids=[n for _, n in PLANTED])
def test_scanner_flags_a_planted_unsafe_load(snippet: str, needle: str) -> None:
    found = unsafe_calls(snippet)
    assert len(found) == 1 and needle in found[0], found


@pytest.mark.parametrize("snippet", SAFE)
def test_scanner_passes_safe_code(snippet: str) -> None:
    assert unsafe_calls(snippet) == []


# ------------------------------------------------------------------ the repository
def _sources() -> list[Path]:
    files = [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 50, "the scan found too few files: did the layout change?"
    return files


def test_no_unsafe_load_in_hwnas_tools_benchmarks_examples() -> None:
    found = [hit for path in _sources() for hit in unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert found == [], "unsafe deserialisation or evaluation:\n" + "\n".join(found)


def test_the_restricted_unpickler_is_recognised() -> None:
    # tools/convert_benchmarks.py must keep refusing every class: the scan would flag it otherwise.
    source = (REPO / "tools" / "convert_benchmarks.py").read_text(encoding="utf-8")
    assert "pickle.Unpickler" in source and unsafe_calls(source) == []
    weakened = source.replace(
        'raise pickle.UnpicklingError(f"refusing to load {module}.{name}")', "return super().find_class(module, name)"
    )
    assert weakened != source and any("find_class" in hit for hit in unsafe_calls(weakened))
