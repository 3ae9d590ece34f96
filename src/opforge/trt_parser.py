"""TensorRT's ONNX parser as an oracle: which nodes it rejects, and why.

Uses the installed `tensorrt` if there is one, else TensorRT-RTX (`tensorrt_rtx`, whose parser runs without a GPU).
Parsing runs in a child process: TensorRT-RTX can abort the process on some plugin paths.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import onnx

from opforge.core.errors import OpforgeError

PLUGIN_NOT_FOUND = "Plugin not found"

_CHILD = r"""
import json, sys
try:
    import tensorrt as trt
    which = "tensorrt " + trt.__version__
except ImportError:
    import tensorrt_rtx as trt
    which = "tensorrt_rtx " + trt.__version__
logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
data = sys.stdin.buffer.read()
ok = parser.parse(data)
errors = []
for i in range(parser.num_errors):
    e = parser.get_error(i)
    code = str(e.code()).split(".")[-1]
    errors.append({"node": e.node_name(), "op_type": e.node_operator(), "index": e.node(),
                   "reason": f"{code} in {e.func()}: {e.desc()}"})
print(json.dumps({"parser": which, "ok": bool(ok), "errors": errors}))
"""


@dataclass
class ParserError:
    node: str
    op_type: str
    reason: str
    index: int = -1  # node index in the graph, where the parser gives it

    @property
    def plugin_lookup(self) -> bool:
        return PLUGIN_NOT_FOUND in self.reason


@dataclass
class ParseReport:
    parser: str
    ok: bool
    errors: list[ParserError]


def available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))


def parse(model: onnx.ModelProto, timeout: float = 300) -> ParseReport:
    if not available():
        raise OpforgeError("no TensorRT parser: pip install tensorrt-rtx-cu13 (runs without a GPU) or tensorrt")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], input=model.SerializeToString(), capture_output=True, timeout=timeout
    )
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise OpforgeError(f"TensorRT's ONNX parser crashed (exit {proc.returncode}): {tail[0]}")
    d = json.loads(lines[-1])
    return ParseReport(d["parser"], d["ok"], [ParserError(**e) for e in d["errors"]])


def parse_with_table(model: onnx.ModelProto) -> ParseReport:
    """No parser installed: judge by op type with the built-in table measured on the ONNX conformance cases.
    An op type rejected in every measured case is reported rejected; one rejected in some cases, possibly."""
    from importlib import resources

    table = json.loads(resources.files("opforge.data").joinpath("trt_support.json").read_text())
    errors = []
    for i, node in enumerate(model.graph.node):
        c = table["ops"].get(node.op_type)
        if node.domain not in ("", "ai.onnx"):
            reason = "custom domain: a plugin is needed"
        elif c is None:
            reason = "op type not in the built-in table (not measured)"
        elif c["accepted"] == 0:
            reason = f"rejected in all {c['rejected']} measured cases"
        elif c["rejected"]:
            reason = f"possibly: rejected in {c['rejected']} of {c['accepted'] + c['rejected']} measured cases"
        else:
            continue
        errors.append(ParserError(node.name, node.op_type, reason, i))
    return ParseReport(f"built-in table ({table['parser']}, {table['cases']} conformance cases)", not errors, errors)


def parse_any(model: onnx.ModelProto) -> ParseReport:
    return parse(model) if available() else parse_with_table(model)


_BATCH_CHILD = r"""
import sys, warnings
warnings.simplefilter("ignore")
try:
    import tensorrt as trt
except ImportError:
    import tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
paths = sys.stdin.read().split("\n")
for i in range(int(sys.argv[1]), len(paths)):
    if not paths[i]:
        continue
    print(f"begin {i}", flush=True)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # must outlive the parser that fills it
    parser = trt.OnnxParser(network, logger)
    try:
        ok = parser.parse(open(paths[i], "rb").read())
    except Exception:
        ok = False
    print(f"done {i} {int(bool(ok))}", flush=True)
"""


def accepts_many(paths: list[str]) -> list[bool]:
    """Does TensorRT's parser accept each model file? Parsed in a child process; a model that kills the parser
    counts as rejected and the next child resumes after it."""
    if not available():
        raise OpforgeError("no TensorRT parser: pip install tensorrt-rtx-cu13 (runs without a GPU) or tensorrt")
    result: list[bool | None] = [None] * len(paths)
    start = 0
    while start < len(paths):
        proc = subprocess.run(
            [sys.executable, "-c", _BATCH_CHILD, str(start)], input="\n".join(paths), capture_output=True, text=True
        )
        last = None
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[0] == "begin":
                last = int(parts[1])
            elif parts[0] == "done":
                result[int(parts[1])] = parts[2] == "1"
                last = None
                start = int(parts[1]) + 1
        if last is not None:
            result[last] = False
            start = last + 1
        elif proc.returncode != 0 and start < len(paths) and result[start] is None:
            raise OpforgeError(f"TensorRT's parser child failed: {proc.stderr.strip()[-300:]}")
        else:
            break
    return [bool(r) for r in result]
