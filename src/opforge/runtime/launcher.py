"""Execute a kernel plan on the GPU with the CUDA driver API: no TVM, no TensorRT.

Loads the plan's fatbin, evaluates its shape expressions for the given inputs, places temporaries in one
workspace allocation, and launches the kernels in order on one stream, exactly as the generated plugin does.
"""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np

from opforge.core import dtypes, expr
from opforge.core.kernel_plan import KernelPlan

_SMEM_DEFAULT_LIMIT = 48 * 1024


def _cu():
    from cuda.bindings import driver

    return driver


def check(result) -> object:
    """Unwrap a cuda-python (err, *values) tuple, raising on error."""
    cu = _cu()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        raise RuntimeError(f"CUDA driver error {name.decode() if name else err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class DeviceBuffer:
    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(_cu().cuMemAlloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr:
            check(_cu().cuMemFree(self.ptr))
            self.ptr = 0


class Context:
    """The primary context of one device, made current for this thread."""

    def __init__(self, device: int = 0):
        cu = _cu()
        check(cu.cuInit(0))
        self.device = check(cu.cuDeviceGet(device))
        self.ctx = check(cu.cuDevicePrimaryCtxRetain(self.device))
        check(cu.cuCtxSetCurrent(self.ctx))
        self.name = check(cu.cuDeviceGetName(256, self.device)).split(b"\0")[0].decode()


class PlanRunner:
    def __init__(self, plan: KernelPlan, fatbin: bytes):
        cu = _cu()
        self.plan = plan
        self._image = np.frombuffer(fatbin, dtype=np.uint8).copy()
        self.module = check(cu.cuModuleLoadData(self._image.ctypes.data))
        self.functions = {}
        for launch in plan.launches:
            if launch.kernel not in self.functions:
                self.functions[launch.kernel] = check(cu.cuModuleGetFunction(self.module, launch.kernel.encode()))
        self.constants = []
        for c in plan.constants:
            arr = c.to_array()
            buf = DeviceBuffer(arr.nbytes)
            check(cu.cuMemcpyHtoD(buf.ptr, arr.ctypes.data, arr.nbytes))
            self.constants.append(buf)
        self.stream = check(cu.cuStreamCreate(0))

    @contextlib.contextmanager
    def _buffers(self, inputs: list[np.ndarray]):
        """Device buffers for one execution: inputs uploaded, outputs and workspace allocated; freed on exit.
        Yields (dims, output shapes, input buffers, output buffers, workspace)."""
        cu = _cu()
        plan = self.plan
        env = plan.bind_dims([a.shape for a in inputs])
        out_shapes = plan.output_shapes(env)
        owned: list[DeviceBuffer] = []
        try:
            ins = []
            for spec, a in zip(plan.inputs, inputs):
                a = np.ascontiguousarray(a, dtype=dtypes.numpy_dtype(spec.dtype))
                ins.append(DeviceBuffer(a.nbytes))
                owned.append(ins[-1])
                check(cu.cuMemcpyHtoD(ins[-1].ptr, a.ctypes.data, a.nbytes))
            outs = []
            for spec, shape in zip(plan.outputs, out_shapes):
                outs.append(DeviceBuffer(int(np.prod(shape, dtype=np.int64)) * dtypes.by_name(spec.dtype).itemsize))
                owned.append(outs[-1])
            ws = DeviceBuffer(expr.evaluate(plan.workspace, env))
            owned.append(ws)
            yield env, out_shapes, ins, outs, ws
        finally:
            for b in owned:
                b.free()

    def run(self, inputs: list[np.ndarray], poison: int = 0xFF) -> list[np.ndarray]:
        """Run on the given host inputs; outputs and workspace are first filled with the byte `poison`. Outputs
        with a data-dependent extent come back trimmed to their real shapes (size tensors left out)."""
        cu = _cu()
        with self._buffers(inputs) as (env, out_shapes, ins, outs, ws):
            for buf in [*outs, ws]:
                check(cu.cuMemsetD8Async(buf.ptr, poison, buf.nbytes, self.stream))
            self.enqueue(env, [b.ptr for b in ins], [b.ptr for b in outs], ws.ptr, self.stream)
            check(cu.cuStreamSynchronize(self.stream))
            results = []
            for spec, shape, buf in zip(self.plan.outputs, out_shapes, outs):
                host = np.empty(shape, dtype=dtypes.numpy_dtype(spec.dtype))
                if host.nbytes:
                    check(cu.cuMemcpyDtoH(host.ctypes.data, buf.ptr, host.nbytes))
                results.append(host)
            return self.plan.trim_outputs(env, results) if self.plan.sizes else results

    def time_ms(self, inputs: list[np.ndarray], repeats: int = 20, per_graph: int = 50) -> float:
        """Device time of one enqueue (all kernels of the plan), in ms: `per_graph` enqueues are captured in a CUDA
        graph and its replays timed with CUDA events, so host-side launch overhead does not count. Median of
        `repeats` replays."""
        cu = _cu()
        graph = graph_exec = None
        with self._buffers(inputs) as (env, _, ins, outs, ws):
            try:
                args = (env, [b.ptr for b in ins], [b.ptr for b in outs], ws.ptr, self.stream)
                self.enqueue(*args)  # first launch outside the capture: module loading, attributes
                check(cu.cuStreamSynchronize(self.stream))
                mode = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
                check(cu.cuStreamBeginCapture(self.stream, mode))
                for _ in range(per_graph):
                    self.enqueue(*args)
                graph = check(cu.cuStreamEndCapture(self.stream))
                graph_exec = check(cu.cuGraphInstantiate(graph, 0))
                start, stop = check(cu.cuEventCreate(0)), check(cu.cuEventCreate(0))
                check(cu.cuGraphLaunch(graph_exec, self.stream))  # warm-up replay
                times = []
                for _ in range(repeats):
                    check(cu.cuEventRecord(start, self.stream))
                    check(cu.cuGraphLaunch(graph_exec, self.stream))
                    check(cu.cuEventRecord(stop, self.stream))
                    check(cu.cuEventSynchronize(stop))
                    times.append(check(cu.cuEventElapsedTime(start, stop)) / per_graph)
                check(cu.cuEventDestroy(start))
                check(cu.cuEventDestroy(stop))
                return float(np.median(times))
            finally:
                if graph_exec is not None:
                    check(cu.cuGraphExecDestroy(graph_exec))
                if graph is not None:
                    check(cu.cuGraphDestroy(graph))

    def run_contexts(self, inputs: list[np.ndarray], poison: int = 0xFF) -> list[list[np.ndarray]]:
        """`run` in the executor shape of opforge.verify.check: one execution context."""
        return [self.run(inputs, poison)]

    def enqueue(self, env: dict[str, int], inputs: list[int], outputs: list[int], workspace: int, stream) -> None:
        """Launch every kernel of the plan on `stream` (no allocation, no synchronisation)."""
        cu = _cu()
        for launch in self.plan.launches:
            values, types = [], []
            for a in launch.args:
                if a.kind == "scalar":
                    values.append(expr.evaluate(a.value, env))
                    types.append(getattr(ctypes, dtypes.by_name(a.dtype).ctypes))
                    continue
                if a.kind == "input":
                    ptr = inputs[a.index]
                elif a.kind == "output":
                    ptr = outputs[a.index]
                elif a.kind == "constant":
                    ptr = self.constants[a.index].ptr
                else:
                    ptr = workspace + expr.evaluate(a.offset, env)
                values.append(ptr)
                types.append(ctypes.c_void_p)
            grid = [expr.evaluate(g, env) for g in launch.grid]
            block = [expr.evaluate(b, env) for b in launch.block]
            smem = expr.evaluate(launch.shared_mem, env)
            if min(grid) <= 0:
                continue  # an empty tensor: nothing to compute
            fn = self.functions[launch.kernel]
            if smem > _SMEM_DEFAULT_LIMIT:
                attr = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                check(cu.cuFuncSetAttribute(fn, attr, smem))
            check(cu.cuLaunchKernel(fn, *grid, *block, smem, stream, (tuple(values), tuple(types)), 0))

    def close(self) -> None:
        cu = _cu()
        for b in self.constants:
            b.free()
        self.constants = []
        if self.module is not None:
            check(cu.cuModuleUnload(self.module))
            self.module = None
