// Tensor (shape and data movement) operators: definitions and inference.
//
// Exporters compute shapes with Shape/Gather/Concat/Slice/Unsqueeze/Reshape
// chains, so inference here tries hard: exact dims whenever the driving
// values are known, symbolic dims passed through where they survive
// unchanged (Transpose, Flatten of a lone batch dim, Reshape's 0 and -1),
// and at least the output rank when only a shape input's length is known.
#include "ops/tensor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

namespace kiln {
namespace tensor_ops {

std::vector<int> ResolvePerm(const ir::Node& node, int rank) {
  std::vector<int64_t> perm = node.attrs.GetInts("perm", {});
  std::vector<int> out(static_cast<size_t>(rank));
  if (perm.empty()) {
    for (int i = 0; i < rank; ++i) out[static_cast<size_t>(i)] = rank - 1 - i;
    return out;
  }
  KILN_CHECK(static_cast<int>(perm.size()) == rank, "perm has ", perm.size(),
             " entries but the input has rank ", rank);
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (size_t i = 0; i < perm.size(); ++i) {
    KILN_CHECK(perm[i] >= 0 && perm[i] < rank && !seen[static_cast<size_t>(perm[i])], "perm ",
               DimsToString(perm), " is not a permutation of 0..", rank - 1);
    seen[static_cast<size_t>(perm[i])] = true;
    out[i] = static_cast<int>(perm[i]);
  }
  return out;
}

std::pair<int, int> ShapeRange(const ir::Node& node, int rank) {
  if (node.opset < 15) return {0, rank};
  int64_t start = node.attrs.GetInt("start", 0);
  int64_t end = node.attrs.GetInt("end", rank);
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  return {static_cast<int>(start), static_cast<int>(std::max(start, end))};
}

SliceRange ResolveSliceRange(int64_t dim, int64_t start, int64_t end, int64_t step) {
  SliceRange r;
  step = std::max(step, -std::numeric_limits<int64_t>::max());  // So -step cannot overflow.
  r.step = step;
  if (dim <= 0) return r;
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    r.count = end > start ? (end - start - 1) / step + 1 : 0;
  } else {
    start = std::clamp<int64_t>(start, 0, dim - 1);
    end = std::clamp<int64_t>(end, -1, dim - 1);
    r.count = start > end ? (start - end - 1) / -step + 1 : 0;
  }
  r.start = start;
  return r;
}

SliceArgs GetSliceArgs(const ir::Node& node, int rank, const Tensor* starts, const Tensor* ends,
                       const Tensor* axes, const Tensor* steps) {
  SliceArgs a;
  if (node.opset < 10) {
    a.starts = node.attrs.GetInts("starts");
    a.ends = node.attrs.GetInts("ends");
    a.axes = node.attrs.GetInts("axes", {});
  } else {
    KILN_CHECK(starts && ends, "starts and ends inputs are required");
    a.starts = starts->ToInt64Vector();
    a.ends = ends->ToInt64Vector();
    if (axes) a.axes = axes->ToInt64Vector();
    if (steps) a.steps = steps->ToInt64Vector();
  }
  size_t n = a.starts.size();
  KILN_CHECK(a.ends.size() == n, "starts has ", n, " entries but ends has ", a.ends.size());
  if (a.axes.empty()) {
    KILN_CHECK(static_cast<int>(n) <= rank, "starts has ", n, " entries for an input of rank ",
               rank);
    for (size_t i = 0; i < n; ++i) a.axes.push_back(static_cast<int64_t>(i));
  }
  if (a.steps.empty()) a.steps.assign(n, 1);
  KILN_CHECK(a.axes.size() == n && a.steps.size() == n, "starts, ends, axes and steps must have ",
             "the same length (", n, ", ", a.ends.size(), ", ", a.axes.size(), ", ", a.steps.size(),
             ")");
  KILN_CHECK(n == 0 || rank > 0, "cannot slice a scalar");
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (size_t i = 0; i < n; ++i) {
    a.axes[i] = NormalizeAxis(a.axes[i], rank, node);
    KILN_CHECK(!seen[static_cast<size_t>(a.axes[i])], "axis ", a.axes[i], " is repeated");
    seen[static_cast<size_t>(a.axes[i])] = true;
    KILN_CHECK(a.steps[i] != 0, "slice step must not be 0");
  }
  return a;
}

void CheckLegacyDropoutIsTest(const ir::Node& node) {
  if (node.opset >= 7 || node.attrs.GetInt("is_test", 0) != 0) return;
  KILN_CHECK(node.attrs.GetFloat("ratio", 0.5f) == 0.f,
             "is_test=0 (training mode, the default before opset 7) drops at random; kiln runs "
             "inference only and needs is_test=1");
}

int64_t ConcatAxis(const ir::Node& node) {
  // Concat-1 defaulted axis to 1; from opset 4 it is required.
  if (node.opset < 4) return node.attrs.GetInt("axis", 1);
  KILN_CHECK(node.attrs.has("axis"), "Concat needs the axis attribute");
  return node.attrs.GetInt("axis");
}

std::vector<int64_t> SplitSizes(const ir::Node& node, int64_t dim, const Tensor* split,
                                int num_outputs) {
  KILN_CHECK(num_outputs >= 1, "Split needs at least one output");
  std::vector<int64_t> sizes;
  bool explicit_sizes = false;
  if (node.opset < 13 && node.attrs.has("split")) {
    sizes = node.attrs.GetInts("split");
    explicit_sizes = true;
  } else if ((node.opset >= 13 || node.opset < 2) && split) {
    // Split-1 also accepted the sizes as an optional second input.
    sizes = split->ToInt64Vector();
    explicit_sizes = true;
  }
  if (explicit_sizes) {
    KILN_CHECK(static_cast<int>(sizes.size()) == num_outputs, "split has ", sizes.size(),
               " entries but the node has ", num_outputs, " outputs");
    int64_t total = 0;
    for (int64_t s : sizes) {
      KILN_CHECK(s >= 0, "split sizes must be non-negative, got ", DimsToString(sizes));
      total += s;
    }
    KILN_CHECK(total == dim, "split sizes ", DimsToString(sizes), " sum to ", total,
               " but the axis has ", dim, " elements");
    return sizes;
  }
  if (node.opset >= 18 && node.attrs.has("num_outputs")) {
    int64_t n = node.attrs.GetInt("num_outputs");
    KILN_CHECK(n == num_outputs, "num_outputs is ", n, " but the node has ", num_outputs,
               " outputs");
    // Uneven splits make every chunk ceil(dim / n) except a smaller last one.
    int64_t chunk = (dim + n - 1) / n;
    int64_t left = dim;
    for (int64_t i = 0; i < n; ++i) {
      sizes.push_back(std::min(chunk, left));
      left -= sizes.back();
    }
    return sizes;
  }
  KILN_CHECK(dim % num_outputs == 0, "cannot split an axis of ", dim, " elements into ",
             num_outputs, " equal parts");
  sizes.assign(static_cast<size_t>(num_outputs), dim / num_outputs);
  return sizes;
}

PadArgs GetPadArgs(const ir::Node& node, int rank, const Tensor* pads, const Tensor* axes) {
  PadArgs a;
  std::string mode = node.attrs.GetString("mode", "constant");
  if (mode == "constant") {
    a.mode = PadMode::kConstant;
  } else if (mode == "reflect") {
    a.mode = PadMode::kReflect;
  } else if (mode == "edge") {
    a.mode = PadMode::kEdge;
  } else if (mode == "wrap") {
    a.mode = PadMode::kWrap;
  } else {
    Fail("unknown pad mode '", mode, "'");
  }
  std::vector<int64_t> given;
  if (node.opset < 11) {
    // Pad-1 called the attribute `paddings`; Pad-2 renamed it `pads` (same layout).
    const char* name = node.opset < 2 && !node.attrs.has("pads") ? "paddings" : "pads";
    KILN_CHECK(node.attrs.has(name), "Pad before opset 11 needs the ", name, " attribute");
    given = node.attrs.GetInts(name);
  } else {
    KILN_CHECK(pads, "the pads input is required");
    given = pads->ToInt64Vector();
  }
  if (axes) {
    std::vector<int64_t> ax = axes->ToInt64Vector();
    KILN_CHECK(given.size() == 2 * ax.size(), "pads has ", given.size(), " entries for ", ax.size(),
               " axes");
    a.pads.assign(2 * static_cast<size_t>(rank), 0);
    for (size_t i = 0; i < ax.size(); ++i) {
      size_t axis = static_cast<size_t>(NormalizeAxis(ax[i], rank, node));
      a.pads[axis] = given[i];
      a.pads[axis + static_cast<size_t>(rank)] = given[i + ax.size()];
    }
  } else {
    KILN_CHECK(given.size() == 2 * static_cast<size_t>(rank), "pads has ", given.size(),
               " entries but the input has rank ", rank, " (needs ", 2 * rank, ")");
    a.pads = given;
  }
  return a;
}

void ResizeInputIndices(const ir::Node& node, int* roi, int* scales, int* sizes) {
  *roi = *scales = *sizes = -1;
  if (node.op_type == "Upsample") {
    if (node.opset >= 9) *scales = 1;
  } else if (node.opset < 11) {
    *scales = 1;
  } else {
    *roi = 1;
    *scales = 2;
    *sizes = 3;
  }
}

ResizePlan PlanResize(const ir::Node& node, const std::vector<int64_t>& in_dims,
                      const ResizeInputs& inputs) {
  const ir::Attributes& attrs = node.attrs;
  const int rank = static_cast<int>(in_dims.size());
  const bool legacy = node.op_type == "Upsample" || node.opset < 11;
  ResizePlan plan;
  std::string mode = attrs.GetString("mode", "nearest");
  if (mode == "nearest") {
    plan.mode = ResizeMode::kNearest;
  } else if (mode == "linear" || (legacy && mode == "bilinear")) {
    plan.mode = ResizeMode::kLinear;
  } else if (mode == "cubic" && !legacy) {
    plan.mode = ResizeMode::kCubic;
  } else {
    Fail("unsupported resize mode '", mode, "'");
  }
  if (legacy) {
    // Upsample and Resize-10 map output to input coordinates as x / scale and
    // pick the nearest pixel by truncation (onnxruntime's "simple" mode).
    plan.coordinate_mode = "asymmetric";
    plan.nearest_mode = "simple";
  } else {
    plan.coordinate_mode = attrs.GetString("coordinate_transformation_mode", "half_pixel");
    plan.nearest_mode = attrs.GetString("nearest_mode", "round_prefer_floor");
    plan.cubic_a = attrs.GetFloat("cubic_coeff_a", -0.75f);
    plan.exclude_outside = attrs.GetInt("exclude_outside", 0) != 0;
    plan.extrapolation_value = attrs.GetFloat("extrapolation_value", 0.f);
    static const std::set<std::string> kCoordinateModes = {
        "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
        "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
    KILN_CHECK(kCoordinateModes.count(plan.coordinate_mode),
               "unsupported coordinate_transformation_mode '", plan.coordinate_mode, "'");
    static const std::set<std::string> kNearestModes = {"round_prefer_floor", "round_prefer_ceil",
                                                        "floor", "ceil"};
    KILN_CHECK(plan.mode != ResizeMode::kNearest || kNearestModes.count(plan.nearest_mode),
               "unsupported nearest_mode '", plan.nearest_mode, "'");
  }

  // The axes that scales/sizes/roi describe (opset 18); the others keep their size.
  std::vector<int> axes;
  if (!legacy && node.opset >= 18 && attrs.has("axes")) {
    std::vector<bool> seen(static_cast<size_t>(rank), false);
    for (int64_t a : attrs.GetInts("axes")) {
      int axis = NormalizeAxis(a, rank, node);
      KILN_CHECK(!seen[static_cast<size_t>(axis)], "axis ", a, " is repeated");
      seen[static_cast<size_t>(axis)] = true;
      axes.push_back(axis);
    }
  } else {
    for (int i = 0; i < rank; ++i) axes.push_back(i);
  }
  const size_t n = axes.size();

  plan.scales.assign(static_cast<size_t>(rank), 1.0);
  plan.out_dims = in_dims;
  plan.roi.assign(2 * static_cast<size_t>(rank), 0.0);
  for (int i = 0; i < rank; ++i) plan.roi[static_cast<size_t>(rank + i)] = 1.0;
  if (inputs.roi && inputs.roi->numel() > 0 && plan.coordinate_mode == "tf_crop_and_resize") {
    KILN_CHECK(static_cast<size_t>(inputs.roi->numel()) == 2 * n, "roi has ", inputs.roi->numel(),
               " entries, expected ", 2 * n);
    for (size_t i = 0; i < n; ++i) {
      plan.roi[static_cast<size_t>(axes[i])] = inputs.roi->GetAsDouble(static_cast<int64_t>(i));
      plan.roi[static_cast<size_t>(rank + axes[i])] =
          inputs.roi->GetAsDouble(static_cast<int64_t>(n + i));
    }
  }

  std::vector<double> scales;
  if (node.op_type == "Upsample" && node.opset < 9) {
    for (float s : attrs.GetFloats("scales")) scales.push_back(s);
  } else if (inputs.scales && inputs.scales->numel() > 0) {
    for (int64_t i = 0; i < inputs.scales->numel(); ++i)
      scales.push_back(inputs.scales->GetAsDouble(i));
  }
  std::vector<int64_t> sizes;
  if (inputs.sizes && inputs.sizes->numel() > 0) sizes = inputs.sizes->ToInt64Vector();
  KILN_CHECK(scales.empty() != sizes.empty(), "exactly one of scales and sizes must be given");

  if (!scales.empty()) {
    KILN_CHECK(scales.size() == n, "scales has ", scales.size(), " entries, expected ", n);
    for (size_t i = 0; i < n; ++i) {
      KILN_CHECK(scales[i] > 0, "scales must be positive, got ", scales[i]);
      size_t axis = static_cast<size_t>(axes[i]);
      plan.scales[axis] = scales[i];
      int64_t in = in_dims[axis];
      plan.out_dims[axis] = in < 0 ? -1 : static_cast<int64_t>(std::floor(in * scales[i]));
    }
  } else {
    KILN_CHECK(sizes.size() == n, "sizes has ", sizes.size(), " entries, expected ", n);
    for (int64_t s : sizes) KILN_CHECK(s >= 0, "sizes must be non-negative");
    std::string policy =
        node.opset >= 18 ? attrs.GetString("keep_aspect_ratio_policy", "stretch") : "stretch";
    if (policy == "stretch") {
      for (size_t i = 0; i < n; ++i) {
        size_t axis = static_cast<size_t>(axes[i]);
        int64_t in = in_dims[axis];
        plan.out_dims[axis] = sizes[i];
        plan.scales[axis] = in > 0 ? static_cast<double>(sizes[i]) / in : 1.0;
      }
    } else {
      KILN_CHECK(policy == "not_larger" || policy == "not_smaller",
                 "unknown keep_aspect_ratio_policy '", policy, "'");
      bool all_known = true;
      double scale = policy == "not_larger" ? std::numeric_limits<double>::infinity() : 0.0;
      for (size_t i = 0; i < n; ++i) {
        int64_t in = in_dims[static_cast<size_t>(axes[i])];
        if (in <= 0) {
          all_known = false;
          continue;
        }
        double s = static_cast<double>(sizes[i]) / in;
        scale = policy == "not_larger" ? std::min(scale, s) : std::max(scale, s);
      }
      for (size_t i = 0; i < n; ++i) {
        size_t axis = static_cast<size_t>(axes[i]);
        int64_t in = in_dims[axis];
        plan.scales[axis] = all_known ? scale : 1.0;
        plan.out_dims[axis] = all_known ? static_cast<int64_t>(std::floor(scale * in + 0.5)) : -1;
      }
    }
  }
  if (!legacy && node.opset >= 18 && attrs.GetInt("antialias", 0) != 0 &&
      plan.mode != ResizeMode::kNearest) {
    for (double s : plan.scales)
      KILN_CHECK(s >= 1.0, "antialias=1 when downsampling is not supported");
  }
  return plan;
}

Tensor ConstantValue(const ir::Node& node) {
  const ir::Attributes& attrs = node.attrs;
  if (attrs.has("value")) return attrs.GetTensor("value");
  if (attrs.has("value_float")) return Tensor::Scalar(attrs.GetFloat("value_float"));
  if (attrs.has("value_floats")) {
    std::vector<float> v = attrs.GetFloats("value_floats");
    return Tensor::FromFloats({static_cast<int64_t>(v.size())}, v);
  }
  if (attrs.has("value_int")) return Tensor::FromInt64s({}, {attrs.GetInt("value_int")});
  if (attrs.has("value_ints")) {
    std::vector<int64_t> v = attrs.GetInts("value_ints");
    return Tensor::FromInt64s({static_cast<int64_t>(v.size())}, v);
  }
  Fail("Constant has no supported value attribute (value, value_float(s), value_int(s))");
}

// ---- Resize coordinate math (shared by the CPU kernel and the GPU layer) ----

// Maps an output coordinate to the input coordinate along one axis.
double ResizeSourceCoordinate(const ResizePlan& plan, int axis, int rank, int64_t x, int64_t in_len,
                        int64_t out_len) {
  const double scale = plan.scales[static_cast<size_t>(axis)];
  // The ONNX reference measures the resized length as in_len * scale before
  // flooring; align_corners and friends depend on it when scales are given.
  const double resized = static_cast<double>(in_len) * scale;
  const std::string& mode = plan.coordinate_mode;
  const double xd = static_cast<double>(x);
  if (mode == "half_pixel") return (xd + 0.5) / scale - 0.5;
  if (mode == "pytorch_half_pixel") return resized > 1 ? (xd + 0.5) / scale - 0.5 : 0.0;
  if (mode == "align_corners")
    return resized == 1 ? 0.0 : xd * static_cast<double>(in_len - 1) / (resized - 1);
  if (mode == "asymmetric") return xd / scale;
  if (mode == "tf_half_pixel_for_nn") return (xd + 0.5) / scale;
  if (mode == "half_pixel_symmetric") {
    const double adjustment = static_cast<double>(out_len) / (scale * static_cast<double>(in_len));
    const double center = static_cast<double>(in_len) / 2;
    const double offset = center * (1 - adjustment);
    return offset + (xd + 0.5) / scale - 0.5;
  }
  // tf_crop_and_resize
  const double start = plan.roi[static_cast<size_t>(axis)];
  const double end = plan.roi[static_cast<size_t>(rank + axis)];
  const double span = static_cast<double>(in_len - 1);
  if (resized == 1) return 0.5 * (start + end) * span;
  return start * span + xd * (end - start) * span / (resized - 1);
}

bool ResizeOutsideCrop(const ResizePlan& plan, double coord, int64_t in_len) {
  return plan.coordinate_mode == "tf_crop_and_resize" &&
         (coord < 0 || coord > static_cast<double>(in_len - 1));
}

int64_t ResizeNearestIndex(const ResizePlan& plan, double coord, double scale, int64_t in_len) {
  const std::string& mode = plan.nearest_mode;
  double floor = std::floor(coord);
  int64_t index;
  if (mode == "simple") {
    index = static_cast<int64_t>(scale < 1.0 ? std::ceil(coord) : floor);
  } else if (mode == "floor") {
    index = static_cast<int64_t>(floor);
  } else if (mode == "ceil") {
    index = static_cast<int64_t>(std::ceil(coord));
  } else if (coord - floor == 0.5) {  // A tie: the mode decides.
    index = static_cast<int64_t>(mode == "round_prefer_ceil" ? floor + 1 : floor);
  } else {
    index = static_cast<int64_t>(std::round(coord));
  }
  return std::clamp<int64_t>(index, 0, in_len - 1);
}

double ResizeCubicWeight(double x, double a) {
  x = std::fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

std::vector<ResizeTaps> ResizeAxisTaps(const ResizePlan& plan, int axis, int rank, int64_t in_len,
                                       int64_t out_len) {
  std::vector<ResizeTaps> taps(static_cast<size_t>(out_len));
  for (int64_t x = 0; x < out_len; ++x) {
    ResizeTaps& t = taps[static_cast<size_t>(x)];
    const double coord = ResizeSourceCoordinate(plan, axis, rank, x, in_len, out_len);
    if (ResizeOutsideCrop(plan, coord, in_len)) {
      t.outside = true;
      continue;
    }
    const double base = std::floor(coord);
    const double frac = coord - base;
    const int64_t i0 = static_cast<int64_t>(base);
    auto clamp_index = [&](int64_t i) { return std::clamp<int64_t>(i, 0, in_len - 1); };
    if (plan.mode == ResizeMode::kLinear) {
      t.count = 2;
      t.index[0] = clamp_index(i0);
      t.index[1] = clamp_index(i0 + 1);
      t.weight[0] = 1 - frac;
      t.weight[1] = frac;
    } else {  // Cubic: four taps around the coordinate, edge-clamped.
      t.count = 4;
      double sum = 0;
      for (int k = 0; k < 4; ++k) {
        int64_t i = i0 - 1 + k;
        double w = ResizeCubicWeight(frac - (k - 1), static_cast<double>(plan.cubic_a));
        if (plan.exclude_outside && (i < 0 || i >= in_len)) w = 0;
        t.index[k] = clamp_index(i);
        t.weight[k] = w;
        sum += w;
      }
      if (plan.exclude_outside && sum != 0)
        for (double& w : t.weight) w /= sum;
    }
  }
  return taps;
}

}  // namespace tensor_ops

namespace {

using ir::Dim;
using ir::Shape;
using ir::TensorType;
using tensor_ops::SliceArgs;

TensorType UnknownRank(DType dtype) { return TensorType{dtype, std::nullopt}; }

Shape UnknownDims(int rank) { return Shape(static_cast<size_t>(rank), Dim::Unknown()); }

// The product of shape[begin, end) as one Dim: known when every factor is, and
// a lone symbolic factor (all others 1) keeps its name.
Dim DimProduct(const Shape& shape, size_t begin, size_t end) {
  int64_t known = 1;
  int unknown = 0;
  Dim last_unknown;
  for (size_t i = begin; i < end; ++i) {
    if (shape[i].is_known()) {
      known *= shape[i].value;
    } else {
      ++unknown;
      last_unknown = shape[i];
    }
  }
  if (unknown == 0 || known == 0) return Dim::Known(known);
  if (unknown == 1 && known == 1) return last_unknown;
  return Dim::Unknown();
}

// Dims that must agree (Concat's non-axis dims, ...): the known one wins.
Dim MergeDim(const Dim& a, const Dim& b, const char* what) {
  if (a.is_known() && b.is_known()) {
    KILN_CHECK(a.value == b.value, what, ": dims ", a.value, " and ", b.value, " differ");
    return a;
  }
  if (a.is_known()) return a;
  if (b.is_known()) return b;
  return a.symbol.empty() ? b : a;
}

Dim ScaleDim(const Dim& d, int64_t factor) {
  if (factor == 1) return d;
  if (d.is_known()) return Dim::Known(d.value * factor);
  return factor == 0 ? Dim::Known(0) : Dim::Unknown();
}

// Length of a 1-D input (a shape or axes tensor) when statically known.
std::optional<int64_t> Static1DLength(const InferContext& ctx, int i) {
  if (!ctx.has_input(i)) return std::nullopt;
  const TensorType& t = ctx.input_type(i);
  if (!t.has_rank()) return std::nullopt;
  if (t.rank() == 0) return 1;
  if (t.rank() == 1 && (*t.shape)[0].is_known()) return (*t.shape)[0].value;
  return std::nullopt;
}

// An optional input whose value is needed: true when absent or known.
bool ValueAvailable(const InferContext& ctx, int i) {
  return !ctx.has_input(i) || ctx.input_value(i) != nullptr;
}

// The input shape with dims of unknown size as -1 (for shared helpers).
std::vector<int64_t> DimsOrMinusOne(const Shape& shape) {
  std::vector<int64_t> dims;
  for (const Dim& d : shape) dims.push_back(d.is_known() ? d.value : -1);
  return dims;
}

void InferSameAsInput(InferContext& ctx) { ctx.set_output(0, ctx.input_type(0)); }

void InferFlatten(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, in.dtype, UnknownDims(2));
    return;
  }
  int rank = in.rank();
  int64_t axis = ctx.attrs().GetInt("axis", 1);
  KILN_CHECK(axis >= -rank && axis <= rank, "axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  const Shape& s = *in.shape;
  ctx.set_output(0, in.dtype,
                 {DimProduct(s, 0, static_cast<size_t>(axis)),
                  DimProduct(s, static_cast<size_t>(axis), s.size())});
}

void InferReshape(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  std::vector<int64_t> target;
  if (ctx.opset() < 5) {
    // Reshape-1 took the target shape as an attribute.
    KILN_CHECK(ctx.attrs().has("shape"), "Reshape before opset 5 needs the shape attribute");
    target = ctx.attrs().GetInts("shape");
  } else {
    const Tensor* shape_value = ctx.input_value(1);
    if (!shape_value) {
      std::optional<int64_t> len = Static1DLength(ctx, 1);
      ctx.set_output(0, len ? TensorType{in.dtype, UnknownDims(static_cast<int>(*len))}
                            : UnknownRank(in.dtype));
      return;
    }
    KILN_CHECK(shape_value->rank() == 1, "the shape input must be 1-D, got ",
               shape_value->TypeString());
    target = shape_value->ToInt64Vector();
  }
  const bool allow_zero = ctx.opset() >= 14 && ctx.attrs().GetInt("allowzero", 0) != 0;
  Shape out(target.size());
  int infer_at = -1;
  bool has_zero = false;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t t = target[i];
    if (t == -1) {
      KILN_CHECK(infer_at < 0, "shape ", DimsToString(target), " has more than one -1");
      infer_at = static_cast<int>(i);
    } else if (t == 0 && !allow_zero) {
      KILN_CHECK(!in.has_rank() || static_cast<int>(i) < in.rank(), "shape ", DimsToString(target),
                 " copies dim ", i, " (0) but the input has rank ", in.rank());
      out[i] = in.has_rank() ? (*in.shape)[i] : Dim::Unknown();
    } else {
      KILN_CHECK(t >= 0, "invalid dim ", t, " in shape ", DimsToString(target));
      has_zero |= t == 0;
      out[i] = Dim::Known(t);
    }
  }
  KILN_CHECK(!(has_zero && infer_at >= 0), "shape ", DimsToString(target),
             " has both 0 (with allowzero=1) and -1");
  if (!in.has_rank()) {
    ctx.set_output(0, in.dtype, out);
    return;
  }
  const std::string in_str = ir::ShapeToString(*in.shape);
  if (infer_at < 0) {
    if (ir::IsFullyKnown(*in.shape) && ir::IsFullyKnown(out)) {
      KILN_CHECK(Product(ir::KnownDims(*in.shape)) == Product(ir::KnownDims(out)),
                 "cannot reshape ", in_str, " to ", DimsToString(target), ": element counts ",
                 "differ");
    }
    ctx.set_output(0, in.dtype, out);
    return;
  }
  // Solve for the -1 as (input element count) / (other output dims), treating
  // each named symbol as an opaque factor that may cancel.
  out[static_cast<size_t>(infer_at)] = Dim::Unknown();
  int64_t in_known = 1;
  std::multiset<std::string> symbols;
  bool opaque = false;
  for (const Dim& d : *in.shape) {
    if (d.is_known()) {
      in_known *= d.value;
    } else if (!d.symbol.empty()) {
      symbols.insert(d.symbol);
    } else {
      opaque = true;
    }
  }
  int64_t out_known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (static_cast<int>(i) == infer_at) continue;
    const Dim& d = out[i];
    if (d.is_known()) {
      out_known *= d.value;
    } else if (!d.symbol.empty() && symbols.count(d.symbol)) {
      symbols.erase(symbols.find(d.symbol));
    } else {
      opaque = true;
    }
  }
  if (!opaque && symbols.empty()) {
    KILN_CHECK(out_known != 0 && in_known % out_known == 0, "cannot reshape ", in_str, " to ",
               DimsToString(target), ": element counts differ");
    out[static_cast<size_t>(infer_at)] = Dim::Known(in_known / out_known);
  } else if (!opaque && symbols.size() == 1 && in_known == out_known && out_known != 0) {
    out[static_cast<size_t>(infer_at)] = Dim::Symbol(*symbols.begin());
  }
  ctx.set_output(0, in.dtype, out);
}

void InferTranspose(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    std::vector<int64_t> perm = ctx.attrs().GetInts("perm", {});
    ctx.set_output(0, perm.empty()
                          ? UnknownRank(in.dtype)
                          : TensorType{in.dtype, UnknownDims(static_cast<int>(perm.size()))});
    return;
  }
  std::vector<int> perm = tensor_ops::ResolvePerm(ctx.node(), in.rank());
  Shape out;
  for (int p : perm) out.push_back((*in.shape)[static_cast<size_t>(p)]);
  ctx.set_output(0, in.dtype, out);
}

void InferConcat(InferContext& ctx) {
  KILN_CHECK(ctx.num_inputs() >= 1, "Concat needs at least one input");
  const TensorType* first_ranked = nullptr;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (ctx.input_type(i).has_rank()) {
      first_ranked = &ctx.input_type(i);
      break;
    }
  }
  DType dtype = ctx.input_type(0).dtype;
  for (int i = 1; i < ctx.num_inputs(); ++i)
    KILN_CHECK(ctx.input_type(i).dtype == dtype, "input ", i, " is ",
               DTypeName(ctx.input_type(i).dtype), " but input 0 is ", DTypeName(dtype));
  if (!first_ranked) {
    ctx.set_output(0, UnknownRank(dtype));
    return;
  }
  const int rank = first_ranked->rank();
  KILN_CHECK(rank >= 1, "cannot concatenate scalars");
  const int axis = NormalizeAxis(tensor_ops::ConcatAxis(ctx.node()), rank, ctx.node());
  Shape out = *first_ranked->shape;
  Dim total = Dim::Known(0);
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    const TensorType& t = ctx.input_type(i);
    if (!t.has_rank()) {
      total = Dim::Unknown();
      continue;
    }
    KILN_CHECK(t.rank() == rank, "input ", i, " has rank ", t.rank(), " but input 0 has rank ",
               rank, " (", t.ToString(), " vs ", first_ranked->ToString(), ")");
    for (int d = 0; d < rank; ++d) {
      const Dim& dim = (*t.shape)[static_cast<size_t>(d)];
      if (d == axis) {
        total = total.is_known() && dim.is_known() ? Dim::Known(total.value + dim.value)
                                                   : Dim::Unknown();
      } else {
        out[static_cast<size_t>(d)] =
            MergeDim(out[static_cast<size_t>(d)], dim, "inputs disagree off the concat axis");
      }
    }
  }
  // A single input's symbolic axis dim passes through.
  if (ctx.num_inputs() == 1) total = (*first_ranked->shape)[static_cast<size_t>(axis)];
  out[static_cast<size_t>(axis)] = total;
  ctx.set_output(0, dtype, out);
}

void InferSplit(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  const int n = ctx.num_outputs();
  if (!in.has_rank()) {
    for (int i = 0; i < n; ++i) ctx.set_output(i, UnknownRank(in.dtype));
    return;
  }
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), in.rank(), ctx.node());
  const Dim& dim = (*in.shape)[static_cast<size_t>(axis)];
  std::vector<Dim> parts(static_cast<size_t>(n), Dim::Unknown());
  const bool split_input = (ctx.opset() >= 13 || ctx.opset() < 2) && ctx.has_input(1);
  if (split_input && !ctx.input_value(1)) {
    // Sizes unknown until run time.
  } else if (dim.is_known()) {
    std::vector<int64_t> sizes =
        tensor_ops::SplitSizes(ctx.node(), dim.value, ctx.input_value(1), n);
    for (int i = 0; i < n; ++i)
      parts[static_cast<size_t>(i)] = Dim::Known(sizes[static_cast<size_t>(i)]);
  } else if (split_input || (ctx.opset() < 13 && ctx.attrs().has("split"))) {
    std::vector<int64_t> sizes =
        split_input ? ctx.input_value(1)->ToInt64Vector() : ctx.attrs().GetInts("split");
    KILN_CHECK(static_cast<int>(sizes.size()) == n, "split has ", sizes.size(),
               " entries but the node has ", n, " outputs");
    for (int i = 0; i < n; ++i)
      parts[static_cast<size_t>(i)] = Dim::Known(sizes[static_cast<size_t>(i)]);
  } else if (n == 1) {
    parts[0] = dim;
  }
  for (int i = 0; i < n; ++i) {
    Shape out = *in.shape;
    out[static_cast<size_t>(axis)] = parts[static_cast<size_t>(i)];
    ctx.set_output(i, in.dtype, out);
  }
}

void InferSlice(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  const int rank = in.rank();
  if (ctx.opset() >= 10 && (!ctx.input_value(1) || !ctx.input_value(2) || !ValueAvailable(ctx, 3) ||
                            !ValueAvailable(ctx, 4))) {
    // Parameters unknown: dims off the sliced axes survive when axes are known.
    Shape out = UnknownDims(rank);
    if (const Tensor* axes = ctx.input_value(3)) {
      out = *in.shape;
      for (int64_t a : axes->ToInt64Vector())
        out[static_cast<size_t>(NormalizeAxis(a, rank, ctx.node()))] = Dim::Unknown();
    }
    ctx.set_output(0, in.dtype, out);
    return;
  }
  SliceArgs args =
      tensor_ops::GetSliceArgs(ctx.node(), rank, ctx.input_value(1), ctx.input_value(2),
                               ctx.input_value(3), ctx.input_value(4));
  Shape out = *in.shape;
  for (size_t i = 0; i < args.axes.size(); ++i) {
    Dim& d = out[static_cast<size_t>(args.axes[i])];
    if (d.is_known()) {
      d = Dim::Known(
          tensor_ops::ResolveSliceRange(d.value, args.starts[i], args.ends[i], args.steps[i])
              .count);
    } else if (!(args.starts[i] == 0 && args.steps[i] == 1 &&
                 args.ends[i] >= std::numeric_limits<int32_t>::max())) {
      d = Dim::Unknown();  // Anything but a full slice changes an unknown dim.
    }
  }
  ctx.set_output(0, in.dtype, out);
}

void InferGather(InferContext& ctx) {
  const TensorType& data = ctx.input_type(0);
  const TensorType& indices = ctx.input_type(1);
  KILN_CHECK(indices.dtype == DType::kInt32 || indices.dtype == DType::kInt64,
             "indices must be int32 or int64, got ", DTypeName(indices.dtype));
  if (!data.has_rank() || !indices.has_rank()) {
    ctx.set_output(0, UnknownRank(data.dtype));
    return;
  }
  KILN_CHECK(data.rank() >= 1, "cannot gather from a scalar");
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  const Shape& ds = *data.shape;
  Shape out(ds.begin(), ds.begin() + axis);
  out.insert(out.end(), indices.shape->begin(), indices.shape->end());
  out.insert(out.end(), ds.begin() + axis + 1, ds.end());
  ctx.set_output(0, data.dtype, out);
}

void InferSqueeze(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  const bool axes_input = ctx.opset() >= 13 && ctx.has_input(1);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  const int rank = in.rank();
  const Shape& s = *in.shape;
  std::vector<int64_t> axes;
  if (axes_input) {
    if (!ctx.input_value(1)) {
      std::optional<int64_t> len = Static1DLength(ctx, 1);
      ctx.set_output(0, len ? TensorType{in.dtype, UnknownDims(rank - static_cast<int>(*len))}
                            : UnknownRank(in.dtype));
      return;
    }
    axes = ctx.input_value(1)->ToInt64Vector();
  } else if (ctx.opset() < 13) {
    axes = ctx.attrs().GetInts("axes", {});
  }
  std::vector<bool> drop(static_cast<size_t>(rank), false);
  if (axes.empty()) {
    for (int i = 0; i < rank; ++i) {
      if (!s[static_cast<size_t>(i)].is_known()) {
        ctx.set_output(0, UnknownRank(in.dtype));  // Depends on whether it is 1.
        return;
      }
      drop[static_cast<size_t>(i)] = s[static_cast<size_t>(i)].value == 1;
    }
  }
  for (int64_t a : axes) {
    int axis = NormalizeAxis(a, rank, ctx.node());
    KILN_CHECK(!drop[static_cast<size_t>(axis)], "axis ", a, " is repeated");
    const Dim& d = s[static_cast<size_t>(axis)];
    KILN_CHECK(!d.is_known() || d.value == 1, "cannot squeeze axis ", a, " of size ", d.value,
               " in ", ir::ShapeToString(s));
    drop[static_cast<size_t>(axis)] = true;
  }
  Shape out;
  for (int i = 0; i < rank; ++i)
    if (!drop[static_cast<size_t>(i)]) out.push_back(s[static_cast<size_t>(i)]);
  ctx.set_output(0, in.dtype, out);
}

void InferUnsqueeze(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  std::vector<int64_t> axes;
  if (ctx.opset() >= 13) {
    if (!ctx.input_value(1)) {
      std::optional<int64_t> len = Static1DLength(ctx, 1);
      ctx.set_output(0, len && in.has_rank()
                            ? TensorType{in.dtype, UnknownDims(in.rank() + static_cast<int>(*len))}
                            : UnknownRank(in.dtype));
      return;
    }
    axes = ctx.input_value(1)->ToInt64Vector();
  } else {
    axes = ctx.attrs().GetInts("axes");
  }
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  const int out_rank = in.rank() + static_cast<int>(axes.size());
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : axes) {
    int axis = NormalizeAxis(a, out_rank, ctx.node());
    KILN_CHECK(!inserted[static_cast<size_t>(axis)], "axis ", a, " is repeated");
    inserted[static_cast<size_t>(axis)] = true;
  }
  Shape out;
  size_t next = 0;
  for (int i = 0; i < out_rank; ++i)
    out.push_back(inserted[static_cast<size_t>(i)] ? Dim::Known(1) : (*in.shape)[next++]);
  ctx.set_output(0, in.dtype, out);
}

void InferShape(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, DType::kInt64, {Dim::Unknown()});
    return;
  }
  auto [start, end] = tensor_ops::ShapeRange(ctx.node(), in.rank());
  ctx.set_output(0, DType::kInt64, {Dim::Known(end - start)});
}

void InferSize(InferContext& ctx) {
  ctx.input_type(0);
  ctx.set_output(0, DType::kInt64, Shape{});
}

void InferConstantOfShape(InferContext& ctx) {
  DType dtype = DType::kFloat32;
  if (ctx.attrs().has("value")) {
    const Tensor& value = ctx.attrs().GetTensor("value");
    KILN_CHECK(value.numel() == 1, "value must hold one element, got ", value.TypeString());
    dtype = value.dtype();
  }
  const Tensor* shape = ctx.input_value(0);
  if (!shape) {
    std::optional<int64_t> len = Static1DLength(ctx, 0);
    ctx.set_output(
        0, len ? TensorType{dtype, UnknownDims(static_cast<int>(*len))} : UnknownRank(dtype));
    return;
  }
  KILN_CHECK(shape->rank() == 1, "the shape input must be 1-D, got ", shape->TypeString());
  std::vector<int64_t> dims = shape->ToInt64Vector();
  for (int64_t d : dims) KILN_CHECK(d >= 0, "negative dim in shape ", DimsToString(dims));
  ctx.set_output(0, dtype, ir::ShapeFromDims(dims));
}

void InferDropout(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  tensor_ops::CheckLegacyDropoutIsTest(ctx.node());
  if (ctx.opset() >= 12) {
    // Training mode drops at random, except with ratio 0 where it is an identity.
    const Tensor* training = ctx.input_value(2);
    const Tensor* ratio = ctx.input_value(1);
    if (training) {
      KILN_CHECK(training->numel() == 1, "training_mode must be a scalar");
      KILN_CHECK(training->GetAsDouble(0) == 0.0 || !ValueAvailable(ctx, 1) ||
                     (ratio && ratio->numel() == 1 && ratio->GetAsDouble(0) == 0.0),
                 "training_mode=true is not supported: kiln runs inference only");
    }
  }
  ctx.set_output(0, in);
  if (ctx.num_outputs() > 1)
    ctx.set_output(1, TensorType{ctx.opset() >= 10 ? DType::kBool : in.dtype, in.shape});
}

void InferExpand(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  const Tensor* shape = ctx.input_value(1);
  if (!shape || !in.has_rank()) {
    std::optional<int64_t> len = Static1DLength(ctx, 1);
    if (len && in.has_rank())
      ctx.set_output(0, in.dtype, UnknownDims(std::max(in.rank(), static_cast<int>(*len))));
    else
      ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  KILN_CHECK(shape->rank() == 1, "the shape input must be 1-D, got ", shape->TypeString());
  std::vector<int64_t> dims = shape->ToInt64Vector();
  for (int64_t d : dims) KILN_CHECK(d >= 0, "negative dim in shape ", DimsToString(dims));
  ctx.set_output(0, in.dtype, BroadcastShapes(*in.shape, ir::ShapeFromDims(dims), ctx.node()));
}

void InferTile(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  const Tensor* repeats = ctx.input_value(1);
  if (!repeats) {
    ctx.set_output(0, in.dtype, UnknownDims(in.rank()));
    return;
  }
  std::vector<int64_t> reps = repeats->ToInt64Vector();
  KILN_CHECK(static_cast<int>(reps.size()) == in.rank(), "repeats has ", reps.size(),
             " entries but the input has rank ", in.rank());
  Shape out;
  for (size_t i = 0; i < reps.size(); ++i) {
    KILN_CHECK(reps[i] >= 0, "repeats must be non-negative, got ", DimsToString(reps));
    out.push_back(ScaleDim((*in.shape)[i], reps[i]));
  }
  ctx.set_output(0, in.dtype, out);
}

void InferRange(InferContext& ctx) {
  DType dtype = ctx.input_type(0).dtype;
  for (int i = 1; i < 3; ++i)
    KILN_CHECK(ctx.input_type(i).dtype == dtype, "start, limit and delta must share a dtype");
  const Tensor* start = ctx.input_value(0);
  const Tensor* limit = ctx.input_value(1);
  const Tensor* delta = ctx.input_value(2);
  if (!start || !limit || !delta) {
    ctx.set_output(0, dtype, {Dim::Unknown()});
    return;
  }
  KILN_CHECK(start->numel() == 1 && limit->numel() == 1 && delta->numel() == 1,
             "start, limit and delta must be scalars");
  int64_t count;
  if (IsInteger(dtype)) {
    int64_t s = start->GetAsInt64(0), l = limit->GetAsInt64(0), d = delta->GetAsInt64(0);
    KILN_CHECK(d != 0, "delta must not be 0");
    int64_t diff = l - s;
    count = diff / d;
    if (diff % d != 0 && ((diff < 0) == (d < 0))) ++count;  // Ceiling division.
  } else {
    double d = delta->GetAsDouble(0);
    KILN_CHECK(d != 0, "delta must not be 0");
    count = static_cast<int64_t>(std::ceil((limit->GetAsDouble(0) - start->GetAsDouble(0)) / d));
  }
  ctx.set_output(0, dtype, {Dim::Known(std::max<int64_t>(count, 0))});
}

void InferPad(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  const int rank = in.rank();
  if (ctx.opset() >= 11 && (!ctx.input_value(1) || !ValueAvailable(ctx, 3))) {
    ctx.set_output(0, in.dtype, UnknownDims(rank));
    return;
  }
  tensor_ops::PadArgs args = tensor_ops::GetPadArgs(
      ctx.node(), rank, ctx.input_value(1), ctx.opset() >= 18 ? ctx.input_value(3) : nullptr);
  Shape out = *in.shape;
  for (int i = 0; i < rank; ++i) {
    int64_t begin = args.pads[static_cast<size_t>(i)];
    int64_t end = args.pads[static_cast<size_t>(rank + i)];
    Dim& d = out[static_cast<size_t>(i)];
    if (d.is_known()) {
      int64_t size = d.value + begin + end;
      KILN_CHECK(size >= 0, "pads ", DimsToString(args.pads), " crop axis ", i, " of size ",
                 d.value, " below zero");
      d = Dim::Known(size);
    } else if (begin != 0 || end != 0) {
      d = Dim::Unknown();
    }
  }
  ctx.set_output(0, in.dtype, out);
}

void InferResize(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    return;
  }
  int roi = -1, scales = -1, sizes = -1;
  tensor_ops::ResizeInputIndices(ctx.node(), &roi, &scales, &sizes);
  // roi only matters for tf_crop_and_resize; exporters often feed it as a graph input.
  if (ctx.attrs().GetString("coordinate_transformation_mode", "") != "tf_crop_and_resize") roi = -1;
  for (int i : {roi, scales, sizes}) {
    if (i >= 0 && !ValueAvailable(ctx, i)) {
      ctx.set_output(0, in.dtype, UnknownDims(in.rank()));
      return;
    }
  }
  tensor_ops::ResizeInputs inputs;
  inputs.roi = roi >= 0 ? ctx.input_value(roi) : nullptr;
  inputs.scales = scales >= 0 ? ctx.input_value(scales) : nullptr;
  inputs.sizes = sizes >= 0 ? ctx.input_value(sizes) : nullptr;
  tensor_ops::ResizePlan plan =
      tensor_ops::PlanResize(ctx.node(), DimsOrMinusOne(*in.shape), inputs);
  Shape out = *in.shape;
  for (size_t i = 0; i < out.size(); ++i) {
    if (plan.out_dims[i] >= 0) {
      out[i] = Dim::Known(plan.out_dims[i]);
    } else if (plan.scales[i] != 1.0) {
      out[i] = Dim::Unknown();
    }
  }
  ctx.set_output(0, in.dtype, out);
}

void InferTopK(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (!in.has_rank()) {
    ctx.set_output(0, UnknownRank(in.dtype));
    ctx.set_output(1, UnknownRank(DType::kInt64));
    return;
  }
  KILN_CHECK(in.rank() >= 1, "TopK needs an input of rank >= 1");
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), in.rank(), ctx.node());
  Dim k = Dim::Unknown();
  if (ctx.opset() < 10) {
    k = Dim::Known(ctx.attrs().GetInt("k"));
  } else if (const Tensor* kv = ctx.input_value(1)) {
    KILN_CHECK(kv->numel() == 1, "K must hold one value, got ", kv->TypeString());
    k = Dim::Known(kv->GetAsInt64(0));
  }
  const Dim& dim = (*in.shape)[static_cast<size_t>(axis)];
  if (k.is_known()) {
    KILN_CHECK(k.value >= 0, "k must be non-negative, got ", k.value);
    KILN_CHECK(!dim.is_known() || k.value <= dim.value, "k=", k.value, " is larger than the axis (",
               dim.value, " elements)");
  }
  Shape out = *in.shape;
  out[static_cast<size_t>(axis)] = k;
  ctx.set_output(0, in.dtype, out);
  ctx.set_output(1, DType::kInt64, out);
}

void InferConstant(InferContext& ctx) {
  ctx.set_output(0, TensorType::Of(tensor_ops::ConstantValue(ctx.node())));
}

void InferGatherElements(InferContext& ctx) {
  const TensorType& data = ctx.input_type(0);
  const TensorType& indices = ctx.input_type(1);
  if (data.has_rank() && indices.has_rank()) {
    KILN_CHECK(data.rank() == indices.rank(), "data ", data.ToString(), " and indices ",
               indices.ToString(), " must have the same rank");
    KILN_CHECK(data.rank() >= 1, "cannot gather from a scalar");
    NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  }
  ctx.set_output(0, TensorType{data.dtype, indices.shape});
}

void InferGatherND(InferContext& ctx) {
  const TensorType& data = ctx.input_type(0);
  const TensorType& indices = ctx.input_type(1);
  const int64_t batch_dims = ctx.attrs().GetInt("batch_dims", 0);
  if (!data.has_rank() || !indices.has_rank()) {
    ctx.set_output(0, UnknownRank(data.dtype));
    return;
  }
  const int r = data.rank(), q = indices.rank();
  KILN_CHECK(r >= 1 && q >= 1, "data and indices must have rank >= 1");
  KILN_CHECK(batch_dims >= 0 && batch_dims < std::min(r, q), "batch_dims ", batch_dims,
             " must be less than both ranks (", r, ", ", q, ")");
  const Dim& last = indices.shape->back();
  if (!last.is_known()) {
    ctx.set_output(0, UnknownRank(data.dtype));
    return;
  }
  const int64_t m = last.value;
  KILN_CHECK(m >= 1 && m <= r - batch_dims, "indices' last dim ", m, " must be in [1, ",
             r - batch_dims, "]");
  for (int64_t b = 0; b < batch_dims; ++b)
    MergeDim((*data.shape)[static_cast<size_t>(b)], (*indices.shape)[static_cast<size_t>(b)],
             "data and indices batch dims");
  Shape out(indices.shape->begin(), indices.shape->end() - 1);
  out.insert(out.end(), data.shape->begin() + batch_dims + m, data.shape->end());
  ctx.set_output(0, data.dtype, out);
}

void InferScatter(InferContext& ctx) {
  const TensorType& data = ctx.input_type(0);
  const TensorType& updates = ctx.input_type(2);
  KILN_CHECK(updates.dtype == data.dtype, "updates are ", DTypeName(updates.dtype), " but data is ",
             DTypeName(data.dtype));
  ctx.set_output(0, data);
}

void InferNonZero(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  Dim rank = in.has_rank() ? Dim::Known(std::max(in.rank(), 1)) : Dim::Unknown();
  Dim count = Dim::Unknown();
  if (const Tensor* value = ctx.input_value(0)) {
    int64_t n = 0;
    for (int64_t i = 0; i < value->numel(); ++i) n += value->GetAsDouble(i) != 0.0;
    count = Dim::Known(n);
  }
  ctx.set_output(0, DType::kInt64, {rank, count});
}

void InferOneHot(InferContext& ctx) {
  const TensorType& indices = ctx.input_type(0);
  const TensorType& values = ctx.input_type(2);
  if (!indices.has_rank()) {
    ctx.set_output(0, UnknownRank(values.dtype));
    return;
  }
  const int out_rank = indices.rank() + 1;
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), out_rank, ctx.node());
  Dim depth = Dim::Unknown();
  if (const Tensor* d = ctx.input_value(1)) {
    KILN_CHECK(d->numel() == 1, "depth must hold one value, got ", d->TypeString());
    int64_t v = static_cast<int64_t>(d->GetAsDouble(0));
    KILN_CHECK(v >= 1, "depth must be positive, got ", v);
    depth = Dim::Known(v);
  }
  Shape out = *indices.shape;
  out.insert(out.begin() + axis, depth);
  ctx.set_output(0, values.dtype, out);
}

void InferDepthToSpace(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  const int64_t b = ctx.attrs().GetInt("blocksize");
  KILN_CHECK(b >= 1, "blocksize must be positive, got ", b);
  if (!in.has_rank()) {
    ctx.set_output(0, in.dtype, UnknownDims(4));
    return;
  }
  KILN_CHECK(in.rank() == 4, "input must be 4-D (N,C,H,W), got ", in.ToString());
  const Shape& s = *in.shape;
  const bool to_space = ctx.node().op_type == "DepthToSpace";
  Dim c = s[1];
  if (c.is_known()) {
    if (to_space) {
      KILN_CHECK(c.value % (b * b) == 0, "channels ", c.value, " are not divisible by ", b * b);
      c = Dim::Known(c.value / (b * b));
    } else {
      c = Dim::Known(c.value * b * b);
    }
  }
  Shape out = {s[0], c, s[2], s[3]};
  for (size_t i = 2; i < 4; ++i) {
    if (!s[i].is_known()) {
      out[i] = Dim::Unknown();
    } else if (to_space) {
      out[i] = Dim::Known(s[i].value * b);
    } else {
      KILN_CHECK(s[i].value % b == 0, "spatial dim ", s[i].value, " is not divisible by ", b);
      out[i] = Dim::Known(s[i].value / b);
    }
  }
  ctx.set_output(0, in.dtype, out);
}

void InferTrilu(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  KILN_CHECK(!in.has_rank() || in.rank() >= 2, "input must have rank >= 2, got ", in.ToString());
  ctx.set_output(0, in);
}

void InferEyeLike(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  KILN_CHECK(!in.has_rank() || in.rank() == 2, "input must be 2-D, got ", in.ToString());
  DType dtype =
      ctx.attrs().has("dtype") ? static_cast<DType>(ctx.attrs().GetInt("dtype")) : in.dtype;
  KILN_CHECK(DTypeSize(dtype) > 0, "unsupported dtype ", DTypeName(dtype));
  ctx.set_output(0, TensorType{dtype, in.has_rank() ? in.shape : Shape(UnknownDims(2))});
}

void InferCumSum(InferContext& ctx) {
  const TensorType& in = ctx.input_type(0);
  if (const Tensor* axis = ctx.input_value(1)) {
    KILN_CHECK(axis->numel() == 1, "axis must be a scalar, got ", axis->TypeString());
    if (in.has_rank()) NormalizeAxis(axis->GetAsInt64(0), in.rank(), ctx.node());
  }
  ctx.set_output(0, in);
}

OpDef& Def(OpRegistry& registry, const std::string& name, InferFn infer, int min_opset = 0,
           int max_opset = 0) {
  OpDef& def = registry.Define(name);
  def.infer = std::move(infer);
  if (min_opset) def.min_opset = min_opset;
  if (max_opset) def.max_opset = max_opset;
  return def;
}

}  // namespace

void RegisterTensorOps(OpRegistry& registry) {
  // Opset 1 forms handled where they differ: Reshape's shape attribute (< 5),
  // Concat's default axis (< 4), Split's split input (1), Slice's attributes
  // (< 10), Squeeze/Unsqueeze axes attributes (< 13), Pad's paddings (1).
  Def(registry, "Identity", InferSameAsInput, 1);
  Def(registry, "Flatten", InferFlatten, 1);
  Def(registry, "Reshape", InferReshape, 1);
  Def(registry, "Transpose", InferTranspose, 1);
  Def(registry, "Concat", InferConcat, 1);
  Def(registry, "Split", InferSplit, 1);
  Def(registry, "Slice", InferSlice, 1);
  Def(registry, "Gather", InferGather, 1);
  Def(registry, "Squeeze", InferSqueeze, 1);
  Def(registry, "Unsqueeze", InferUnsqueeze, 1);
  Def(registry, "Shape", InferShape, 1);
  Def(registry, "Size", InferSize, 1);
  Def(registry, "ConstantOfShape", InferConstantOfShape, 9);
  Def(registry, "Dropout", InferDropout, 1);
  Def(registry, "Expand", InferExpand, 8);
  Def(registry, "Tile", InferTile, 6);  // Tile-1 took (tiles, axis) inputs.
  Def(registry, "Range", InferRange, 11);
  Def(registry, "Pad", InferPad, 1);
  Def(registry, "Resize", InferResize, 10);
  Def(registry, "Upsample", InferResize, 7, 10);
  Def(registry, "TopK", InferTopK, 1);
  Def(registry, "Constant", InferConstant, 1);
  Def(registry, "GatherElements", InferGatherElements, 11);
  Def(registry, "GatherND", InferGatherND, 11);
  Def(registry, "ScatterND", InferScatter, 11);
  Def(registry, "ScatterElements", InferScatter, 11);
  Def(registry, "Scatter", InferScatter, 9, 10);
  Def(registry, "NonZero", InferNonZero, 9);
  Def(registry, "OneHot", InferOneHot, 9);
  Def(registry, "DepthToSpace", InferDepthToSpace, 1);
  Def(registry, "SpaceToDepth", InferDepthToSpace, 1);
  Def(registry, "CumSum", InferCumSum, 11);
  Def(registry, "Trilu", InferTrilu, 14);
  Def(registry, "EyeLike", InferEyeLike, 9);
}

}  // namespace kiln
