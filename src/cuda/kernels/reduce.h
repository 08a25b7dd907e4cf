// Launchers for reductions, ArgMax/ArgMin, the softmax family,
// LpNormalization and the normalizations (LayerNormalization,
// GroupNormalization / InstanceNormalization, MeanVarianceNormalization).
//
// All functions take device pointers and launch on `stream` without
// allocating or synchronizing. Float types (float32, float16, bfloat16)
// compute and accumulate in float32; integer types compute in int64.
// Metadata is passed by value (fixed-size arrays).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/tensor.h"

namespace kiln::gpu::kernels {

constexpr int kMaxIndexDims = 8;

// Maps a linear index over `sizes` (row-major, outermost first) to an element
// offset: sum_d index_d * strides[d]. rank 0 maps every index to 0.
struct IndexMap {
  int rank = 0;
  int64_t sizes[kMaxIndexDims] = {};
  int64_t strides[kMaxIndexDims] = {};
};

// A reduction of an input viewed as kept x reduced index spaces. Output
// element o (row-major over the kept dims, i.e. output memory order) folds
// input elements at kept(o) + reduced(r) for r in [0, count).
struct ReducePlan {
  int64_t outputs = 0;  // Product of kept sizes.
  int64_t count = 0;    // Product of reduced sizes.
  IndexMap kept;
  IndexMap reduced;
  // True when the innermost memory dim is reduced (one reduced row per
  // output); false when the innermost dim is kept (coalesced across outputs).
  bool inner_reduced = false;
};

enum class ReduceOp : int {
  kSum, kMean, kProd, kMax, kMin, kL1, kL2, kSumSquare, kLogSum, kLogSumExp
};

// Whether LaunchReduce handles `dtype` for `op`.
bool ReduceSupportsDType(ReduceOp op, DType dtype);
void LaunchReduce(ReduceOp op, DType dtype, const void* x, void* y, const ReducePlan& plan,
                  cudaStream_t stream);

// [outer, n, inner] view around one axis (inner contiguous).
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};

// ArgMax/ArgMin into int64 indices (output [outer, inner]). dtypes: float32,
// float16, bfloat16, int8, uint8, int32, int64.
bool ArgReduceSupportsDType(DType dtype);
void LaunchArgReduce(bool is_max, bool select_last, DType dtype, const void* x, int64_t* y,
                     AxisView view, cudaStream_t stream);

// Ops normalizing along one axis; output has the input's shape.
enum class AxisOp : int { kSoftmax, kLogSoftmax, kHardmax, kLpNorm1, kLpNorm2 };
// dtypes: float32, float16, bfloat16.
bool FloatKernelSupportsDType(DType dtype);
void LaunchAxisOp(AxisOp op, DType dtype, const void* x, void* y, AxisView view,
                  cudaStream_t stream);

// LayerNormalization over rows of n contiguous elements. scale/bias hold n
// values in row order when the maps have rank 0; otherwise element k of a row
// reads scale[map(k)] (broadcast parameters, stride 0 on broadcast dims).
// bias may be nullptr; mean/inv_std (float32, one per row) may be nullptr.
// y has out_dtype: x's dtype, or float32 (a fused output cast). params_first:
// the one-warp-per-row kernel loads scale and bias with the row, before its
// reductions (a tactic of the LayerNorm layer).
void LaunchLayerNorm(DType dtype, DType out_dtype, const void* x, const void* scale,
                     const void* bias, void* y, float* mean, float* inv_std, int64_t rows,
                     int64_t n, float epsilon, const IndexMap& scale_map,
                     const IndexMap& bias_map, cudaStream_t stream, bool params_first = false);

// KilnSumLayerNorm (src/builder/fuse_layernorm.h): LayerNorm of rows that are
// sums of terms. Output row r adds, for each term k, its row r % periods[k]
// (rows of n contiguous elements), except term 0 when indices is set: then
// row indices[r] of that [table_rows, n] table (negative indices count from
// the end; out-of-range ones add zeros).
constexpr int kMaxSumTerms = 4;
struct SumTerms {
  const void* terms[kMaxSumTerms] = {};
  int64_t periods[kMaxSumTerms] = {};
  int count = 0;
  const void* indices = nullptr;  // int32 or int64, one per output row.
  bool indices_int64 = false;
  int64_t table_rows = 0;
};
// scale/bias (bias may be nullptr) hold n values; y has the terms' dtype.
void LaunchSumLayerNorm(DType dtype, const SumTerms& terms, const void* scale, const void* bias,
                        void* y, int64_t rows, int64_t n, float epsilon, cudaStream_t stream);

// GroupNormalization / InstanceNormalization: x is [batch, groups *
// channels_per_group, spatial]; statistics per (batch, group); parameter
// index is group (per_channel false) or the channel (per_channel true).
void LaunchGroupNorm(DType dtype, const void* x, const void* scale, const void* bias, void* y,
                     int64_t batch, int64_t groups, int64_t channels_per_group, int64_t spatial,
                     bool per_channel, float epsilon, cudaStream_t stream);

// MeanVarianceNormalization: statistics over the plan's reduced index space
// for each kept index; y = (x - mean) / (std + 1e-9).
void LaunchMeanVarianceNorm(DType dtype, const void* x, void* y, const ReducePlan& plan,
                            cudaStream_t stream);

}  // namespace kiln::gpu::kernels
