"""Python side of the plugin harness (opforge/harness/harness.cpp): loads it with ctypes and runs one plugin
through TensorRT's IPluginV3 call sequence on the GPU, in two execution contexts on two streams."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opforge.core import dtypes
from opforge.core.fields import FIELD_TYPES


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("dtype", ctypes.c_char_p),
        ("nbDims", ctypes.c_int32),
        ("dims", ctypes.c_int64 * 8),
        ("host", ctypes.c_void_p),
        ("symbolicMask", ctypes.c_int32),
    ]


class _Field(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("type", ctypes.c_int32),
        ("length", ctypes.c_int32),
        ("data", ctypes.c_void_p),
    ]


class _Timing(ctypes.Structure):
    _fields_ = [
        ("calls", ctypes.c_int32),
        ("replays", ctypes.c_int32),
        ("flushL2", ctypes.c_int32),
        ("samplesUs", ctypes.POINTER(ctypes.c_float)),
    ]


@dataclass
class TimingRequest:
    """Time `calls` back-to-back enqueues captured in a CUDA graph, `replays` times (flush_l2: rewrite a 256 MiB
    buffer before each replay, outside the timed region). After the run, samples_us holds µs per call."""

    calls: int = 20
    replays: int = 50
    flush_l2: bool = True
    samples_us: list[float] = field(default_factory=list)


class HarnessError(RuntimeError):
    pass


_FIELD_NAMES = {v: k for k, v in FIELD_TYPES.items()}


class Harness:
    def __init__(self, lib: Path):
        self.lib = ctypes.CDLL(str(lib))
        self.lib.opf_run.restype = ctypes.c_int32
        self.lib.opf_creator_fields.restype = ctypes.c_int32

    def declared_fields(self, plugin_lib: Path, plugin: str) -> list[tuple[str, str]]:
        out = ctypes.create_string_buffer(1 << 16)
        err = ctypes.create_string_buffer(4096)
        if self.lib.opf_creator_fields(str(plugin_lib).encode(), plugin.encode(), out, len(out), err, len(err)):
            raise HarnessError(err.value.decode())
        fields = []
        for item in filter(None, out.value.decode().split(";")):
            name, _, t = item.rpartition(":")
            fields.append((name, _FIELD_NAMES.get(int(t), f"type{t}")))
        return fields

    def run_plan(
        self,
        plugin_lib: Path,
        plugin: str,
        fields: list[tuple[str, str, bytes, int]],
        plan,
        inputs: list[np.ndarray],
        poison: int,
        execute: bool = True,
        timing: TimingRequest | None = None,
    ) -> list[list[np.ndarray]]:
        """run() for the plugin of `plan` (an opforge KernelPlan): which axes are symbolic, the output dtypes and
        the output shapes for these inputs all come from the plan.

        With data-dependent outputs (plan.sizes), the outputs are allocated at their upper bounds, and what comes
        back per context is the node's outputs trimmed to their real shapes read from the size tensors (without
        the size tensors themselves); a size tensor outside [0, upper] raises HarnessError."""
        from opforge.core import expr

        env = plan.bind_dims([a.shape for a in inputs])
        symbolic = [[not expr.is_constant(e) for e in spec.shape] for spec in plan.inputs]
        out_dtypes = [o.dtype for o in plan.outputs]
        results = self.run(
            plugin_lib, plugin, fields, inputs, symbolic, out_dtypes, plan.output_shapes(env), poison, execute, timing
        )
        if not plan.sizes or not execute:
            return results
        try:
            return [plan.trim_outputs(env, outs) for outs in results]
        except ValueError as e:
            raise HarnessError(f"after enqueue: {e}") from None

    def run(
        self,
        plugin_lib: Path,
        plugin: str,
        fields: list[tuple[str, str, bytes, int]],
        inputs: list[np.ndarray],
        symbolic: list[list[bool]],
        out_dtypes: list[str],
        out_shapes: list[tuple[int, ...]],
        poison: int,
        execute: bool = True,
        timing: TimingRequest | None = None,
    ) -> list[list[np.ndarray]]:
        """Outputs of the two execution contexts: [[ctx1 outputs], [ctx2 outputs]]. With execute=False the
        sequence stops before the first CUDA call (no GPU needed) and the outputs are left unwritten."""
        keep: list = []  # buffers the C side points into
        c_fields = (_Field * max(len(fields), 1))()
        for i, (name, ftype, data, length) in enumerate(fields):
            buf = ctypes.create_string_buffer(data, len(data))
            keep.append(buf)
            c_fields[i] = _Field(name.encode(), FIELD_TYPES[ftype], length, ctypes.cast(buf, ctypes.c_void_p))

        def tensor(arr: np.ndarray, dtype: str, mask: int) -> _Tensor:
            t = _Tensor(
                dtypes.by_name(dtype).trt.encode(), arr.ndim, (ctypes.c_int64 * 8)(*arr.shape), arr.ctypes.data, mask
            )
            keep.append(arr)
            return t

        c_in = (_Tensor * max(len(inputs), 1))()
        for i, (a, sym) in enumerate(zip(inputs, symbolic)):
            a = np.asarray(a, order="C")  # not ascontiguousarray: it makes 0-d scalars 1-d
            c_in[i] = tensor(a, dtypes.from_numpy(a.dtype).name, sum(1 << k for k, s in enumerate(sym) if s))
        results: list[list[np.ndarray]] = [[], []]
        c_out = [(_Tensor * len(out_dtypes))() for _ in range(2)]
        for ctx in range(2):
            for i, (dt, shape) in enumerate(zip(out_dtypes, out_shapes)):
                host = np.empty(shape, dtype=dtypes.numpy_dtype(dt))
                results[ctx].append(host)
                c_out[ctx][i] = tensor(host, dt, 0)
        c_timing = None
        if timing is not None:
            samples = (ctypes.c_float * timing.replays)()
            c_timing = ctypes.byref(_Timing(timing.calls, timing.replays, int(timing.flush_l2), samples))
        err = ctypes.create_string_buffer(1 << 14)
        rc = self.lib.opf_run(
            str(plugin_lib).encode(),
            plugin.encode(),
            c_fields,
            len(fields),
            c_in,
            len(inputs),
            c_out[0],
            c_out[1],
            len(out_dtypes),
            poison,
            int(execute),
            c_timing,
            err,
            len(err),
        )
        if rc != 0:
            raise HarnessError(err.value.decode(errors="replace").strip())
        if timing is not None:
            timing.samples_us = [float(x) for x in samples]
        return results
