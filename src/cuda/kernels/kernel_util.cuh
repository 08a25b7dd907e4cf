// Helpers shared by kiln's CUDA kernel files (C++17, nvcc): launch sizing for
// 1-D grid-stride loops, dtype dispatch to float storage types, and the
// float <-> storage conversions the kernels compute through.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "kiln/tensor.h"

namespace kiln::gpu {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// Blocks for n work items at `threads` per block, capped (grid-stride loops
// cover the rest).
inline unsigned Blocks(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, kMaxBlocks));
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<float | __half | __nv_bfloat16>) for a float storage dtype.
template <typename Fn>
void DispatchFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    case DType::kBFloat16: fn(Tag<__nv_bfloat16>{}); break;
    default: Fail("GPU kernels: expected float32, float16 or bfloat16, got ", DTypeName(dtype));
  }
}

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace kiln::gpu
