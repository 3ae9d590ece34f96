// A probe of a different RoiAlign algorithm (not part of opforge; scripts/roialign_anatomy.py times it next to
// opforge's plane kernel): a sweep down the map's rows with channels interleaved.
//
// A block takes 8 channels and a range of rows. Shared memory holds a ring of K map rows, each stored pixel-major
// with the 8 channels innermost and a pitch of P pixels (P = 2 mod 4): the 4 corners of one sampling point
// (pixels p, p+1, p+P, p+P+1) x 8 channels are four 32-byte segments in four distinct bank octets, so a
// quarter-warp (corner x half of the channels per lane) reads all of them with one conflict-free 16-byte load.
// The rows arrive B at a time (loaded a step ahead); an output row (box, ph) is pooled in the step that loads its
// last row, so each box's 7 output rows are written at 7 different times. Boxes' lines and the (box, ph) rows,
// bucketed by their last row, come from the host (tables below), since this probes the pooling, not the tables.
//
// mode bit 0: compute but store nothing; bit 1: pool from a ring never filled.
#define H 200
#define W 272
#define C 256
#define CG 8
#define B 4
#define K 24  // >= 2B + 15: the rows a step reads (16 at most) and the next step's B rows never share a slot
#define UN 2
#define P 274
#define THREADS 1024
#define QW (THREADS / 8)

__device__ __forceinline__ float pick(float4 v, int s) { return s == 0 ? v.x : s == 1 ? v.y : s == 2 ? v.z : v.w; }

extern "C" __global__ void __launch_bounds__(THREADS, 1)
row_sweep(const float* __restrict__ data, const int4* __restrict__ yrec, const int4* __restrict__ xtab,
          const int* __restrict__ evbox, const int* __restrict__ row_ptr, const int* __restrict__ ranges,
          float* __restrict__ out, int mode) {
  extern __shared__ float4 ring4[];
  float* ring = reinterpret_cast<float*>(ring4);
  const int g = blockIdx.x;
  const int ra = ranges[blockIdx.y], rb = ranges[blockIdx.y + 1];
  const int t = threadIdx.x;
  const int fc = t & 7, fj = t >> 3;
  const bool filler = fj < W / 4;
  const float* src = data + ((size_t)g * CG + fc) * H * W;
  auto load = [&](int r) -> float4 {
    return (filler && !(mode & 2)) ? __ldg(reinterpret_cast<const float4*>(src + min(r, H - 1) * W) + fj)
                                   : make_float4(0.f, 0.f, 0.f, 0.f);
  };
  auto store = [&](int r, float4 v) {  // transposed, rotated so the 4 x-groups of a warp hit 4 bank octets
    if (!filler) return;
    float* row = ring + (r % K) * P * CG;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int s = (k + fj) & 3;
      row[(4 * fj + s) * CG + fc] = pick(v, s);
    }
    if (fj == W / 4 - 1) row[W * CG + fc] = v.w;  // the clamped column past the edge
  };
  for (int r = max(0, ra - 15); r < ra; ++r) store(r, load(r));
  float4 pre[B];
#pragma unroll
  for (int k = 0; k < B; ++k) pre[k] = load(ra + k);
  const int sub = t & 7, corner = sub >> 1, half = sub & 1, dy = corner >> 1, dx = corner & 1;
  const int quarter = (t >> 3) & 3, warp = t >> 5;
  for (int r = ra; r < rb; r += B) {
#pragma unroll
    for (int k = 0; k < B; ++k)
      if (r + k <= H) store(r + k, pre[k]);
#pragma unroll
    for (int k = 0; k < B; ++k)
      if (r + B + k < rb) pre[k] = load(r + B + k);
    __syncthreads();
    const int e0 = row_ptr[r], items = (row_ptr[min(r + B, rb)] - e0) * 7;
    for (int base = warp * 4; base < items; base += QW * UN) {
      int box[UN], ph[UN], pw[UN];
      bool active[UN];
      int4 yv[UN], xv[UN];
#pragma unroll
      for (int u = 0; u < UN; ++u) {
        const int i = base + u * QW + quarter;
        active[u] = i < items;
        const int ii = active[u] ? i : 0;
        const int e = e0 + ii / 7;
        pw[u] = ii % 7;
        const int bp = evbox[e];
        box[u] = bp / 7;
        ph[u] = bp - box[u] * 7;
        yv[u] = yrec[e];
        xv[u] = xtab[box[u] * 7 + pw[u]];
      }
      float4 acc[UN];
#pragma unroll
      for (int u = 0; u < UN; ++u) {
        acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int iy = 0; iy < 2; ++iy) {
          const int ylo = iy ? yv[u].z : yv[u].x;
          const float fy = __int_as_float(iy ? yv[u].w : yv[u].y);
          const float wy = dy ? fy : 1.f - fy;
#pragma unroll
          for (int ix = 0; ix < 2; ++ix) {
            const int xlo = ix ? xv[u].z : xv[u].x;
            const float fx = __int_as_float(ix ? xv[u].w : xv[u].y);
            const float wx = dx ? fx : 1.f - fx;
            const bool ok = (ylo | xlo) >= 0 && active[u];  // a line off the map (-1) reads 0
            const float w = ok ? wy * wx : 0.f;
            const int rr = ok ? ylo + dy : r;
            const int cc = ok ? xlo + dx : 0;
            const float4 v = ring4[((rr % K) * P + cc) * 2 + half];
            acc[u].x = fmaf(w, v.x, acc[u].x);
            acc[u].y = fmaf(w, v.y, acc[u].y);
            acc[u].z = fmaf(w, v.z, acc[u].z);
            acc[u].w = fmaf(w, v.w, acc[u].w);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < UN; ++u) {
#pragma unroll
        for (int m = 2; m <= 4; m <<= 1) {  // the 4 corners' sums meet in corner 0's lanes
          acc[u].x += __shfl_xor_sync(0xffffffffu, acc[u].x, m);
          acc[u].y += __shfl_xor_sync(0xffffffffu, acc[u].y, m);
          acc[u].z += __shfl_xor_sync(0xffffffffu, acc[u].z, m);
          acc[u].w += __shfl_xor_sync(0xffffffffu, acc[u].w, m);
        }
        if (active[u] && corner == 0 && (!(mode & 1) || acc[u].x == 12345.678f)) {
          float* o = out + ((size_t)box[u] * C + g * CG + half * 4) * 49 + ph[u] * 7 + pw[u];
          o[0] = acc[u].x * 0.25f;
          o[49] = acc[u].y * 0.25f;
          o[98] = acc[u].z * 0.25f;
          o[147] = acc[u].w * 0.25f;
        }
      }
    }
  }
}
