// What the two attention kernels (attention.cu: WMMA, attention_mma.cu:
// mma.sync) share: the host-side dispatch of dtype and head dim to template
// instantiations, the 16-byte alignment test, and where a CTA's tile and
// base pointers are. C++17 (nvcc).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/kernels/attention.h"
#include "kiln/error.h"
#include "kiln/tensor.h"

namespace kiln::gpu::kernels {

// Calls f(T{}, std::integral_constant<int, D>{}) with T = __half or
// __nv_bfloat16 and D = 32, 64 or 128; throws naming `kernel` otherwise.
template <typename F>
void DispatchAttention(const char* kernel, DType dtype, int head_dim, F&& f) {
  auto by_dim = [&](auto type_tag) {
    switch (head_dim) {
      case 32: return f(type_tag, std::integral_constant<int, 32>{});
      case 64: return f(type_tag, std::integral_constant<int, 64>{});
      case 128: return f(type_tag, std::integral_constant<int, 128>{});
      default: Fail(kernel, ": unsupported head dim ", head_dim, " (32, 64 or 128)");
    }
  };
  if (dtype == DType::kFloat16) return by_dim(__half{});
  if (dtype == DType::kBFloat16) return by_dim(__nv_bfloat16{});
  Fail(kernel, ": unsupported dtype ", DTypeName(dtype), " (float16 or bfloat16)");
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// One CTA's query tile (blockIdx.x -> batch, head, query tile; query tile
// fastest) and its base pointers: Q, K and V rows in_stride elements apart
// (AttentionParams::in_row_stride, by default heads * D), output rows
// out_stride = heads * D apart.
template <typename T>
struct AttentionTile {
  int64_t q0 = 0;  // First query row.
  int64_t in_stride = 0, out_stride = 0;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* out = nullptr;
  const T* mask_row = nullptr;  // nullptr without a mask.
};

template <typename T, int D, int kBlockM>
__device__ __forceinline__ AttentionTile<T> LocateAttentionTile(const AttentionParams& p,
                                                                const T* q, const T* k,
                                                                const T* v, const T* mask,
                                                                T* out) {
  const int64_t q_tiles = (p.q_len + kBlockM - 1) / kBlockM;
  int64_t block = blockIdx.x;
  const int64_t q_tile = block % q_tiles;
  block /= q_tiles;
  const int64_t head = block % p.heads;
  const int64_t batch = block / p.heads;
  AttentionTile<T> t;
  t.q0 = q_tile * kBlockM;
  t.out_stride = p.heads * D;
  t.in_stride = p.in_row_stride > 0 ? p.in_row_stride : t.out_stride;
  t.q = q + batch * p.q_len * t.in_stride + head * D;
  t.k = k + batch * p.kv_len * t.in_stride + head * D;
  t.v = v + batch * p.kv_len * t.in_stride + head * D;
  t.out = out + batch * p.q_len * t.out_stride + head * D;
  t.mask_row = mask ? mask + batch * p.mask_batch_stride : nullptr;
  return t;
}

}  // namespace kiln::gpu::kernels
