// FuseElementwise: replaces groups of fusible elementwise nodes with one
// KilnElementwise node that the GPU evaluates in a single kernel
// (src/cuda/layers/elementwise.cc, kernel in src/cuda/kernels/elementwise.cu).
//
// Which nodes fuse
//   Float ops whose output is float32, float16 or bfloat16 with a fully known
//   shape, whose inputs have the output's dtype (a Pow exponent may be a
//   scalar constant of any numeric dtype): Relu, LeakyRelu, PRelu, Clip,
//   Sigmoid, HardSigmoid, HardSwish, Tanh, Elu, Selu, Celu, Gelu, Erf, Exp,
//   Log, Sqrt, Reciprocal, Neg, Abs, Sin, Cos, Floor, Ceil, Round, Sign,
//   Softplus, Softsign, Mish, ThresholdedRelu, Add, Sub, Mul, Div, Pow,
//   Mod (fmod=1), Max, Min, Sum, Mean, and float32 BatchNormalization with
//   constant per-channel parameters. Opset < 7 legacy-broadcast forms are
//   left alone.
//   A producer joins its consumers' group when every consumer of its output
//   is in that one group, the output is not a graph output, and its shape and
//   dtype equal the consumer's output. So a group is a DAG with one output
//   value (the sink's) whose every intermediate value lives only inside it,
//   and every node of a group has the group's output shape. Groups of one
//   node are left as they are.
//   External operands: scalar constants (one element) become immediates;
//   everything else (graph inputs, other nodes' outputs, per-channel
//   constants such as a [C,1,1] bias) becomes a node input. A group needs at
//   most 8 distinct inputs, 64 instructions, 32 immediates and 16 registers.
//
// The KilnElementwise node
//   inputs      1..8 tensors of the output's dtype, numpy-broadcast to the
//               output's shape (rank <= 8).
//   output      one tensor (float32, float16 or bfloat16).
//   Registers r0..r15 hold float32. r0..r{n-1} start as the n inputs
//   (element values converted to float32); the program runs per output
//   element; the result is register `output`, rounded to the output dtype.
//   attributes:
//     program    ints, 5 per instruction: [op, dst, a, b, c]. op is a
//                gpu::ew::Op code (src/cuda/kernels/elementwise.h: unary
//                0..33, binary 40..62, ternary 70..74; only codes for which
//                ew::IsFusibleOp holds). dst is a register 0..15. Operands
//                a/b/c (b, c unused by unary ops, c by binary ops; write 0):
//                v >= 0 is register v, v < 0 is immediates[-1 - v]. An
//                instruction reads all operands before writing dst.
//     params     floats, 2 per instruction (p0, p1: attribute parameters
//                such as LeakyRelu's alpha, HardSigmoid's alpha/beta, Selu's
//                alpha/gamma, ClipConst's min/max). Optional (zeros).
//     immediates floats: constant operands (at most 32).
//     output     int: the register holding the result.
//   Each instruction rounds to float32 exactly as the unfused float32 op
//   does (no FMA contraction), so a float32 group computes what the nodes
//   compute one by one; float16/bfloat16 groups skip the intermediate
//   roundings to 16 bits (more accurate than the unfused graph).
//   There is no CPU kernel and no registry OpDef for KilnElementwise: run the
//   pass after shape inference, on the graph the GPU builder lowers.
#pragma once

#include "ir/graph.h"

namespace kiln::builder {

// Requires every value's type to be concrete. Returns the number of nodes
// removed (nodes fused minus KilnElementwise nodes created).
int FuseElementwise(ir::Graph& graph);

}  // namespace kiln::builder
