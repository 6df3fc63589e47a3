"""No code path in hwnas may deserialize code: a static scan of the package and benchmark sources.

Weights files are read only by ``hwnas/core/tensorfile.py`` (safetensors + JSON). This test fails when
any module adds ``torch.load``, ``torch.jit.load``, ``pickle`` / ``dill`` / ``joblib`` /
``shelve`` / ``marshal``, ``numpy.load`` without an explicit ``allow_pickle=False``,
``pandas.read_pickle``, an unsafe YAML load, or ``eval`` / ``exec``.
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

SCANNED = (ROOT / "hwnas", ROOT / "benchmarks")
# The one module allowed to deserialize weights; it uses safetensors, so it needs no exception today.
ALLOWED: dict[str, set[str]] = {"hwnas/core/tensorfile.py": set()}
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}
BANNED_CALLS = {
    "torch.load", "torch.jit.load", "torch.serialization.load", "pandas.read_pickle", "pd.read_pickle",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all",
    "eval", "exec", "numpy.lib.format.read_array",
}  # fmt: skip


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def findings(source: str) -> list[str]:
    """Every banned construct in ``source``, as ``line: what``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BANNED_MODULES:
                    out.append(f"{node.lineno}: import {a.name}")
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in BANNED_MODULES:
                out.append(f"{node.lineno}: from {node.module} import ...")
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        full = full.replace("np.", "numpy.", 1) if full.startswith("np.") else full
        if full in BANNED_CALLS or name in BANNED_CALLS:
            out.append(f"{node.lineno}: {name}(...)")
        if full in ("numpy.load", "numpy.lib.npyio.load"):
            kw = {k.arg: k.value for k in node.keywords}
            flag = kw.get("allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                out.append(f"{node.lineno}: {name}(...) without allow_pickle=False")
        if full.startswith("yaml.") and "Loader" in {k.arg for k in node.keywords}:
            out.append(f"{node.lineno}: {name}(..., Loader=...)")
    return out


def test_no_module_of_hwnas_deserializes_code() -> None:
    problems = []
    for path in sorted(p for folder in SCANNED for p in folder.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for f in findings(path.read_text(encoding="utf-8")):
            if f.split(": ", 1)[1] not in ALLOWED.get(rel, set()):
                problems.append(f"{rel}:{f}")
    assert not problems, "code-running deserialization in hwnas:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('x.pt')",
        "import torch as T\nT.load('x.pt', weights_only=True)",
        "from torch import load\nload('x')",
        "import pickle\npickle.loads(b'')",
        "from pickle import loads",
        "import numpy as np\nnp.load('a.npz', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npz')",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.unsafe_load(text)",
        "import pandas as pd\npd.read_pickle('f')",
        "import joblib",
        "eval('1')",
    ],
)
def test_the_scan_finds_each_banned_construct(snippet: str) -> None:
    assert findings(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import numpy as np\nnp.load('a.npz', allow_pickle=False)",
        "import yaml\nyaml.safe_load(text)",
        "from safetensors.torch import load\nload(b'')",
        "import json\njson.loads('{}')",
    ],
)
def test_the_scan_passes_safe_readers(snippet: str) -> None:
    assert not findings(snippet), snippet
