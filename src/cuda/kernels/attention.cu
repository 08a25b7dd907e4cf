// Fused multi-head attention (flash-attention style). See attention.h.
//
// One CTA of 4 warps handles 64 query rows of one (batch, head); each warp
// owns 16 rows. Key/value tiles of 64 rows stream through shared memory:
//
//   S_w = Q_w K^T            WMMA 16x16x16, float32 accumulators -> smem
//   S   = S * scale + mask   float32; keys past kv_len get -inf
//   online softmax           running row max m and sum l (float32);
//                            P = exp(S - m_new) stored as T; O *= exp(m_old - m_new)
//   O_w += P_w V             WMMA, O kept in float32 shared memory
//
// and at the end out = O / l. O lives in shared memory (not in accumulator
// fragments) because the per-row rescale needs to know which row each
// element is in, which WMMA fragments do not expose.
#include "cuda/kernels/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_dispatch.cuh"

namespace kiln::gpu::kernels {
namespace {

using namespace nvcuda;

constexpr int kBlockM = 64;  // Query rows per CTA.
constexpr int kBlockN = 64;  // Keys per tile.
constexpr int kWarps = 4;    // Each owns 16 query rows.
constexpr int kThreads = kWarps * 32;
constexpr int kVec = 8;      // 16-byte vectors of 2-byte elements.
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kBlockM == kWarps * 16, "one 16-row WMMA tile per warp");

// Shared memory plan for head dim D (all region sizes are multiples of 128
// bytes, so every WMMA pointer below is 32-byte aligned). Rows are padded to
// spread shared-memory banks; WMMA needs ldm % 8 == 0 for 2-byte and % 4 == 0
// for float elements.
template <int D>
struct Plan {
  static constexpr int kLdh = D + 8;        // Elements per row of the Q/K/V tiles.
  static constexpr int kLds = kBlockN + 4;  // Floats per row of S.
  static constexpr int kLdp = kBlockN + 8;  // Elements per row of P.
  static constexpr int kLdo = D + 4;        // Floats per row of O.
  static constexpr size_t kKBytes = size_t{kBlockN} * kLdh * 2;
  static constexpr size_t kSBytes = size_t{kBlockM} * kLds * 4;
  static constexpr size_t kPBytes = size_t{kBlockM} * kLdp * 2;
  static constexpr size_t kOBytes = size_t{kBlockM} * kLdo * 4;
  static constexpr size_t kQBytes = size_t{kBlockM} * kLdh * 2;
  static constexpr size_t kMaskBytes = size_t{kBlockN} * 4;
  static constexpr size_t kKOffset = 0;
  static constexpr size_t kVOffset = kKOffset + kKBytes;
  static constexpr size_t kSOffset = kVOffset + kKBytes;
  static constexpr size_t kPOffset = kSOffset + kSBytes;
  static constexpr size_t kOOffset = kPOffset + kPBytes;
  static constexpr size_t kMaskOffset = kOOffset + kOBytes;
  static constexpr size_t kBytes = kMaskOffset + kMaskBytes;
  // The Q tile is only read once (into registers) before S and P are first
  // written, so it shares their space.
  static constexpr size_t kQOffset = kSOffset;
  static_assert(kQBytes <= kSBytes + kPBytes, "Q tile must fit in the S/P space");
  static_assert(kKBytes % 128 == 0 && kSBytes % 128 == 0 && kPBytes % 128 == 0 &&
                    kOBytes % 128 == 0,
                "regions must keep 128-byte alignment");
  static_assert(D % 16 == 0 && D % (2 * kVec) == 0, "head dim must be a multiple of 16");
};

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return __bfloat162float(v);
  }
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return __float2bfloat16_rn(v);
  }
}

// Copies kVec elements (16 bytes) from global to shared memory, or zeros when
// !valid. `aligned`: the global address is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void LoadVec(T* dst, const T* src, bool valid, bool aligned) {
  if (!valid) {
    *reinterpret_cast<int4*>(dst) = make_int4(0, 0, 0, 0);
  } else if (aligned) {
    *reinterpret_cast<int4*>(dst) = __ldg(reinterpret_cast<const int4*>(src));
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) dst[e] = src[e];
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    AttentionKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    const T* __restrict__ mask, T* __restrict__ out, AttentionParams p,
                    bool aligned) {
  using P = Plan<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* q_s = reinterpret_cast<T*>(smem + P::kQOffset);
  T* k_s = reinterpret_cast<T*>(smem + P::kKOffset);
  T* v_s = reinterpret_cast<T*>(smem + P::kVOffset);
  float* s_s = reinterpret_cast<float*>(smem + P::kSOffset);
  T* p_s = reinterpret_cast<T*>(smem + P::kPOffset);
  float* o_s = reinterpret_cast<float*>(smem + P::kOOffset);
  float* mask_s = reinterpret_cast<float*>(smem + P::kMaskOffset);

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
  constexpr int kVecsPerRow = D / kVec;

  // The Q tile (rows past q_len are zero) and O = 0.
  for (int i = tid; i < kBlockM * kVecsPerRow; i += kThreads) {
    const int r = i / kVecsPerRow, c = (i % kVecsPerRow) * kVec;
    LoadVec(q_s + r * P::kLdh + c, q_base + (q0 + r) * in_stride + c, q0 + r < p.q_len, aligned);
  }
  for (int i = tid; i < kBlockM * P::kLdo; i += kThreads) o_s[i] = 0.f;
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> q_frag[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wmma::load_matrix_sync(q_frag[kk], q_s + warp * 16 * P::kLdh + kk * 16, P::kLdh);

  // Row state: lanes 2r and 2r+1 share row r of the warp's 16 and split its
  // columns (even / odd); both hold the row's running max and sum.
  const int row = lane / 2;
  const int parity = lane % 2;
  float m_run = -INFINITY;
  float l_run = 0.f;
  float* s_w = s_s + warp * 16 * P::kLds;
  T* p_w = p_s + warp * 16 * P::kLdp;
  float* o_w = o_s + warp * 16 * P::kLdo;

  for (int64_t n0 = 0; n0 < p.kv_len; n0 += kBlockN) {
    // Every warp is done with the previous K/V tile (and, on the first
    // pass, with the Q tile that S/P overwrite).
    __syncthreads();
    for (int i = tid; i < kBlockN * kVecsPerRow; i += kThreads) {
      const int r = i / kVecsPerRow, c = (i % kVecsPerRow) * kVec;
      const bool valid = n0 + r < p.kv_len;
      const int64_t offset = (n0 + r) * in_stride + c;
      LoadVec(k_s + r * P::kLdh + c, k_base + offset, valid, aligned);
      LoadVec(v_s + r * P::kLdh + c, v_base + offset, valid, aligned);
    }
    for (int j = tid; j < kBlockN; j += kThreads) {
      float bias = -INFINITY;  // Keys past the end take no weight.
      if (n0 + j < p.kv_len) bias = mask_row ? ToFloat(mask_row[n0 + j]) : 0.f;
      mask_s[j] = bias;
    }
    __syncthreads();

    // S_w = Q_w K^T (K tile rows are the columns of K^T: col_major B).
#pragma unroll
    for (int j = 0; j < kBlockN / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> k_frag;
        wmma::load_matrix_sync(k_frag, k_s + j * 16 * P::kLdh + kk * 16, P::kLdh);
        wmma::mma_sync(acc, q_frag[kk], k_frag, acc);
      }
      wmma::store_matrix_sync(s_w + j * 16, acc, P::kLds, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax on row `row`, columns parity, parity + 2, ...
    float* s_row = s_w + row * P::kLds;
    float tile_max = -INFINITY;
#pragma unroll 8
    for (int c = parity; c < kBlockN; c += 2) {
      const float x = s_row[c] * p.scale + mask_s[c];
      s_row[c] = x;
      tile_max = fmaxf(tile_max, x);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    const float m_new = fmaxf(m_run, tile_max);
    // While every score of the row is -inf, subtract 0 so exp gives 0, not NaN.
    const float base = m_new == -INFINITY ? 0.f : m_new;
    const float correction = __expf(m_run - base);
    float tile_sum = 0.f;
    T* p_row = p_w + row * P::kLdp;
#pragma unroll 8
    for (int c = parity; c < kBlockN; c += 2) {
      const float e = __expf(s_row[c] - base);
      tile_sum += e;
      p_row[c] = FromFloat<T>(e);
    }
    tile_sum += __shfl_xor_sync(kFullMask, tile_sum, 1);
    l_run = l_run * correction + tile_sum;
    m_run = m_new;
    float* o_row = o_w + row * P::kLdo;
#pragma unroll 8
    for (int c = parity; c < D; c += 2) o_row[c] *= correction;
    __syncwarp();

    // O_w += P_w V.
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, o_w + j * 16, P::kLdo, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p_frag;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> v_frag;
        wmma::load_matrix_sync(p_frag, p_w + kk * 16, P::kLdp);
        wmma::load_matrix_sync(v_frag, v_s + kk * 16 * P::kLdh + j * 16, P::kLdh);
        wmma::mma_sync(acc, p_frag, v_frag, acc);
      }
      wmma::store_matrix_sync(o_w + j * 16, acc, P::kLdo, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // out = O / l. Each lane of the pair writes half of the row.
  const int64_t qi = q0 + warp * 16 + row;
  if (qi >= p.q_len) return;
  const float inv_l = l_run > 0.f ? 1.f / l_run : 0.f;
  const float* o_row = o_w + row * P::kLdo + parity * (D / 2);
  T* dst = o_base + qi * row_stride + parity * (D / 2);
#pragma unroll
  for (int c = 0; c < D / 2; c += kVec) {
    alignas(16) T packed[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) packed[e] = FromFloat<T>(o_row[c + e] * inv_l);
    if (aligned) {
      *reinterpret_cast<int4*>(dst + c) = *reinterpret_cast<const int4*>(packed);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[c + e] = packed[e];
    }
  }
}

template <typename T, int D>
void Prepare() {
  KILN_CUDA_CHECK(cudaFuncSetAttribute(AttentionKernel<T, D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(Plan<D>::kBytes)));
}

template <typename T, int D>
void Launch(const void* q, const void* k, const void* v, const void* mask, void* out,
            const AttentionParams& p, unsigned blocks, bool aligned, cudaStream_t stream) {
  AttentionKernel<T, D><<<blocks, kThreads, Plan<D>::kBytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<const T*>(mask), static_cast<T*>(out), p, aligned);
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool AttentionSupports(DType dtype, int head_dim) {
  return (dtype == DType::kFloat16 || dtype == DType::kBFloat16) &&
         (head_dim == 32 || head_dim == 64 || head_dim == 128);
}

void PrepareAttention(DType dtype, int head_dim) {
  DispatchAttention("attention kernel", dtype, head_dim, [](auto type, auto dim) {
    Prepare<decltype(type), decltype(dim)::value>();
  });
}

void LaunchAttention(DType dtype, const void* q, const void* k, const void* v, const void* mask,
                     void* out, const AttentionParams& p, cudaStream_t stream) {
  KILN_CHECK(p.batch >= 0 && p.heads >= 1 && p.q_len >= 0 && p.kv_len >= 1,
             "attention kernel: bad sizes batch ", p.batch, " heads ", p.heads, " q_len ", p.q_len,
             " kv_len ", p.kv_len);
  const int64_t q_tiles = (p.q_len + kBlockM - 1) / kBlockM;
  const int64_t blocks = p.batch * p.heads * q_tiles;
  if (blocks == 0) return;
  KILN_CHECK(blocks <= int64_t{0x7fffffff}, "attention kernel: ", blocks,
             " blocks exceed the grid limit");
  KILN_CHECK(p.in_row_stride >= 0, "attention kernel: negative input row stride");
  // Output rows are multiples of 8 elements apart (head_dim is), so 16-byte
  // vectors work whenever the base pointers and the input stride allow them.
  const bool aligned = Aligned16(q) && Aligned16(k) && Aligned16(v) && Aligned16(out) &&
                       p.in_row_stride % 8 == 0;
  const unsigned grid = static_cast<unsigned>(blocks);
  DispatchAttention("attention kernel", dtype, p.head_dim, [&](auto type, auto dim) {
    Launch<decltype(type), decltype(dim)::value>(q, k, v, mask, out, p, grid, aligned, stream);
  });
}

}  // namespace kiln::gpu::kernels
