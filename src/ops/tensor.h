// Argument resolution shared by the tensor family's inference (ops/tensor.cc)
// and its CPU kernels (cpu/tensor.cc): both must agree exactly on how Slice,
// Pad, Resize, ... read their attributes and inputs across opsets, so the
// logic lives once, here. Every function throws kiln::Error on bad arguments.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops/registry.h"

namespace kiln::tensor_ops {

// Transpose's perm (default: reversed dims), checked to be a permutation.
std::vector<int> ResolvePerm(const ir::Node& node, int rank);

// Shape's [start, end) range over the input dims (start/end attributes, opset 15).
std::pair<int, int> ShapeRange(const ir::Node& node, int rank);

// ---- Slice ----
// One dimension of a slice after clamping: `count` elements from `start`, `step` apart.
struct SliceRange {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};
SliceRange ResolveSliceRange(int64_t dim, int64_t start, int64_t end, int64_t step);

// Starts/ends/axes/steps from attributes (opset < 10) or inputs 1..4 (values
// passed here; nullptr for absent inputs). Axes come back normalised to
// [0, rank) and unique; steps default to 1 and are never 0.
struct SliceArgs {
  std::vector<int64_t> starts, ends, axes, steps;
};
SliceArgs GetSliceArgs(const ir::Node& node, int rank, const Tensor* starts, const Tensor* ends,
                       const Tensor* axes, const Tensor* steps);

// ---- Concat ----
// The concat axis as written (not normalized): opset < 4 defaults it to 1.
int64_t ConcatAxis(const ir::Node& node);

// ---- Dropout ----
// Dropout-1/6 default to training mode (is_test=0); kiln runs inference only,
// so it accepts such a node only when nothing would be dropped (ratio 0).
void CheckLegacyDropoutIsTest(const ir::Node& node);

// ---- Split ----
// Sizes of the outputs along the split axis of length `dim`, from the split
// attribute (opsets 1-12), the split input (value, or nullptr; opset 1 and
// 13+), num_outputs (opset 18) or equal parts.
std::vector<int64_t> SplitSizes(const ir::Node& node, int64_t dim, const Tensor* split,
                                int num_outputs);

// ---- Pad ----
enum class PadMode { kConstant, kReflect, kEdge, kWrap };
struct PadArgs {
  PadMode mode = PadMode::kConstant;
  std::vector<int64_t> pads;  // 2 * rank: all begins, then all ends (may be negative).
};
// From attributes (opset < 11) or the pads/axes inputs (values; axes may be nullptr).
PadArgs GetPadArgs(const ir::Node& node, int rank, const Tensor* pads, const Tensor* axes);

// ---- Resize / Upsample ----
enum class ResizeMode { kNearest, kLinear, kCubic };
struct ResizePlan {
  ResizeMode mode = ResizeMode::kNearest;
  std::string coordinate_mode;  // half_pixel, align_corners, asymmetric, ...
  std::string nearest_mode;     // round_prefer_floor, ..., or "simple" (opset < 11)
  float cubic_a = -0.75f;
  bool exclude_outside = false;
  float extrapolation_value = 0.f;
  std::vector<int64_t> out_dims;  // -1 where not computable (unknown input dim)
  std::vector<double> scales;     // Per dim, as used by the coordinate transform.
  std::vector<double> roi;        // 2 * rank (starts, then ends); tf_crop_and_resize only.
};
// The node's input values that drive Resize/Upsample, by role. `in_dims` may
// hold -1 for dims unknown at import time.
struct ResizeInputs {
  const Tensor* roi = nullptr;
  const Tensor* scales = nullptr;
  const Tensor* sizes = nullptr;
};
// Which input index holds roi/scales/sizes for this node (-1 if none).
void ResizeInputIndices(const ir::Node& node, int* roi, int* scales, int* sizes);
ResizePlan PlanResize(const ir::Node& node, const std::vector<int64_t>& in_dims,
                      const ResizeInputs& inputs);
// The input coordinate output position `x` maps to along `axis`.
double ResizeSourceCoordinate(const ResizePlan& plan, int axis, int rank, int64_t x, int64_t in_len,
                              int64_t out_len);
// True when tf_crop_and_resize puts `coord` outside the input (extrapolation).
bool ResizeOutsideCrop(const ResizePlan& plan, double coord, int64_t in_len);
// The input index nearest-mode picks for `coord`, clamped to [0, in_len).
int64_t ResizeNearestIndex(const ResizePlan& plan, double coord, double scale, int64_t in_len);
// Keys' cubic convolution weight at distance x with coefficient a.
double ResizeCubicWeight(double x, double a);
// Interpolation taps of one output position along one axis.
struct ResizeTaps {
  int count = 0;
  int64_t index[4] = {0, 0, 0, 0};
  double weight[4] = {0, 0, 0, 0};
  bool outside = false;  // tf_crop_and_resize out of range: extrapolation value.
};
// Linear or cubic taps of every output position along one axis.
std::vector<ResizeTaps> ResizeAxisTaps(const ResizePlan& plan, int axis, int rank, int64_t in_len,
                                       int64_t out_len);

// ---- Constant ----
// The tensor a Constant node produces, from whichever value attribute it has.
Tensor ConstantValue(const ir::Node& node);

}  // namespace kiln::tensor_ops
