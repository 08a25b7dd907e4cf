// Fused multi-head attention, tactic "flash_mma_m16n8k16": FlashAttention-2
// style on mma.sync tensor-core instructions, everything per-row kept in
// registers. Same semantics as the WMMA kernel (attention.cu); see attention.h.
//
// One CTA of kWarps warps (4 or 8, a tactic) handles 16 * kWarps query rows
// of one (batch, head); each warp owns 16 rows. With 8, a sequence of 128
// reads each K/V tile once instead of twice (one CTA per (batch, head)). Per key tile of 64 rows (K and V double-buffered in shared
// memory, filled by cp.async while the previous tile is being used):
//
//   S = Q K^T              mma m16n8k16, Q fragments live in registers for
//                          the whole kernel, S stays in accumulator registers
//   S = S*scale*log2e + mask*log2e   (keys past kv_len: -inf)
//   online softmax         row max / sum with quad shuffles, exp2
//   O = O*corr + P V       P re-packed from accumulators to A fragments in
//                          registers, O accumulators in registers (float32)
//
// and out = O / l at the end.
//
// Fragment layouts of mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16} (PTX
// ISA, "Matrix Fragments for mma.m16n8k16"). With g = lane / 4 and
// c = 2 * (lane % 4) (each register holds two 16-bit elements, the lower
// column in the low half):
//
//   A 16x16 (row-major), 4 regs:  a0 = A[g][c, c+1]      a1 = A[g+8][c, c+1]
//                                 a2 = A[g][c+8, c+9]    a3 = A[g+8][c+8, c+9]
//   B 16x8  (k x n, "col"), 2 regs: b0 = B[c, c+1][g]    b1 = B[c+8, c+9][g]
//   C 16x8  float, 4 regs:        c0,c1 = C[g][c, c+1]   c2,c3 = C[g+8][c, c+1]
//
// ldmatrix.x4 loads four 8x8 16-bit matrices; lane l supplies the shared
// address of row l % 8 of matrix l / 8, and register i of every lane receives
// matrix i in exactly the a/b register layout above (row g, columns c, c+1);
// with .trans it receives the transposed matrix (rows c, c+1 of column g).
//
//   Q (A operand, rows = queries, cols = dims): matrices (rows 0-7, cols 0-7),
//     (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15)
//     give a0..a3.
//   K (B operand of Q K^T: k = dim, n = key; K rows are keys with dims
//     contiguous, i.e. B "col"): matrices (keys 0-7, dims 0-7),
//     (keys 0-7, dims 8-15), (keys 8-15, dims 0-7), (keys 8-15, dims 8-15)
//     give b0, b1 of key tile 0 and b0, b1 of key tile 1.
//   V (B operand of P V: k = key, n = dim; V rows are keys with dims
//     contiguous, so B is row-major and needs .trans): matrices
//     (keys 0-7, dims 0-7), (keys 8-15, dims 0-7), (keys 0-7, dims 8-15),
//     (keys 8-15, dims 8-15) give b0, b1 of dim tile 0 and of dim tile 1.
//
// The C -> A re-pack: the S accumulators of key tiles 2j and 2j+1 (8 keys
// each) hold, per lane, exactly the elements the A fragment of keys
// 16j..16j+15 needs (a0 = tile 2j c0,c1; a1 = tile 2j c2,c3; a2 = tile 2j+1
// c0,c1; a3 = tile 2j+1 c2,c3), so P goes from float accumulators to f16/bf16
// A fragments with two conversions per register and no data movement.
//
// Each lane holds two query rows (g and g+8) of its warp's 16; the four lanes
// of a quad (same g) share those rows, so row reductions are two xor
// shuffles (1 and 2).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/attention.h"
#include "cuda/kernels/attention_dispatch.cuh"
#include "cuda/kernels/dependent_launch.cuh"
#include "cuda/kernels/kernel_util.cuh"
#include "cuda/kernels/mma.cuh"

namespace kiln::gpu::kernels {
namespace {

template <int kWarps>
constexpr int kQueryRowsPerCta = kWarps * 16;  // 16 per warp.
template <int kWarps>
constexpr int kThreadsPerCta = kWarps * 32;
constexpr int kBlockN = 64;  // Keys per tile.
constexpr int kChunk = 8;  // 2-byte elements per 16-byte cp.async.
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory for head dim D: the Q tile, K[2], V[2] (rows padded by 16
// bytes so the 8 row addresses of an ldmatrix hit 8 different bank groups),
// and the two tiles' mask biases as float.
template <int D, int kWarps>
struct MmaPlan {
  static constexpr int kLd = D + 8;  // Elements per shared row.
  static constexpr size_t kQBytes = size_t{kQueryRowsPerCta<kWarps>} * kLd * 2;
  static constexpr size_t kTileBytes = size_t{kBlockN} * kLd * 2;  // One K or V tile.
  static constexpr size_t kQOffset = 0;
  static constexpr size_t kKOffset = kQOffset + kQBytes;
  static constexpr size_t kVOffset = kKOffset + 2 * kTileBytes;
  static constexpr size_t kMaskOffset = kVOffset + 2 * kTileBytes;
  static constexpr size_t kBytes = kMaskOffset + 2 * kBlockN * sizeof(float);
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");
  static_assert((kLd * 2) % 16 == 0, "shared rows must keep 16-byte alignment");
};

// Two floats as one register of two 16-bit elements, `lo` in the low half.
template <typename T>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 pair = __floats2half2_rn(lo, hi);
    memcpy(&bits, &pair, sizeof(bits));
  } else {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &pair, sizeof(bits));
  }
  return bits;
}

// 2^x on the special function unit; 2^-inf = 0.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// With kCapRegisters, the CTAs per SM the register allocation must allow:
// for 4 warps, 4 (<= 128 registers) for D <= 64, where the shared memory
// (47 KB) also allows 4, and 2 for D = 128; half that for 8 warps. Uncapped,
// D = 64 takes ~136 registers (3 CTAs of 4 warps per SM) and no spills;
// capped, it spills a few bytes. All are tactics, so the builder's timing
// decides.
template <int D, bool kCapRegisters, int kWarps>
constexpr int kMinBlocksPerSm = !kCapRegisters ? 1 : (D <= 64 ? 16 : 8) / kWarps;

// Requires 16-byte aligned q, k, v (LaunchAttentionMma checks); row strides
// are multiples of 16 bytes because D is a multiple of 8.
template <typename T, int D, bool kCapRegisters, int kWarps>
__global__ void __launch_bounds__(kThreadsPerCta<kWarps>, kMinBlocksPerSm<D, kCapRegisters, kWarps>)
    AttentionMmaKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const T* __restrict__ mask, T* __restrict__ out, AttentionParams p) {
  using Plan = MmaPlan<D, kWarps>;
  constexpr int kBlockM = kQueryRowsPerCta<kWarps>;
  constexpr int kCtaThreads = kThreadsPerCta<kWarps>;
  constexpr int kLd = Plan::kLd;
  constexpr int kDimChunks = D / 16;         // k steps of Q K^T; 16-dim groups of P V.
  constexpr int kKeyChunks = kBlockN / 16;   // k steps of P V; 16-key groups of Q K^T.
  constexpr int kKeyTiles = kBlockN / 8;     // n8 tiles of S.
  constexpr int kDimTiles = D / 8;           // n8 tiles of O.
  constexpr int kChunksPerRow = D / kChunk;  // cp.async copies per row.

  WaitForPrerequisiteGrids();  // Launched as a dependent launch (dependent_launch.cuh).
  extern __shared__ __align__(128) unsigned char smem[];
  T* q_s = reinterpret_cast<T*>(smem + Plan::kQOffset);
  T* k_s = reinterpret_cast<T*>(smem + Plan::kKOffset);  // [2][kBlockN][kLd]
  T* v_s = reinterpret_cast<T*>(smem + Plan::kVOffset);  // [2][kBlockN][kLd]
  float* mask_s = reinterpret_cast<float*>(smem + Plan::kMaskOffset);  // [2][kBlockN]

  const AttentionTile<T> tile = LocateAttentionTile<T, D, kBlockM>(p, q, k, v, mask, out);
  const int64_t q0 = tile.q0;
  const int64_t row_stride = tile.out_stride, in_stride = tile.in_stride;  // In elements.
  const T* q_base = tile.q;
  const T* k_base = tile.k;
  const T* v_base = tile.v;
  T* o_base = tile.out;
  const T* mask_row = tile.mask_row;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int group = lane / 4;          // Fragment rows group and group + 8.
  const int pair = 2 * (lane % 4);     // Fragment columns pair and pair + 1.

  // Async copy of K/V rows n0..n0+63 into buffer `buf` (rows past kv_len: 0,
  // so no garbage can turn into NaN in P V). Thread tid copies the 16 bytes
  // at column copy_col of rows copy_row + kCopyRowStep * m.
  constexpr int kCopyRowStep = kCtaThreads / kChunksPerRow;
  static_assert(kCtaThreads % kChunksPerRow == 0 && kBlockN % kCopyRowStep == 0 &&
                    kBlockM % kCopyRowStep == 0,
                "copies must tile the K/V and Q tiles");
  const int copy_row = tid / kChunksPerRow;
  const int copy_col = (tid % kChunksPerRow) * kChunk;
  const uint32_t copy_dst = SharedAddress(smem) + (copy_row * kLd + copy_col) * 2;
  auto load_kv = [&](int64_t n0, int buf) {
    const uint32_t tile = static_cast<uint32_t>(buf * Plan::kTileBytes);
    const uint32_t k_dst = copy_dst + static_cast<uint32_t>(Plan::kKOffset) + tile;
    const uint32_t v_dst = copy_dst + static_cast<uint32_t>(Plan::kVOffset) + tile;
    const T* k_src = k_base + (n0 + copy_row) * in_stride + copy_col;
    const T* v_src = v_base + (n0 + copy_row) * in_stride + copy_col;
#pragma unroll
    for (int r = 0; r < kBlockN; r += kCopyRowStep) {
      const bool valid = n0 + copy_row + r < p.kv_len;
      const int64_t offset = valid ? r * in_stride : 0;  // Any readable address when !valid.
      CopyAsync16(k_dst + r * kLd * 2, (valid ? k_src : k_base) + offset, valid);
      CopyAsync16(v_dst + r * kLd * 2, (valid ? v_src : v_base) + offset, valid);
    }
  };
  // The bias of key `key` in log2 units: mask * log2(e), -inf past kv_len.
  auto mask_bias = [&](int64_t key) -> float {
    if (key >= p.kv_len) return -INFINITY;
    return mask_row ? ToFloat(mask_row[key]) * kLog2e : 0.f;
  };

  // Prologue: the Q tile (rows past q_len: 0), the first K/V tile and mask.
  {
    const T* q_src = q_base + (q0 + copy_row) * in_stride + copy_col;
#pragma unroll
    for (int r = 0; r < kBlockM; r += kCopyRowStep) {
      const bool valid = q0 + copy_row + r < p.q_len;
      const int64_t offset = valid ? r * in_stride : 0;
      CopyAsync16(copy_dst + static_cast<uint32_t>(Plan::kQOffset) + r * kLd * 2,
                  (valid ? q_src : q_base) + offset, valid);
    }
  }
  load_kv(0, 0);
  CommitAsync();
  if (tid < kBlockN) mask_s[tid] = mask_bias(tid);
  WaitAsync<0>();
  __syncthreads();

  uint32_t q_frag[kDimChunks][4];
  {
    const T* q_lane = q_s + (warp * 16 + lane % 16) * kLd + (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < kDimChunks; ++kk) LdMatrixX4(q_frag[kk], SharedAddress(q_lane + kk * 16));
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDimTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  // Rows group ([0]) and group + 8 ([1]): running max (log2 units) and this
  // lane's share of the running sum (the quad's shares are added at the end).
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
  const float scale_log2 = p.scale * kLog2e;
  const int64_t kv_tiles = (p.kv_len + kBlockN - 1) / kBlockN;

  // Per-lane ldmatrix row offsets (elements) inside a K or V tile.
  const int k_lane = ((lane / 16) * 8 + lane % 8) * kLd + ((lane / 8) % 2) * 8;
  const int v_lane = (((lane / 8) % 2) * 8 + lane % 8) * kLd + (lane / 16) * 8;

  for (int64_t t = 0; t < kv_tiles; ++t) {
    const int buf = static_cast<int>(t & 1);
    // Prefetch tile t + 1 into the other buffer (its last readers finished
    // at the barrier that ended iteration t - 1). Its mask bias is read now
    // and stored after this tile's math, hiding the load latency.
    const bool has_next = t + 1 < kv_tiles;
    float next_bias = 0.f;
    if (has_next) {
      load_kv((t + 1) * kBlockN, buf ^ 1);
      if (tid < kBlockN) next_bias = mask_bias((t + 1) * kBlockN + tid);
    }
    CommitAsync();  // Possibly empty; keeps the group count uniform.
    WaitAsync<1>();  // Everything but the prefetch has landed: tile t.
    __syncthreads();

    const T* k_tile = k_s + buf * kBlockN * kLd;
    const T* v_tile = v_s + buf * kBlockN * kLd;
    const float* bias_tile = mask_s + buf * kBlockN;

    // S = Q K^T: s[j] is the 16x8 accumulator of keys 8j..8j+7.
    float s[kKeyTiles][4];
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < kKeyChunks; ++kc) {
#pragma unroll
      for (int kk = 0; kk < kDimChunks; ++kk) {
        uint32_t b[4];
        LdMatrixX4(b, SharedAddress(k_tile + kc * 16 * kLd + kk * 16 + k_lane));
        Mma<T>(s[2 * kc], q_frag[kk], b[0], b[1]);
        Mma<T>(s[2 * kc + 1], q_frag[kk], b[2], b[3]);
      }
    }

    // Online softmax in log2 units on the accumulators.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      const float2 bias = *reinterpret_cast<const float2*>(bias_tile + j * 8 + pair);
      s[j][0] = fmaf(s[j][0], scale_log2, bias.x);
      s[j][1] = fmaf(s[j][1], scale_log2, bias.y);
      s[j][2] = fmaf(s[j][2], scale_log2, bias.x);
      s[j][3] = fmaf(s[j][3], scale_log2, bias.y);
      tile_max[0] = fmaxf(tile_max[0], fmaxf(s[j][0], s[j][1]));
      tile_max[1] = fmaxf(tile_max[1], fmaxf(s[j][2], s[j][3]));
    }
    float base[2], correction[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(kFullMask, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(kFullMask, tile_max[h], 2));
      const float m_new = fmaxf(row_max[h], tile_max[h]);
      // While every score of the row is -inf, subtract 0 so exp gives 0, not NaN.
      base[h] = m_new == -INFINITY ? 0.f : m_new;
      correction[h] = FastExp2(row_max[h] - base[h]);
      row_max[h] = m_new;
    }
    float tile_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      s[j][0] = FastExp2(s[j][0] - base[0]);
      s[j][1] = FastExp2(s[j][1] - base[0]);
      s[j][2] = FastExp2(s[j][2] - base[1]);
      s[j][3] = FastExp2(s[j][3] - base[1]);
      tile_sum[0] += s[j][0] + s[j][1];
      tile_sum[1] += s[j][2] + s[j][3];
    }
    row_sum[0] = row_sum[0] * correction[0] + tile_sum[0];
    row_sum[1] = row_sum[1] * correction[1] + tile_sum[1];
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      o[dt][0] *= correction[0];
      o[dt][1] *= correction[0];
      o[dt][2] *= correction[1];
      o[dt][3] *= correction[1];
    }

    // O += P V, P re-packed from the S accumulators (see the top comment).
#pragma unroll
    for (int kc = 0; kc < kKeyChunks; ++kc) {
      const uint32_t a[4] = {PackPair<T>(s[2 * kc][0], s[2 * kc][1]),
                             PackPair<T>(s[2 * kc][2], s[2 * kc][3]),
                             PackPair<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                             PackPair<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
      for (int dc = 0; dc < kDimChunks; ++dc) {
        uint32_t b[4];
        LdMatrixX4Trans(b, SharedAddress(v_tile + kc * 16 * kLd + dc * 16 + v_lane));
        Mma<T>(o[2 * dc], a, b[0], b[1]);
        Mma<T>(o[2 * dc + 1], a, b[2], b[3]);
      }
    }

    // The next tile's mask buffer was last read in iteration t - 1.
    if (has_next && tid < kBlockN) mask_s[(buf ^ 1) * kBlockN + tid] = next_bias;
    // Every warp is done with buffer `buf` before iteration t + 1 refills it.
    __syncthreads();
  }

  // out = O / l; each lane writes columns pair, pair + 1 of every dim tile
  // for rows group and group + 8.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(kFullMask, l, 1);
    l += __shfl_xor_sync(kFullMask, l, 2);
    const float inv_l = l > 0.f ? 1.f / l : 0.f;
    const int64_t qi = q0 + warp * 16 + group + 8 * h;
    if (qi >= p.q_len) continue;
    T* dst = o_base + qi * row_stride + pair;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt)
      *reinterpret_cast<uint32_t*>(dst + dt * 8) =
          PackPair<T>(o[dt][2 * h] * inv_l, o[dt][2 * h + 1] * inv_l);
  }
}

template <typename T, int D, int kWarps>
void PrepareWarps() {
  for (const void* kernel : {reinterpret_cast<const void*>(AttentionMmaKernel<T, D, false, kWarps>),
                             reinterpret_cast<const void*>(AttentionMmaKernel<T, D, true, kWarps>)})
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(MmaPlan<D, kWarps>::kBytes)));
}

template <typename T, int D>
void Prepare() {
  PrepareWarps<T, D, 4>();
  PrepareWarps<T, D, 8>();
}

template <typename T, int D, int kWarps>
void Launch(const void* q, const void* k, const void* v, const void* mask, void* out,
            const AttentionParams& p, bool cap_registers, cudaStream_t stream) {
  const int64_t q_tiles = (p.q_len + kQueryRowsPerCta<kWarps> - 1) / kQueryRowsPerCta<kWarps>;
  const int64_t blocks = p.batch * p.heads * q_tiles;
  if (blocks == 0) return;
  KILN_CHECK(blocks <= int64_t{0x7fffffff}, "attention kernel (mma): ", blocks,
             " blocks exceed the grid limit");
  auto kernel = cap_registers ? AttentionMmaKernel<T, D, true, kWarps>
                              : AttentionMmaKernel<T, D, false, kWarps>;
  LaunchDependent(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreadsPerCta<kWarps>),
                  MmaPlan<D, kWarps>::kBytes, stream, static_cast<const T*>(q),
                  static_cast<const T*>(k), static_cast<const T*>(v),
                  static_cast<const T*>(mask), static_cast<T*>(out), p);
}

}  // namespace

void PrepareAttentionMma(DType dtype, int head_dim) {
  PrepareAttention(dtype, head_dim);  // The fallback for unaligned pointers.
  DispatchAttention("attention kernel (mma)", dtype, head_dim, [](auto type, auto dim) {
    Prepare<decltype(type), decltype(dim)::value>();
  });
}

void LaunchAttentionMma(DType dtype, const void* q, const void* k, const void* v, const void* mask,
                        void* out, const AttentionParams& p, bool cap_registers, int warps,
                        cudaStream_t stream) {
  KILN_CHECK(p.batch >= 0 && p.heads >= 1 && p.q_len >= 0 && p.kv_len >= 1,
             "attention kernel (mma): bad sizes batch ", p.batch, " heads ", p.heads, " q_len ",
             p.q_len, " kv_len ", p.kv_len);
  KILN_CHECK(p.in_row_stride >= 0, "attention kernel (mma): negative input row stride");
  KILN_CHECK(warps == 4 || warps == 8, "attention kernel (mma): ", warps,
             " warps per CTA (4 or 8)");
  // cp.async and the 4-byte output stores need aligned rows: output rows are
  // multiples of 16 bytes apart, so the base pointers and the input stride decide.
  if (!(Aligned16(q) && Aligned16(k) && Aligned16(v) && Aligned16(out) && p.in_row_stride % 8 == 0))
    return LaunchAttention(dtype, q, k, v, mask, out, p, stream);
  DispatchAttention("attention kernel (mma)", dtype, p.head_dim, [&](auto type, auto dim) {
    using T = decltype(type);
    constexpr int D = decltype(dim)::value;
    if (warps == 8)
      Launch<T, D, 8>(q, k, v, mask, out, p, cap_registers, stream);
    else
      Launch<T, D, 4>(q, k, v, mask, out, p, cap_registers, stream);
  });
}

}  // namespace kiln::gpu::kernels
