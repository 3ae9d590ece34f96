"""Timing on the GPU host for the benchmarks (torch is imported by the caller and passed in): many back-to-back
calls captured in one CUDA graph, the graph replayed with CUDA events, a 256 MiB L2 flush before each replay
(outside the timed region), the median; the device-to-device copy bandwidth (the roofline); an empty kernel (the
floor)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from opforge.verify.compare import Comparison

CALLS, REPLAYS = 20, 50


def graph_time_us(torch, fn, flush) -> float:
    """Median µs per call of CALLS back-to-back fn() captured in a CUDA graph, REPLAYS replays, L2 flushed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(CALLS):
            fn()
    g.replay()
    torch.cuda.synchronize()
    samples = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(REPLAYS):
        flush.zero_()
        start.record()
        g.replay()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) * 1000.0 / CALLS)
    return statistics.median(samples)


def empty_kernel_us(torch, flush) -> float:
    import cupy

    kernel = cupy.RawKernel('extern "C" __global__ void opforge_empty() {}', "opforge_empty")

    def launch():
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            kernel((1,), (32,), ())

    return graph_time_us(torch, launch, flush)


def d2d_bandwidth(torch) -> float:
    """Bytes per second a device-to-device copy moves (read + written), 1 GiB, median of 20."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    times = []
    for _ in range(22):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1000.0)
    return 2 * n / statistics.median(times[2:])


_L2_READ = r"""
extern "C" __global__ void opforge_l2_read(const float4* __restrict__ x, long long n, int passes,
                                           float* __restrict__ out) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    long long stride = (long long)gridDim.x * blockDim.x;
    for (int p = 0; p < passes; ++p) {
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {
            float4 v = __ldcg(x + i);  // cached in L2 only: each pass reads L2, not the SM's L1
            acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
        }
    }
    if (acc.x + acc.y + acc.z + acc.w == 1.0f) out[0] = acc.x;  // never true (the buffer holds 2.0): keeps the loads
}
"""


def l2_read_bandwidth(torch) -> float:
    """Bytes per second the GPU reads from a buffer resident in L2 (16 MiB read 16 times per launch with 16-byte
    loads that bypass L1, by every SM, so the launch costs little; replayed in a CUDA graph with nothing flushed
    between replays)."""
    import cupy

    n, passes = 16 << 20, 16
    x = torch.full((n // 4,), 2.0, dtype=torch.float32, device="cuda")
    out = torch.zeros(1, dtype=torch.float32, device="cuda")
    kernel = cupy.RawKernel(_L2_READ, "opforge_l2_read")
    blocks = 8 * torch.cuda.get_device_properties(0).multi_processor_count

    def launch():
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            kernel((blocks,), (256,), (x.data_ptr(), cupy.int64(n // 16), cupy.int32(passes), out.data_ptr()))

    us = graph_time_us(torch, launch, torch.empty(1, device="cuda"))
    return n * passes / (us * 1e-6)


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def torch_contenders(torch, fn: Callable, tensors: list, matches: Callable[[object], Comparison] | None, flush) -> dict:
    """PyTorch eager and torch.compile(mode="max-autotune-no-cudagraphs") of fn on the tensors: for each, µs per call
    and whether its result matches the ONNX reference (`matches` compares it; not checked when None), with the
    differences where it does not; the compile time; a contender that fails is reported with its error, not
    hidden."""
    row: dict = {}
    for label in ("eager", "compile"):
        try:
            f = fn
            if label == "compile":
                t0 = time.perf_counter()
                f = torch.compile(fn, mode="max-autotune-no-cudagraphs")
                f(*tensors)
                row["compile_s"] = round(time.perf_counter() - t0, 1)
            if matches is not None:
                diff = matches(f(*tensors))
                row[f"{label}_matches_onnx"] = bool(diff.ok)
                if not diff.ok:
                    row[f"{label}_onnx_diff"] = diff.as_dict()
            row[f"{label}_us"] = graph_time_us(torch, lambda f=f, t=tensors: f(*t), flush)
        except Exception as e:
            row[f"{label}_us"] = None
            row[f"{label}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    torch._dynamo.reset()
    return row
