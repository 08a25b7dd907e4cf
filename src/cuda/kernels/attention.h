// Launcher for the fused multi-head attention kernel (KilnAttention,
// src/cuda/layers/attention.cc):
//
//   out[b, i, h, :] = sum_j softmax_j(scale * <Q[b,i,h,:], K[b,j,h,:]> + mask[b, j]) V[b, j, h, :]
//
// Q, out are [batch, q_len, heads, head_dim] row-major; K, V are
// [batch, kv_len, heads, head_dim] row-major (so [b, s, h*d] projections are
// read directly, heads by stride). Scores and softmax are float32 (online
// softmax over key tiles, flash-attention style); the two products run on
// tensor cores (WMMA, float32 accumulation). float16 and bfloat16 only.
//
// Launches only: no allocation, no synchronization (CUDA-Graph capturable).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/tensor.h"

namespace kiln::gpu::kernels {

struct AttentionParams {
  int64_t batch = 0;
  int64_t heads = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;  // >= 1.
  int head_dim = 0;    // AttentionSupports(dtype, head_dim) must hold.
  float scale = 1.f;
  // The additive mask (when given) of key j in batch b is
  // mask[b * mask_batch_stride + j]: kv_len for a [batch, 1, 1, kv_len]
  // mask, 0 when one mask row serves every batch.
  int64_t mask_batch_stride = 0;
};

bool AttentionSupports(DType dtype, int head_dim);

// Raises the kernel's dynamic shared memory limit for (dtype, head_dim).
// Not stream-ordered: call once before launching (at layer creation), never
// inside a capture.
void PrepareAttention(DType dtype, int head_dim);

// mask may be nullptr (no mask); it has the dtype of Q/K/V.
void LaunchAttention(DType dtype, const void* q, const void* k, const void* v, const void* mask,
                     void* out, const AttentionParams& params, cudaStream_t stream);

}  // namespace kiln::gpu::kernels
