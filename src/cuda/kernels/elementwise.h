// Launchers for kiln's elementwise GPU kernels (src/cuda/kernels/elementwise.cu).
//
// Every elementwise layer runs one of two kernels:
//   * the N-ary kernel: one operation (unary, binary, variadic, ternary) over
//     up to kEwMaxInputs broadcast inputs, computed in a "compute type"
//     (float32 for float32/float16/bfloat16, float64, int64 for every other
//     integer and bool, uint64 for uint64), each input converted from its own
//     dtype and the result converted to the output dtype (casts included);
//   * the fused kernel: a small register program (KilnElementwise, see
//     src/builder/fuse_elementwise.h) evaluated in float32 per element by
//     an interpreter; elementwise_codegen.h instead compiles each program
//     (flat indexing) into a straight-line kernel with NVRTC.
//
// The per-op math is in elementwise_ops.cuh (shared with the generated
// kernels), the op codes in elementwise_op_codes.h.
//
// Both walk the output in its physical (memory) order. Broadcasting is
// described by EwIndexing: the output's physical dims and, per input, the
// element stride along each of them (0 where the input is broadcast). The
// layer computes those strides (layouts included) and MakeEwIndexing merges
// dims and picks the fast paths. Everything is passed to kernels by value.
//
// C++17-clean: included by nvcc and by host C++20 code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda/kernels/elementwise_op_codes.h"
#include "kiln/tensor.h"

namespace kiln::gpu::ew {

constexpr int kMaxRank = 8;
constexpr int kMaxInputs = 8;

// The type the N-ary kernel computes in.
enum class Compute : int32_t { kFloat32 = 0, kFloat64 = 1, kInt64 = 2, kUInt64 = 3 };

// Integer division/remainder by zero cannot raise on the GPU: the result is 0.

// How the output (physical order) maps to each input.
struct Indexing {
  int rank = 1;        // Merged rank, 1..kMaxRank.
  int num_inputs = 0;  // 0..kMaxInputs
  int64_t numel = 0;   // Output elements.
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxInputs][kMaxRank] = {};  // In elements; 0 = broadcast.
  // Fast path: every input is either laid out exactly like the output
  // (offset == output index) or a single broadcast element.
  bool flat = false;
  uint8_t scalar[kMaxInputs] = {};  // flat: input k is one broadcast element.
  // 32-bit index math is safe (numel and every input offset < 2^31);
  // div_magic/div_shift then divide by dims[d] with a multiply-high.
  bool index32 = false;
  uint32_t div_magic[kMaxRank] = {};
  uint32_t div_shift[kMaxRank] = {};
};

// Builds the indexing of an output with physical dims `out_dims` (rank <= 8)
// and inputs whose element strides along those dims are `in_strides[k]` (0
// for broadcast dims; same length as out_dims). Drops size-1 dims and merges
// adjacent dims every input walks the same way.
Indexing MakeIndexing(const std::vector<int64_t>& out_dims,
                      const std::vector<std::vector<int64_t>>& in_strides);

struct NaryParams {
  Op op = Op::kIdentity;
  Compute compute = Compute::kFloat32;
  DType in_dtypes[kMaxInputs] = {};
  DType out_dtype = DType::kUndefined;
  double p0 = 0, p1 = 0;
  int mean_count = 0;  // > 0: multiply the folded result by 1/mean_count (Mean).
  // Pow with integer base and exponent of different widths: the exponent is
  // first wrapped to this dtype (the base's), as the CPU backend casts it.
  DType wrap_input1 = DType::kUndefined;
};

struct Pointers {
  const void* in[kMaxInputs] = {};
};

// out = op(inputs...) over `indexing`. Inputs are read in params.in_dtypes,
// the output written in params.out_dtype (conversions as ONNX Cast does).
void LaunchNary(const NaryParams& params, const Indexing& indexing, const Pointers& inputs,
                void* out, cudaStream_t stream);

// BatchNormalization helper: factor[c] = scale[c] / sqrt(var[c] + eps) (in
// double, rounded to the compute type) and shift[c] = bias[c] - mean[c] *
// factor[c], for `count` parameters of dtype `dtype`, written as float32
// (compute float32) or float64 (compute float64) into factor/shift.
void LaunchBatchNormPrepare(DType dtype, Compute compute, int64_t count, double epsilon,
                            const void* scale, const void* bias, const void* mean,
                            const void* var, void* factor, void* shift, cudaStream_t stream);

// ---- The fused program ----

constexpr int kMaxInstructions = 64;
constexpr int kMaxRegisters = 16;
constexpr int kMaxImmediates = 32;

// Operand encoding: 0..kMaxRegisters-1 is a register; -1-i is immediate i.
struct Program {
  int num_instructions = 0;
  int output = 0;  // Register holding the result.
  int32_t op[kMaxInstructions] = {};
  int8_t dst[kMaxInstructions] = {};
  int8_t a[kMaxInstructions] = {};
  int8_t b[kMaxInstructions] = {};
  int8_t c[kMaxInstructions] = {};
  float p0[kMaxInstructions] = {};
  float p1[kMaxInstructions] = {};
  float imm[kMaxImmediates] = {};
};

// Whether op may appear in a fused program (float ops with float results).
bool IsFusibleOp(Op op);

// Registers 0..num_inputs-1 start as the inputs (converted to float32); the
// program runs; the output register is written in `dtype`. Every input and
// the output have dtype `dtype` (float32, float16 or bfloat16).
void LaunchFused(DType dtype, const Program& program, const Indexing& indexing,
                 const Pointers& inputs, void* out, cudaStream_t stream);

}  // namespace kiln::gpu::ew
