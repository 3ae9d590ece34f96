"""Plugin C++ from kernel plans: template contexts and rendering (the C++ itself lives in opforge/templates)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from opforge import __version__
from opforge.core import dtypes, expr
from opforge.core.fields import PluginAttr, int64_text
from opforge.core.kernel_plan import KernelPlan

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
HEADERS = ("opforgePluginCommon.h", "opforgeShapeMath.h")
_SMEM_DEFAULT_LIMIT = 48 * 1024


@dataclass
class PluginSpec:
    """One plugin of a library: a name, the plan it runs, the fields it carries, the nodes it serves."""

    name: str
    plan: KernelPlan
    attrs: list[PluginAttr]
    nodes: list[str] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return "p_" + re.sub(r"[^0-9A-Za-z_]", "_", self.name)

    @property
    def class_name(self) -> str:
        parts = re.split(r"[^0-9A-Za-z]+", self.name)
        return "".join(p[:1].upper() + p[1:] for p in parts if p) + "Plugin"


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _render(template: str, **context) -> str:
    return _env().get_template(template).render(opforge_version=__version__, **context)


def _dim_var(name: str) -> str:
    return f"dim_{name}"


def _cpp(text: str) -> str:
    return expr.to_cpp(text, _dim_var)


def _trt(dtype: str, what: str) -> str:
    trt = dtypes.by_name(dtype).trt
    if trt is None:
        raise ValueError(f"{what} has dtype {dtype}, which a TensorRT tensor cannot hold")
    return f"DataType::{trt}"


def _field(a: PluginAttr) -> dict:
    if a.kind == "string" or a.int64_as_text:
        text = int64_text(a.ints) if a.int64_as_text else a.string
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return {
            "name": a.name,
            "type": "kCHAR",
            "ctype": "char",
            "init": f'"{escaped}"',
            "length": len(text),
            "encoding": "kINT64_TEXT" if a.int64_as_text else "kVALUE",
        }
    if a.kind == "floats":
        vals = [repr(float(v)) + "F" if abs(v) < 3.4e38 else ("-" if v < 0 else "") + "INFINITY" for v in a.floats]
        return {
            "name": a.name,
            "type": "kFLOAT32",
            "ctype": "float",
            "init": "{" + ", ".join(vals or ["0.0F"]) + "}",
            "length": len(a.floats),
            "encoding": "kVALUE",
        }
    return {
        "name": a.name,
        "type": "kINT32",
        "ctype": "int32_t",
        "init": "{" + ", ".join([str(v) for v in a.ints] or ["0"]) + "}",
        "length": len(a.ints),
        "encoding": "kVALUE",
    }


def _launch_context(plan: KernelPlan) -> list[dict]:
    out = []
    for launch in plan.launches:
        args, refs = [], []
        for k, a in enumerate(launch.args):
            var = f"a{k}"
            if a.kind == "scalar":
                ctype = dtypes.by_name(a.dtype).ctype
                args.append({"decl": f"{ctype} {var}", "value": f"static_cast<{ctype}>({_cpp(a.value)})"})
            elif a.kind == "input":
                args.append({"decl": f"void* {var}", "value": f"const_cast<void*>(inputs[{a.index}])"})
            elif a.kind == "output":
                args.append({"decl": f"void* {var}", "value": f"outputs[{a.index}]"})
            elif a.kind == "constant":
                args.append({"decl": f"void* {var}", "value": f"c{a.index}"})
            else:
                args.append({"decl": f"void* {var}", "value": f"ws + {_cpp(a.offset)}"})
            refs.append(f"&{var}")
        smem = expr.fold(launch.shared_mem)
        out.append(
            {
                "kernel": launch.kernel,
                "grid": [_cpp(g) for g in launch.grid],
                "block": [_cpp(b) for b in launch.block],
                "shared_mem": _cpp(smem),
                "big_smem": not expr.is_constant(smem) or expr.evaluate(smem, {}) > _SMEM_DEFAULT_LIMIT,
                "args": args,
                "arg_refs": refs,
            }
        )
    return out


_INCLUDE = re.compile(r"^\s*#\s*include\s*<([^>]+)>", re.MULTILINE)


def _tvm_includes(source: str) -> list[str]:
    """The system headers TVM's source includes for nvcc (its NVRTC-only cuda/std branch aside), in order."""
    seen: list[str] = []
    for name in _INCLUDE.findall(source):
        if not name.startswith("cuda/std/") and name not in seen:
            seen.append(name)
    return [f"#include <{n}>" for n in seen]


def c_byte_literal(raw: bytes, indent: str = "    ") -> str:
    """`raw` as adjacent C string literals of 64 bytes each, every byte a \\xHH escape (the array holding it needs
    one byte more, for the literal's NUL).

    A literal, not a list of 0x.. initializers: GCC and nvcc read each piece as one token (a 400 KB constant
    compiled in 1.7 s instead of 6.9 s). The array is host data (see kernels.cu.j2): in the device image nvcc would
    re-emit it as an initializer list (a 2 MB constant kept cc1plus busy for over 40 minutes; as host data: 3 s)."""
    rows = ['"' + "".join(f"\\x{b:02x}" for b in raw[k : k + 64]) + '"' for k in range(0, len(raw), 64)]
    return "\n".join(indent + r for r in rows)


def render_kernels(spec: PluginSpec) -> str:
    plan = spec.plan
    constants = []
    for i, c in enumerate(plan.constants):
        raw = c.to_array().tobytes() or b"\0"
        constants.append(
            {
                "name": f"c{i}",
                "dtype": c.dtype,
                "shape": c.shape,
                "nbytes": len(raw),
                "bytes": c_byte_literal(raw),
            }
        )
    uses_ws = any(a.kind == "workspace" for launch in plan.launches for a in launch.args)
    return _render(
        "kernels.cu.j2",
        plugin_name=spec.name,
        op_type=plan.op_type,
        producer=plan.producer,
        target=plan.target,
        cuda_source=plan.cuda_source,
        tvm_includes=_tvm_includes(plan.cuda_source),
        ns=spec.ns,
        constants=constants,
        dims=[{"var": _dim_var(d.name)} for d in plan.dims],
        dim_names=", ".join(d.name for d in plan.dims) or "none",
        uses_workspace=uses_ws,
        launches=_launch_context(plan),
    )


def _static_dims(shape: list[str]) -> list[int]:
    """Each axis's extent where the plan fixes it, -1 where it is symbolic (the plugin checks the fixed ones)."""
    return [expr.evaluate(e, {}) if expr.is_constant(e) else -1 for e in shape]


def render_plugin(spec: PluginSpec) -> str:
    plan = spec.plan
    dim_expr = {d.name: f"inputs[{d.input}].d[{d.axis}]" for d in plan.dims}
    # Data-dependent extents: each size tensor is declared once; output shapes use the expression it returns.
    sizes = [
        {
            "var": f"size{k}",
            "name": s.name,
            "output": s.output,
            "opt": expr.to_dim_expr(s.opt, dim_expr.__getitem__),
            "upper": expr.to_dim_expr(s.upper, dim_expr.__getitem__),
        }
        for k, s in enumerate(plan.sizes)
    ]
    dim_expr.update({s["name"]: s["var"] for s in sizes})
    outputs = [
        {
            "trt": _trt(o.dtype, f"output {o.name}"),
            "shape": [expr.to_dim_expr(e, dim_expr.__getitem__) for e in o.shape],
        }
        for o in plan.outputs
    ]
    inputs = [
        {"trt": _trt(i.dtype, f"input {i.name}"), "rank": len(i.shape), "static_dims": _static_dims(i.shape)}
        for i in plan.inputs
    ]
    return _render(
        "plugin.cpp.j2",
        plugin_name=spec.name,
        op_type=plan.op_type,
        node_names=", ".join(spec.nodes) or "-",
        ns=spec.ns,
        class_name=spec.class_name,
        inputs=inputs,
        outputs=outputs,
        dims=[{"var": _dim_var(d.name), "input": d.input, "axis": d.axis} for d in plan.dims],
        dim_names=", ".join(d.name for d in plan.dims) or "none",
        fields=[_field(a) for a in spec.attrs],
        workspace=_cpp(plan.workspace),
        sizes=sizes,
    )


def render_library(specs: list[PluginSpec]) -> str:
    return _render("library.cpp.j2", plugins=[{"name": s.name, "ns": s.ns} for s in specs])


def write_sources(specs: list[PluginSpec], src_dir: Path) -> dict[str, list[Path]]:
    """All sources of one library: {"kernels": [...], "plugins": [...], "library": [...]} (header copied along)."""
    from opforge.core.fsutil import atomic_write_text

    src_dir.mkdir(parents=True, exist_ok=True)
    for header in HEADERS:
        atomic_write_text(src_dir / header, (TEMPLATES / header).read_text())
    files: dict[str, list[Path]] = {"kernels": [], "plugins": [], "library": []}
    for s in specs:
        k = src_dir / f"{s.ns}_kernels.cu"
        p = src_dir / f"{s.ns}_plugin.cpp"
        atomic_write_text(k, render_kernels(s))
        atomic_write_text(p, render_plugin(s))
        files["kernels"].append(k)
        files["plugins"].append(p)
    lib = src_dir / "opforge_library.cpp"
    atomic_write_text(lib, render_library(specs))
    files["library"].append(lib)
    return files
