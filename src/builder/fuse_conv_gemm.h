// Builder passes that fold epilogues into the heavy-math nodes, producing the
// fused ops the GPU layers implement (src/cuda/layers/conv.cc, gemm.cc):
//
//   KilnConv(X, W, B?, Z?)   act(conv(X, W) + B + Z); Conv's attributes plus
//       activation        ""|Relu|Clip|Sigmoid|Tanh|LeakyRelu|HardSigmoid|HardSwish|SiLU
//       activation_alpha  Clip min, LeakyRelu alpha, HardSigmoid alpha
//       activation_beta   Clip max, HardSigmoid beta
//   KilnMatMul(A, B, bias?, R?)  act(A x op(B) + bias + R), B 2-D, bias [N],
//                            R (residual) of the output's shape
//       transB            0|1
//       activation        ""|Relu|Gelu
//       gelu_approximate  "tanh" when activation is Gelu. cuBLASLt's GELU
//                         epilogue is the tanh form: exact (erf) GELU, as the
//                         Gelu op or spelled out with Erf, becomes it only in
//                         float16/bfloat16 graphs, where the forms differ by at
//                         most 4.8e-4 (under half a float16 ulp at that size);
//                         float32 graphs keep exact GELU as separate nodes.
//
// Both passes need fully known shapes (run after shape inference and
// BatchNormalization folding). A node joins a fusion only when every
// intermediate value has a single consumer and is not a graph output. The
// fused node takes the first node's name and the last node's output value;
// the graph stays topologically sorted. Each returns the number of fused
// nodes created.
#pragma once

#include "ir/graph.h"

namespace kiln::builder {

// Conv [+ Add of a constant per-channel bias ([C,1,1], [1,C,1,1], ...: folds
// into B)] [+ Add of a non-constant residual of the output's shape]
// [+ activation] -> KilnConv, where activation is Relu, Clip (constant
// bounds), Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish or the SiLU
// pattern Mul(x, Sigmoid(x)). A Conv with nothing to absorb stays a Conv.
int FuseConvEpilogues(ir::Graph& graph);

// MatMul(A, constant 2-D B) [+ Add of a constant bias [N] (or [1,..,1,N])]
// [+ Add of a non-constant residual of the output's shape]
// [+ Relu | GELU (see above)] -> KilnMatMul (a MatMul with nothing to absorb
// stays a MatMul); Gemm(transA=0, alpha=1, beta=1 or no C, C of shape [N] or
// [1,N]) + Relu | GELU -> KilnMatMul with Gemm's transB.
int FuseGemmEpilogues(ir::Graph& graph);

}  // namespace kiln::builder
