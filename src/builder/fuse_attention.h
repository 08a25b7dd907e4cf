// FuseAttention: replaces BERT-style multi-head attention subgraphs with one
// KilnAttention node that the GPU runs as a single flash-attention kernel
// (src/cuda/layers/attention.cc, kernel in src/cuda/kernels/attention.cu).
//
// The pattern (what torch.onnx exports for q/k/v.view(b,s,h,d).permute(0,2,1,3),
// softmax(q @ k^T / sqrt(d) + mask) @ v, .permute(0,2,1,3).reshape(b,s,h*d)):
//
//   Q4 = [Reshape [b,sq,h*d] ->] [b,sq,h,d];   Qt = Transpose(Q4, perm 0,2,1,3)
//   K4 = [Reshape [b,sk,h*d] ->] [b,sk,h,d];   Kt = Transpose(K4, perm 0,2,3,1)
//        or Transpose(Transpose(K4, perm 0,2,1,3), perm 0,1,3,2)
//   V4 = [Reshape [b,sk,h*d] ->] [b,sk,h,d];   Vt = Transpose(V4, perm 0,2,1,3)
//   S  = MatMul(Qt, Kt)                          [b,h,sq,sk]
//   S' = Div(S, c) | Mul(S, c) | Mul(c, S)       optional; c a scalar constant
//   S''= Add(S', mask) | Add(mask, S')           optional; mask broadcastable
//                                                as [b|1, 1, 1, sk]
//   P  = Softmax(S'', last axis)
//   O  = Transpose(MatMul(P, Vt), perm 0,2,1,3)  [b,sq,h,d]
//       [-> Reshape to [b,sq,h*d]]
//
// becomes KilnAttention(Q, K, V, mask?) -> O, where Q/K/V are the [b,s,h*d]
// values before the head-split Reshape when that Reshape has no other use
// (else the [b,s,h,d] values), and O is the merged [b,sq,h*d] value when the
// final Reshape produces exactly that shape (else [b,sq,h,d]; a Reshape or
// Flatten to another shape stays, as a zero-copy view).
// Either way the memory is [b, s, h, d] row-major, so no transpose runs.
//
// The KilnAttention node
//   inputs      Q [b,sq,h*d] or [b,sq,h,d]; K, V [b,sk,h*d] or [b,sk,h,d];
//               optional mask, additive, broadcastable as [b|1,1,1,sk]
//               (any rank <= 4 whose dims right-align that way).
//               All of one dtype: float16 or bfloat16.
//   output      [b,sq,h*d] or [b,sq,h,d], the inputs' dtype.
//   attributes  num_heads (int), scale (float: S' = S * scale),
//               packed_qkv (int, optional; see PackAttentionQkv).
//   Computes softmax(Q K^T * scale + mask) V per (batch, head) with float32
//   scores and softmax.
//
// Fuses only when every intermediate value has one consumer and is not a
// graph output, all shapes are known, the dtype is float16 or bfloat16 and
// the head dim is one the kernel supports (AttentionHeadDimSupported).
// FP32 graphs keep the unfused path. Returns the number of fused nodes.
#pragma once

#include "ir/graph.h"

namespace kiln::builder {

// Head sizes the fused GPU kernel handles.
bool AttentionHeadDimSupported(int64_t head_dim);

int FuseAttention(ir::Graph& graph);

// Self-attention whose Q, K and V are three KilnMatMul projections of one
// input (constant [K, N] weights, constant or no biases, no activation, each
// read only by the attention) becomes one KilnMatMul with the weights and
// biases concatenated column-wise, writing [b, s, 3N], and a KilnAttention
// with attribute packed_qkv = 1 and inputs (QKV, mask?) that reads Q, K and V
// as the three column blocks (row stride 3N): one GEMM launch instead of
// three, with a 3x wider N. Run after FuseAttention. Returns the number packed.
int PackAttentionQkv(ir::Graph& graph);

}  // namespace kiln::builder
