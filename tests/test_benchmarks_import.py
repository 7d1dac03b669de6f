"""Every benchmark script's `edge_xray` imports resolve (a renamed module or function breaks them silently)."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(script):
    tree = ast.parse(script.read_text())
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_xray"):
            try:
                module = importlib.import_module(node.module)
            except ImportError as e:
                missing.append(f"{node.module}: {e}")
                continue
            missing += [f"{node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("edge_xray") and importlib.util.find_spec(a.name) is None:
                    missing.append(a.name)
    assert not missing, f"{script.name}: {missing}"
