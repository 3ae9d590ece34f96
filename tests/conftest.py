"""Shared fixtures. Expensive artifacts (plans, plugin libraries) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """A fresh opforge cache per session (the TensorRT headers are downloaded into it once)."""
    if "OPFORGE_CACHE" not in os.environ:
        os.environ["OPFORGE_CACHE"] = str(tmp_path_factory.mktemp("opforge-cache"))
    yield


@pytest.fixture(scope="session")
def planned_cases(tmp_path_factory):
    """Every kernel case: (case, subgraph, plan or LoweringError) — lowered once."""
    from opforge.core.errors import LoweringError
    from opforge.examples.kernel_cases import CASES
    from opforge.extract import extract_nodes
    from opforge.lower import lower_subgraph

    out = {}
    for case in CASES:
        model = case.build()
        sub = extract_nodes(model, [model.graph.node[0]])[0]
        try:
            out[case.name] = (case, sub, lower_subgraph(sub))
        except LoweringError as e:
            out[case.name] = (case, sub, e)
    return out


@pytest.fixture(scope="session")
def generated_cases(tmp_path_factory):
    """All lowerable cases in one model -> one plugin library (what scripts/check_plugins.py runs on the GPU)."""
    import onnx

    from opforge.examples.kernel_cases import CASES
    from opforge.examples.merge import merge_models
    from opforge.generate import generate

    root: Path = tmp_path_factory.mktemp("generated")
    models = {c.name: c.build() for c in CASES if c.name != "nonzero"}
    model = merge_models(models, 20, name="cases")
    src = root / "cases.onnx"
    onnx.save(model, str(src))
    return generate(src, root / "out", node_names=[n.name for n in model.graph.node])


@pytest.fixture(scope="session")
def generated_example(tmp_path_factory):
    import onnx

    from opforge.examples.example_model import REJECTED_OP_TYPES, example_model
    from opforge.generate import DynamicBatch, generate

    root: Path = tmp_path_factory.mktemp("example")
    src = root / "example.onnx"
    onnx.save(example_model(), str(src))
    return generate(src, root / "out", node_types=list(REJECTED_OP_TYPES), dynamic_batch=DynamicBatch(1, 7, 64))
