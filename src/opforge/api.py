"""The Python API, TPAT-compatible: onnx2plugin(...)."""

from __future__ import annotations

from pathlib import Path

from opforge.core.errors import UsageError
from opforge.generate import DynamicBatch, GenerateResult, generate


def onnx2plugin(
    input_model_path: str,
    output_model_path: str,
    node_names: list[str] | None = None,
    node_types: list[str] | None = None,
    plugin_name_dict: dict[str, str] | None = None,
    dynamic_bs: bool = False,
    min_bs: int = 1,
    max_bs: int = 256,
    opt_bs: int = 128,
    force: bool = False,
) -> GenerateResult:
    """Generate TensorRT plugins for the selected nodes, as TPAT's onnx2plugin does.

    The rewritten model is written to `output_model_path`; the plugin library (libopforge_plugins.so), its sources,
    the kernel plans and manifest.json go to the folder holding it. With dynamic_bs, the batch (first) dimension of
    the model's inputs is symbolic and min_bs/opt_bs/max_bs are recorded as the profile to build and verify with.
    The folder follows `opforge generate`'s rules (docs/generate.md): a non-empty folder opforge did not make, or one
    holding another model's plugins, is refused unless force=True, and no file opforge did not write is touched.
    """
    out_model = Path(output_model_path)
    if out_model.resolve() == Path(input_model_path).resolve():
        raise UsageError(f"output_model_path {output_model_path} is the input model; opforge never overwrites it")
    if out_model.suffix != ".onnx":
        raise UsageError(f"output_model_path {output_model_path} must end in .onnx")
    batch = None
    if dynamic_bs:
        if not 1 <= min_bs <= opt_bs <= max_bs:
            raise UsageError(f"need 1 <= min_bs <= opt_bs <= max_bs, got {min_bs}, {opt_bs}, {max_bs}")
        batch = DynamicBatch(min_bs, opt_bs, max_bs)
    result = generate(
        input_model_path,
        out_model.parent,
        node_names=node_names,
        node_types=node_types,
        plugin_name_dict=plugin_name_dict,
        dynamic_batch=batch,
        output_name=out_model.name,
        force=force,
    )
    return result
