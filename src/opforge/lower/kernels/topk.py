"""opforge's TopK along the last axis: a bitonic sort for short rows, a radix select for long ones.

TVM 0.27's GPU TopK sorts every row in full with its merge sort (one launch per merge level): 673 µs on the H100
for 64 rows of 32768 where torch takes 79 µs. Here, one block per row, one launch, for k <= MAX_K:

- a row of at most CHUNK elements is sorted in shared memory with a bitonic network; its best k are written;
- a longer row is radix-selected: every element gets a 64-bit key that orders it as ONNX does (its value mapped
  to an order-preserving uint32, then the complement of its index, so of equal values the lower index ranks
  higher: no two keys are equal). Pass by pass over the key's 8-bit digits, from the top, the block counts the
  elements that agree with the prefix chosen so far in a shared 256-bin histogram and picks the digit in which the
  k-th best key lies; it stops once the elements matching the prefix are exactly the ones still needed (for
  distinct values, after the value's digits), and digits of the index that are the same for every element are
  never visited. The k elements whose keys' prefix is at least the final one are then gathered and sorted by
  the bitonic network.

"Best" is ONNX's order: the larger value first (the smaller with largest=0), and of equal values the lower index
first; -0.0 equals 0.0 (its key is 0.0's). Padding slots hold the worst key and the largest index, so they lose
every comparison. The output is sorted whether `sorted` is 1 or 0 (any order is allowed then).

On the GPU each warp counts its digits with __match_any_sync (one shared atomic per distinct digit: the top digit
of similar values is one bin) and warp 0 finds the digit with a shuffle scan over the bins (device helpers below);
on the CPU (llvm, the semantic check) the same passes run as serial loops with a plain histogram, so the passes,
the keys and the network are what the check runs.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels import kernel_ir
from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import prod

CHUNK = 2048  # the longest row sorted whole; longer rows are radix-selected
MAX_K = 1024
THREADS = 1024
WARP = 32
GROUP = 8  # elements a thread loads before counting them (loads in flight per thread)
LAST_INDEX = 2**31 - 1  # the index of a padding slot
# Device helpers of the radix select (lower/kernels/__init__.py DEVICE_HELPERS defines them in the plan's source).
RADIX_COUNT = "opf_radix_count"
RADIX_PICK = "opf_radix_pick"
RADIX_SLOT = "opf_radix_slot"


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def radix(n: int) -> bool:
    """Whether rows of n elements are radix-selected (else sorted whole)."""
    return n > CHUNK


def supported(shape, axis: int, k: int, dtype: str) -> bool:
    """Static shapes, the last axis, 1 <= k <= min(n, MAX_K), 32-bit or narrower values."""
    dims = [d if isinstance(d, int) else (int(d) if isinstance(d, tirx.IntImm) else None) for d in shape]
    if not dims or any(d is None or d <= 0 for d in dims) or axis != len(dims) - 1:
        return False
    n = dims[-1]
    if not 1 <= k <= min(n, MAX_K) or tvm.DataType(dtype).bits > 32:
        return False
    return int(np.prod(dims)) < LAST_INDEX  # int32 element offsets


def topk_te(x: te.Tensor, k: int, largest: bool) -> tuple[te.Tensor, te.Tensor]:
    """(values, int64 indices) of the best k along x's last axis (static shape, see `supported`)."""
    out_shape = [*x.shape[:-1], k]
    outs = te.extern(
        [out_shape, out_shape],
        [x],
        lambda ins, outs: _topk_ir(ins[0], outs[0], outs[1], k, largest),
        dtype=[x.dtype, "int64"],
        in_buffers=[tirx.decl_buffer(x.shape, x.dtype, "data_buf")],
        out_buffers=[
            tirx.decl_buffer(out_shape, x.dtype, "values_buf"),
            tirx.decl_buffer(out_shape, "int64", "indices_buf"),
        ],
        name="topk",
        tag="topk",
    )
    return outs[0], outs[1]


def _worst(dtype: str, largest: bool):
    t = tvm.DataType(dtype)
    if t.type_code in (tvm.DataTypeCode.INT, tvm.DataTypeCode.UINT):
        return tirx.min_value(dtype) if largest else tirx.max_value(dtype)
    return tirx.const(float("-inf") if largest else float("inf"), dtype)


def _u32(value: int):
    return tirx.const(value, "uint32")


def order_key(v, dtype: str, largest: bool):
    """A uint32 that orders values as ONNX's TopK ranks them: larger key, better (-0.0 is 0.0's key). Inside an
    IRBuilder (it binds its intermediates, so the generated code reads `v` once)."""
    t = tvm.DataType(dtype)
    if t.type_code in (tvm.DataTypeCode.INT, tvm.DataTypeCode.UINT) and t.bits <= 32:
        if t.type_code == tvm.DataTypeCode.INT:
            key = tirx.bitwise_xor(tirx.reinterpret("uint32", tirx.Cast("int32", v)), _u32(0x80000000))
        else:
            key = tirx.Cast("uint32", v)
    else:
        f = v if dtype == "float32" else tirx.Cast("float32", v)  # half and bfloat16 widen exactly
        bits = T.Bind(tirx.reinterpret("uint32", f))
        u = T.Bind(tirx.Select(bits == _u32(0x80000000), _u32(0), bits))  # -0.0 -> 0.0
        negative = tirx.shift_right(u, _u32(31)) == _u32(1)
        key = tirx.Select(negative, tirx.bitwise_not(u), tirx.bitwise_or(u, _u32(0x80000000)))
    return key if largest else tirx.bitwise_not(key)


def _radix_digits(n: int) -> list[tuple[int, int]]:
    """(word, shift) of the key's 8-bit digits from the top: the value word's four, then the index word's that vary
    over [0, n) (higher ones are the same for every element)."""
    index_bits = max(1, (n - 1).bit_length())
    return [(0, s) for s in (24, 16, 8, 0)] + [(1, s) for s in (24, 16, 8, 0) if s < index_bits]


def _topk_ir(data_buf, values_buf, indices_buf, k: int, largest: bool):
    n = int(data_buf.shape[-1])
    rows = prod(data_buf.shape[:-1])
    dtype = str(data_buf.dtype)
    gpu = on_gpu()

    with IRBuilder() as ib, T.seq_scope():
        data = T.buffer_proxy(T.decl_buffer([rows * n], dtype, data=data_buf.data))
        values = T.buffer_proxy(T.decl_buffer([rows * k], dtype, data=values_buf.data))
        indices = T.buffer_proxy(T.decl_buffer([rows * k], "int64", data=indices_buf.data))

        if not radix(n):
            _sort_rows(data, values, indices, n, k, rows, dtype, largest, gpu)
        else:
            _select_rows(data, values, indices, n, k, rows, dtype, largest, gpu)
    return ib.get()


def _scratch(size: int, dt: str, gpu: bool):
    """A block's shared buffer on the GPU (global on the CPU, where blocks run one after another)."""
    return T.buffer_proxy(T.decl_buffer([size], dt, scope="shared" if gpu else "global"))


def _sort(sv, si, size: int, threads: int, tx, better, gpu: bool) -> None:
    """The bitonic network over `size` (a power of two) slots of (sv, si): best first. With fewer pairs than
    threads, the spare threads read a pair too but never write (TVM places no barrier inside a condition, and a
    step's reads and writes are separated by one)."""
    pairs = size // 2
    span = 2
    while span <= size:
        j = span // 2
        while j >= 1:
            with kernel_ir.block_items(pairs, threads, tx, gpu, guard=False) as p:
                active = p < pairs if gpu and pairs % threads else tirx.const(True, "bool")
                p = tirx.min(p, pairs - 1) if gpu and pairs % threads else p
                i = T.Bind((p // j) * (2 * j) + p % j)
                q = T.Bind(i + j)
                vi, ii, vq, iq = T.Bind(sv[i]), T.Bind(si[i]), T.Bind(sv[q]), T.Bind(si[q])
                # Within each span the first half runs best-first, the second worst-first; the last span (the
                # whole array) is best-first.
                forward = tirx.bitwise_and(i, span) == 0
                swap = tirx.Select(forward, better(vq, iq, vi, ii), better(vi, ii, vq, iq))
                with T.If(tirx.And(active, swap)), T.Then():
                    sv[i], si[i], sv[q], si[q] = vq, iq, vi, ii
            kernel_ir.block_barrier(gpu)
            j //= 2
        span *= 2


def _sort_rows(data, values, indices, n, k, rows, dtype, largest, gpu):
    """Rows of at most CHUNK elements: each sorted whole in shared memory, its best k written."""
    slots = _pow2(n)
    worst = _worst(dtype, largest)

    def better(va, ia, vb, ib):
        """(va, ia) comes before (vb, ib) in ONNX's order."""
        wins = va > vb if largest else va < vb
        return tirx.Or(wins, tirx.And(va == vb, ia < ib))

    threads = min(THREADS, max(1, slots // 2))
    with kernel_ir.blocks(rows, threads, gpu) as (row, tx):
        sv, si = _scratch(slots, dtype, gpu), _scratch(slots, "int32", gpu)
        with kernel_ir.block_items(slots, threads, tx, gpu) as s:
            inside = s < n
            sv[s] = tirx.if_then_else(inside, data[row * n + tirx.min(s, n - 1)], worst)
            si[s] = tirx.if_then_else(inside, tirx.Cast("int32", s), LAST_INDEX)
        kernel_ir.block_barrier(gpu)
        _sort(sv, si, slots, threads, tx, better, gpu)
        with kernel_ir.block_items(k, threads, tx, gpu) as s:
            values[row * k + s] = sv[s]
            indices[row * k + s] = tirx.Cast("int64", si[s])


def _select_rows(data, values, indices, n, k, rows, dtype, largest, gpu):
    """Rows longer than CHUNK: the radix select of the module's docstring, one block per row."""
    threads = THREADS
    groups = -(-n // (threads * GROUP))  # the rounds of GROUP loads per thread covering a row
    slots = _pow2(k)
    digits = _radix_digits(n)

    with kernel_ir.blocks(rows, threads, gpu) as (row, tx):
        hist = _scratch(256, "uint32", gpu)
        picked = _scratch(3, "uint32", gpu)  # digit, elements above it, elements in it
        counter = _scratch(1, "uint32", gpu)
        cand_key, cand_pos = _scratch(slots, "uint32", gpu), _scratch(slots, "int32", gpu)
        # The prefix chosen so far and its mask (per key word), and the elements still needed (0 once the prefix
        # selects exactly them): the same in every thread.
        prefix = T.buffer_proxy(T.decl_buffer([2], "uint32", scope="local"))
        mask = T.buffer_proxy(T.decl_buffer([2], "uint32", scope="local"))
        need = T.buffer_proxy(T.decl_buffer([1], "uint32", scope="local"))
        keys = T.buffer_proxy(T.decl_buffer([GROUP], "uint32", scope="local"))
        prefix[0], prefix[1], mask[0], mask[1] = _u32(0), _u32(0), _u32(0), _u32(0)
        need[0] = _u32(k)

        def positions(body):
            """body(pos, key_hi, key_lo, valid) for every element of the row: on the GPU in rounds of GROUP
            loads per thread (all issued before any is used), every thread in every round (the counting warps
            stay converged); on the CPU a serial loop."""
            if not gpu:
                with T.serial(0, n) as pos:
                    key = T.Bind(order_key(T.Bind(data[row * n + pos]), dtype, largest))
                    body(pos, key, tirx.bitwise_not(tirx.Cast("uint32", pos)), tirx.const(True, "bool"))
                return
            with T.serial(0, groups) as g:
                with T.unroll(0, GROUP) as u:
                    pos = (g * GROUP + u) * threads + tx
                    keys[u] = order_key(T.Bind(data[row * n + tirx.min(pos, n - 1)]), dtype, largest)
                with T.unroll(0, GROUP) as u:
                    pos = T.Bind((g * GROUP + u) * threads + tx)
                    body(pos, keys[u], tirx.bitwise_not(tirx.Cast("uint32", pos)), pos < n)

        def matches(hi, lo):
            return tirx.And(tirx.bitwise_and(hi, mask[0]) == prefix[0], tirx.bitwise_and(lo, mask[1]) == prefix[1])

        for word, shift in digits:
            # Every pass runs (TVM places no barrier inside a condition); once the prefix selects exactly the
            # elements needed (need = 0), a pass neither loads, counts nor moves the prefix.
            with kernel_ir.block_items(256, threads, tx, gpu) as b:
                hist[b] = _u32(0)
            kernel_ir.block_barrier(gpu)

            def count(pos, hi, lo, valid, word=word, shift=shift):
                take = tirx.And(valid, matches(hi, lo))
                digit = tirx.bitwise_and(tirx.shift_right(hi if word == 0 else lo, _u32(shift)), _u32(255))
                if gpu:
                    addr = tirx.call_intrin("handle", "tirx.address_of", hist[0])
                    T.evaluate(tirx.call_extern("void", RADIX_COUNT, addr, digit, take))
                else:
                    with T.If(take), T.Then():
                        hist[digit] = hist[digit] + _u32(1)

            with T.If(need[0] > _u32(0)), T.Then():
                positions(count)
            kernel_ir.block_barrier(gpu)
            with T.If(need[0] > _u32(0)), T.Then():
                if gpu:
                    with T.If(tx < WARP), T.Then():
                        h = tirx.call_intrin("handle", "tirx.address_of", hist[0])
                        o = tirx.call_intrin("handle", "tirx.address_of", picked[0])
                        T.evaluate(tirx.call_extern("void", RADIX_PICK, h, need[0], o))
                else:
                    _pick_serial(hist, need[0], picked)
            kernel_ir.block_barrier(gpu)
            with T.If(need[0] > _u32(0)), T.Then():
                d, above, inside = T.Bind(picked[0]), T.Bind(picked[1]), T.Bind(picked[2])
                prefix[word] = tirx.bitwise_or(prefix[word], tirx.shift_left(d, _u32(shift)))
                mask[word] = tirx.bitwise_or(mask[word], _u32(255 << shift))
                left = T.Bind(need[0] - above)
                # Every element matching the prefix is needed: done (the gather needs no count).
                need[0] = tirx.Select(inside == left, _u32(0), left)
            kernel_ir.block_barrier(gpu)
        # Gather the k elements whose keys' prefix is at least the chosen one, then sort them.
        with kernel_ir.block_items(slots, threads, tx, gpu) as s:
            cand_key[s] = _u32(0)
            cand_pos[s] = tirx.const(LAST_INDEX, "int32")
        if gpu:
            with T.If(tx == 0), T.Then():
                counter[0] = _u32(0)
        else:
            counter[0] = _u32(0)
        kernel_ir.block_barrier(gpu)

        def gather(pos, hi, lo, valid):
            mh, ml = T.Bind(tirx.bitwise_and(hi, mask[0])), T.Bind(tirx.bitwise_and(lo, mask[1]))
            at_least = tirx.Or(mh > prefix[0], tirx.And(mh == prefix[0], ml >= prefix[1]))
            with T.If(tirx.And(valid, at_least)), T.Then():
                if gpu:
                    slot = T.Bind(
                        tirx.call_extern(
                            "uint32", RADIX_SLOT, tirx.call_intrin("handle", "tirx.address_of", counter[0])
                        )
                    )
                else:
                    slot = T.Bind(counter[0])
                    counter[0] = slot + _u32(1)
                cand_key[slot] = hi
                cand_pos[slot] = tirx.Cast("int32", pos)

        positions(gather)
        kernel_ir.block_barrier(gpu)

        def better(ka, pa, kb, pb):
            return tirx.Or(ka > kb, tirx.And(ka == kb, pa < pb))

        _sort(cand_key, cand_pos, slots, threads, tx, better, gpu)
        with kernel_ir.block_items(k, threads, tx, gpu) as s:
            pos = T.Bind(cand_pos[s])
            values[row * k + s] = data[row * n + pos]
            indices[row * k + s] = tirx.Cast("int64", pos)


def _pick_serial(hist, need, picked) -> None:
    """opf_radix_pick as a serial loop (the CPU): bins from the top until the count reaches `need`."""
    acc = T.buffer_proxy(T.decl_buffer([2], "uint32", scope="local"))  # elements above, found
    acc[0], acc[1] = _u32(0), _u32(0)
    with T.serial(0, 256) as j:
        b = T.Bind(tirx.Cast("uint32", 255 - j))
        c = T.Bind(hist[b])
        with T.If(tirx.And(acc[1] == _u32(0), acc[0] + c >= need)), T.Then():
            picked[0], picked[1], picked[2] = b, acc[0], c
            acc[1] = _u32(1)
        with T.If(acc[1] == _u32(0)), T.Then():
            acc[0] = acc[0] + c
