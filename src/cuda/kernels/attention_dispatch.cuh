// Host-side dispatch shared by the two attention kernels (attention.cu:
// WMMA, attention_mma.cu: mma.sync): dtype and head dim to template
// instantiations, and the 16-byte alignment test. C++17 (nvcc).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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

}  // namespace kiln::gpu::kernels
