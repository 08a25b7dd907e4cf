// Kernels of the tensor (shape and data movement) family: the generic strided
// copy that Transpose/Slice/Expand/Tile/DepthToSpace reduce to, a tiled
// batched transpose (with an optional float32 <-> float16/bfloat16 cast) for
// NCHW <-> NHWC and last-two-dims swaps, concat/split, the gather/scatter
// family, Pad, Resize, TopK, CumSum and small generators (fills, Range,
// EyeLike, OneHot, Trilu).
//
// Host launchers take device pointers and everything else by value (no device
// metadata buffers), never allocate or synchronize, return at once for empty
// work, and check every launch. C++17-clean: included from tensor.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/tensor.h"

namespace kiln::gpu::tensor_kernels {

constexpr int kMaxRank = 8;

// ---- Strided copy ----
// out[off_out + sum(i_k * out_strides_k)] = in[in_offset + sum(i_k * in_strides_k)]
// for every index i over dims. Strides are in elements and may be 0 or
// negative; out_contiguous means out_strides are the row-major strides of
// dims and out_offset is 0 (the common case, faster).
struct StridedCopyParams {
  int rank = 0;
  bool out_contiguous = true;
  int64_t dims[kMaxRank] = {};
  int64_t in_strides[kMaxRank] = {};
  int64_t out_strides[kMaxRank] = {};
  int64_t in_offset = 0;
  int64_t out_offset = 0;
};

// Builds params from any-rank dims/strides: drops size-1 dims and merges
// dims that are contiguous on both sides. out_strides == nullptr means a
// contiguous output. Returns false when more than kMaxRank dims remain.
bool PlanStridedCopy(const std::vector<int64_t>& dims, const std::vector<int64_t>& in_strides,
                     int64_t in_offset, const std::vector<int64_t>* out_strides,
                     int64_t out_offset, StridedCopyParams* params);

int64_t NumElements(const StridedCopyParams& p);

// Elements are moved as raw bytes of elem_size (1, 2, 4 or 8).
void LaunchStridedCopy(const void* in, void* out, size_t elem_size, const StridedCopyParams& p,
                       cudaStream_t stream);

// ---- Batched transpose with cast ----
// in [B, R, C] -> out [B, C, R]. Same dtypes: any element size; different
// dtypes: each of float32/float16/bfloat16 to another of them.
bool TransposeCastSupported(DType in_dtype, DType out_dtype);
void LaunchTransposeBRC(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t B,
                        int64_t R, int64_t C, cudaStream_t stream);

// ---- Fills and small constants ----
// Every one of n elements (elem_size bytes) gets the low elem_size bytes of
// `pattern` (little-endian bit pattern of one element).
void LaunchFill(void* out, int64_t n, size_t elem_size, uint64_t pattern, cudaStream_t stream);

constexpr int kBlobBytes = 512;
struct Blob {
  int64_t nbytes = 0;
  unsigned char bytes[kBlobBytes] = {};
};
// Writes blob.nbytes bytes to out.
void LaunchWriteBlob(void* out, const Blob& blob, cudaStream_t stream);

// out[i*cols + j] = (j - i == k) ? one : zero-bits, for a rows x cols matrix.
void LaunchEyeLike(void* out, size_t elem_size, int64_t rows, int64_t cols, int64_t k,
                   uint64_t one_pattern, cudaStream_t stream);

// out[i] = start + i * delta in dtype (start/delta: one device element each).
bool RangeSupported(DType dtype);
void LaunchRange(const void* start, const void* delta, void* out, DType dtype, int64_t n,
                 cudaStream_t stream);

// ---- Concat / Split ----
constexpr int kMaxParts = 64;
// A big tensor viewed as [outer, wide_row] whose rows are the parts' rows
// [outer, row[i]] side by side at column offset[i]. All sizes in units.
struct PartsParams {
  int count = 0;
  int64_t outer = 0;
  int64_t wide_row = 0;
  int64_t row[kMaxParts] = {};
  int64_t offset[kMaxParts] = {};
  void* ptr[kMaxParts] = {};  // Parts (inputs of concat, outputs of split); may be null for split.
};
// unit: bytes moved at once (1, 2, 4, 8 or 16); every size and pointer must
// be a multiple of it.
void LaunchConcat(const PartsParams& p, void* out, size_t unit, cudaStream_t stream);
void LaunchSplit(const PartsParams& p, const void* in, size_t unit, cudaStream_t stream);

// ---- Gather family ----
// data [outer, axis_len, block] (block in units), indices n_idx entries
// (int32 or int64, negative counts from the end) -> out [outer, n_idx, block].
// Out-of-range indices yield zeros.
void LaunchGather(const void* data, const void* indices, bool indices_int64, void* out,
                  int64_t outer, int64_t axis_len, int64_t n_idx, int64_t block, size_t unit,
                  cudaStream_t stream);

// GatherElements/ScatterElements: for every element of indices (dims
// idx_dims), the data position replaces the coordinate on `axis` by the index.
struct ElementIndexParams {
  int rank = 0;
  int axis = 0;
  int64_t axis_len = 0;
  int64_t idx_dims[kMaxRank] = {};
  int64_t data_strides[kMaxRank] = {};
};
void LaunchGatherElements(const void* data, const void* indices, bool indices_int64, void* out,
                          size_t elem_size, const ElementIndexParams& p, cudaStream_t stream);

// GatherND: out [batches * per_batch, slice] from data with indices
// [batches * per_batch, m]; coordinate k indexes dims[k] with strides[k]
// (elements), batch b starts at b * batch_stride.
struct GatherNDParams {
  int m = 0;
  int64_t batches = 0;
  int64_t per_batch = 0;
  int64_t slice = 0;
  int64_t batch_stride = 0;
  int64_t dims[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};
};
void LaunchGatherND(const void* data, const void* indices, bool indices_int64, void* out,
                    size_t elem_size, const GatherNDParams& p, cudaStream_t stream);

enum class ScatterReduction : int32_t { kNone = 0, kAdd, kMul, kMax, kMin };
// dtypes for reductions other than kNone.
bool ScatterReductionSupported(DType dtype);
// out already holds data; applies updates (one per index element).
void LaunchScatterElements(const void* updates, const void* indices, bool indices_int64,
                           void* out, DType dtype, ScatterReduction reduction,
                           const ElementIndexParams& p, cudaStream_t stream);
// ScatterND with indices [count, m] into out; each update slice has `slice`
// elements; GatherNDParams with batches = 1, per_batch = count.
void LaunchScatterND(const void* updates, const void* indices, bool indices_int64, void* out,
                     DType dtype, ScatterReduction reduction, const GatherNDParams& p,
                     cudaStream_t stream);

// ---- Pad ----
enum class PadKind : int32_t { kConstant = 0, kReflect, kEdge, kWrap };
struct PadParams {
  int rank = 0;
  PadKind mode = PadKind::kConstant;
  int64_t in_dims[kMaxRank] = {};
  int64_t out_dims[kMaxRank] = {};
  int64_t begins[kMaxRank] = {};
  int64_t in_strides[kMaxRank] = {};
  uint64_t fill_pattern = 0;  // Used when fill is null.
};
// fill: device pointer to one element (Pad's constant_value input) or null.
void LaunchPad(const void* in, void* out, const void* fill, size_t elem_size, const PadParams& p,
               cudaStream_t stream);

// ---- Resize ----
enum class ResizeCoord : int32_t {
  kHalfPixel = 0,
  kHalfPixelSymmetric,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
  kTfCropAndResize,
};
enum class ResizeNearest : int32_t { kRoundPreferFloor = 0, kRoundPreferCeil, kFloor, kCeil, kSimple };
enum class ResizeInterp : int32_t { kNearest = 0, kLinear, kCubic };
struct ResizeAxis {
  int64_t in_len = 1;
  int64_t out_len = 1;
  int identity = 0;  // The axis maps x -> x exactly (the CPU skips it too).
  double scale = 1.0;
  double resized = 1.0;      // in_len * scale
  double sym_offset = 0.0;   // half_pixel_symmetric offset
  double roi_start = 0.0;    // tf_crop_and_resize
  double roi_end = 1.0;
};
struct ResizeParams {
  int rank = 0;
  ResizeInterp interp = ResizeInterp::kNearest;
  ResizeCoord coord = ResizeCoord::kHalfPixel;
  ResizeNearest nearest = ResizeNearest::kRoundPreferFloor;
  double cubic_a = -0.75;
  int exclude_outside = 0;
  float extrapolation = 0.f;
  uint64_t extrapolation_pattern = 0;  // Nearest: extrapolation value in the dtype's bits.
  int64_t in_strides[kMaxRank] = {};
  ResizeAxis axes[kMaxRank];
};
constexpr int kMaxInterpolatedAxes = 4;
// Nearest: any element size. Linear/cubic: float32, float16, bfloat16, with
// at most kMaxInterpolatedAxes non-identity axes.
void LaunchResize(const void* in, void* out, DType dtype, int64_t out_numel,
                  const ResizeParams& p, cudaStream_t stream);

// ---- TopK ----
bool TopKSupported(DType dtype);
// in [outer, len, inner] -> values [outer, k, inner] (same dtype) and
// indices (int64). Sorted; ties keep the lower index first; NaN ranks above
// every number.
void LaunchTopK(const void* in, DType dtype, void* values, void* indices, int64_t outer,
                int64_t len, int64_t inner, int64_t k, bool largest, cudaStream_t stream);

// ---- CumSum ----
bool CumSumSupported(DType dtype);
void LaunchCumSum(const void* in, void* out, DType dtype, int64_t outer, int64_t len,
                  int64_t inner, bool exclusive, bool reverse, cudaStream_t stream);

// ---- Trilu ----
// in/out [matrices, rows, cols]; k from k_dev (one int64 on the device) when
// non-null, else k.
void LaunchTrilu(const void* in, void* out, size_t elem_size, int64_t matrices, int64_t rows,
                 int64_t cols, int64_t k, const void* k_dev, bool upper, cudaStream_t stream);

// ---- OneHot ----
bool OneHotIndexSupported(DType dtype);
// out [outer, depth, inner] = values[1] where index(o, i) == d else values[0];
// indices [outer, inner] in indices_dtype; values: 2 device elements of
// elem_size.
void LaunchOneHot(const void* indices, DType indices_dtype, const void* values, void* out,
                  size_t elem_size, int64_t outer, int64_t depth, int64_t inner,
                  cudaStream_t stream);

}  // namespace kiln::gpu::tensor_kernels
