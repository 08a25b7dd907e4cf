// Small helper kernels for the heavy-math layers (layers/conv.cc,
// layers/gemm.cc): the bias + residual + activation epilogue that cuDNN or
// cuBLASLt cannot fuse, a pad/crop copy (asymmetric convolution padding,
// ConvTranspose cropping, channel padding for NHWC) and the broadcast of
// Gemm's C. Host launchers take device pointers; everything else by value.
// C++17-clean: included from nn.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kiln/tensor.h"

namespace kiln::gpu {

// Activations the epilogue applies (alpha/beta meaning per activation:
// Clip min/max, LeakyRelu alpha, HardSigmoid alpha/beta; unused otherwise).
enum class NnActivation : int32_t {
  kNone = 0,
  kRelu,
  kClip,
  kSigmoid,
  kTanh,
  kLeakyRelu,
  kHardSigmoid,
  kHardSwish,
  kSiLU,      // x * sigmoid(x)
  kGeluErf,   // 0.5 x (1 + erf(x / sqrt(2)))
  kGeluTanh,  // tanh approximation
};

// In place over `count` elements of y (float32, float16 or bfloat16):
//   y[i] = act(y[i] + bias[(i / inner) % channels] + z[i])
// bias (channels elements) and z (count elements, y's layout) may be null.
// inner = the spatial volume for NCHW; 1 for NHWC, and for a per-column bias
// of a row-major [M, N] matrix (channels = N).
void LaunchBiasResidualActivation(void* y, const void* bias, const void* z, int64_t count,
                                  int64_t channels, int64_t inner, DType dtype,
                                  NnActivation activation, float alpha, float beta,
                                  cudaStream_t stream);

constexpr int kPadCopyMaxRank = 6;

// out[o] = in[o - begin] where every coordinate lies inside in_dims, else 0
// (all-zero bits). Dims are physical (memory order), row-major; begin may be
// negative (cropping). Elements are moved as raw bytes of elem_size (1, 2, 4
// or 8).
struct PadCopyParams {
  int rank = 0;
  int64_t out_dims[kPadCopyMaxRank] = {};
  int64_t in_dims[kPadCopyMaxRank] = {};
  int64_t begin[kPadCopyMaxRank] = {};
};
void LaunchPadCopy(const void* in, void* out, const PadCopyParams& params, size_t elem_size,
                   cudaStream_t stream);

// y[i, j] = c[(c_rows == 1 ? 0 : i), (c_cols == 1 ? 0 : j)] for a row-major
// y[m, n] and c[c_rows, c_cols] (c_rows in {1, m}, c_cols in {1, n}).
void LaunchBroadcast2D(const void* c, int64_t c_rows, int64_t c_cols, void* y, int64_t m,
                       int64_t n, size_t elem_size, cudaStream_t stream);

}  // namespace kiln::gpu
