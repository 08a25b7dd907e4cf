// Launchers for pooling: MaxPool, AveragePool (1-3 spatial dims row-major,
// 2 spatial dims NHWC) and global pooling. Device pointers; launches on
// `stream` without allocating or synchronizing. Semantics follow
// src/cpu/nn.cc.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/tensor.h"

namespace kiln::gpu::kernels {

// Window geometry padded to 3 spatial dims (leading axes of size 1): image
// index = out * stride - pad + k * dilation.
struct PoolParams {
  int64_t batch = 1, channels = 1;
  int64_t in[3] = {1, 1, 1};
  int64_t out[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};
  int64_t pad_end[3] = {0, 0, 0};
  // Memory order [N, H, W, C] (2 spatial dims: in[0] == out[0] == 1);
  // otherwise [N, C, D, H, W].
  bool nhwc = false;
};

// dtypes: float32, float16, bfloat16, int8, uint8. indices (may be nullptr)
// receives the flat NCHW index of each maximum (storage_order 1: spatial
// dims column-major), stored in the output's layout.
bool MaxPoolSupportsDType(DType dtype);
void LaunchMaxPool(DType dtype, const void* x, void* y, int64_t* indices,
                   bool column_major_indices, const PoolParams& p, cudaStream_t stream);

// dtypes: float32, float16, bfloat16.
void LaunchAveragePool(DType dtype, const void* x, void* y, bool count_include_pad,
                       const PoolParams& p, cudaStream_t stream);

// Global pooling over `volume` spatial elements per (batch, channel).
// Row-major: x is [batch, channels, volume]; nhwc: [batch, volume, channels].
// y is [batch, channels] either way. Max: float types, int8, uint8; average:
// float types.
void LaunchGlobalPool(bool is_max, DType dtype, const void* x, void* y, int64_t batch,
                      int64_t channels, int64_t volume, bool nhwc, cudaStream_t stream);

}  // namespace kiln::gpu::kernels
