// Launcher for the fused multi-head attention kernel (KilnAttention,
// src/cuda/layers/attention.cc):
//
//   out[b, i, h, :] = sum_j softmax_j(scale * <Q[b,i,h,:], K[b,j,h,:]> + mask[b, j]) V[b, j, h, :]
//
// Q, out are [batch, q_len, heads, head_dim] row-major; K, V are
// [batch, kv_len, heads, head_dim] row-major (so [b, s, h*d] projections are
// read directly, heads by stride); Q, K and V rows may be further apart
// (AttentionParams::in_row_stride: one packed QKV projection). Scores and softmax are float32 (online
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
  // Elements between consecutive sequence positions of Q, K and V; 0 means
  // heads * head_dim (separate [b, s, h*d] tensors). A packed [b, s, 3*h*d]
  // QKV projection passes 3 * heads * head_dim with k = q + h*d and
  // v = q + 2*h*d. The output always has rows of heads * head_dim.
  int64_t in_row_stride = 0;
};

bool AttentionSupports(DType dtype, int head_dim);

// Raises the kernel's dynamic shared memory limit for (dtype, head_dim).
// Not stream-ordered: call once before launching (at layer creation), never
// inside a capture.
void PrepareAttention(DType dtype, int head_dim);

// mask may be nullptr (no mask); it has the dtype of Q/K/V.
void LaunchAttention(DType dtype, const void* q, const void* k, const void* v, const void* mask,
                     void* out, const AttentionParams& params, cudaStream_t stream);

// A second implementation of the same computation (attention_mma.cu,
// tactic "flash_mma_m16n8k16"): FlashAttention-2 style on mma.sync
// m16n8k16 with Q, S, P and O in registers and K/V double-buffered through
// cp.async. Same semantics, parameters and contract as the functions above.
// It needs 16-byte aligned q, k, v and out; otherwise LaunchAttentionMma
// runs LaunchAttention instead (PrepareAttentionMma prepares both kernels).
// warps: 4 or 8 per CTA (64 or 128 query rows). cap_registers: the build
// that caps registers so 16 warps fit per SM (head dim <= 64; 8 for 128), at
// the price of a few spilled bytes. The builder times the combinations.
// Supports the same dtypes and head dims (AttentionSupports).
void PrepareAttentionMma(DType dtype, int head_dim);
void LaunchAttentionMma(DType dtype, const void* q, const void* k, const void* v, const void* mask,
                        void* out, const AttentionParams& params, bool cap_registers, int warps,
                        cudaStream_t stream);

}  // namespace kiln::gpu::kernels
