// Neural-network operator definitions: convolution, pooling, normalization,
// Gemm/MatMul/Einsum. CPU kernels live in cpu/nn.cc.
#include "ops/nn.h"

#include <algorithm>
#include <array>

#include "ops/registry.h"

namespace kiln {
namespace nn {

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// Reads an optional per-axis attribute, defaulting every axis to `def`.
std::vector<int64_t> PerAxis(const ir::Attributes& attrs, const char* name, int rank,
                             int64_t def, int64_t min_value) {
  std::vector<int64_t> values = attrs.GetInts(name, std::vector<int64_t>(rank, def));
  KILN_CHECK(static_cast<int>(values.size()) == rank, "attribute '", name, "' has ",
             values.size(), " values, expected ", rank, " (one per spatial axis)");
  for (int64_t v : values)
    KILN_CHECK(v >= min_value, "attribute '", name, "' has invalid value ", v);
  return values;
}

std::string AutoPad(const ir::Attributes& attrs) {
  std::string auto_pad = attrs.GetString("auto_pad", "NOTSET");
  KILN_CHECK(auto_pad == "NOTSET" || auto_pad == "VALID" || auto_pad == "SAME_UPPER" ||
                 auto_pad == "SAME_LOWER",
             "unknown auto_pad value '", auto_pad, "'");
  return auto_pad;
}

// Explicit pads (auto_pad NOTSET), else zeros.
std::vector<int64_t> ExplicitPads(const ir::Attributes& attrs, const std::string& auto_pad,
                                  int rank) {
  std::vector<int64_t> pads(2 * static_cast<size_t>(rank), 0);
  if (auto_pad != "NOTSET") return pads;
  pads = attrs.GetInts("pads", pads);
  KILN_CHECK(static_cast<int>(pads.size()) == 2 * rank, "attribute 'pads' has ", pads.size(),
             " values, expected ", 2 * rank);
  for (int64_t p : pads) KILN_CHECK(p >= 0, "attribute 'pads' has negative value ", p);
  return pads;
}

}  // namespace

WindowGeometry ComputeWindowGeometry(const ir::Attributes& attrs,
                                     const std::vector<int64_t>& input,
                                     const std::vector<int64_t>& kernel, bool ceil_mode) {
  const int rank = static_cast<int>(input.size());
  KILN_CHECK(static_cast<int>(kernel.size()) == rank, "kernel has ", kernel.size(),
             " spatial dims but the input has ", rank);
  WindowGeometry g;
  g.input = input;
  g.kernel = kernel;
  g.strides = PerAxis(attrs, "strides", rank, 1, 1);
  g.dilations = PerAxis(attrs, "dilations", rank, 1, 1);
  const std::string auto_pad = AutoPad(attrs);
  std::vector<int64_t> pads = ExplicitPads(attrs, auto_pad, rank);
  g.pads_begin.assign(pads.begin(), pads.begin() + rank);
  g.pads_end.assign(pads.begin() + rank, pads.end());
  g.output.assign(rank, -1);
  for (int i = 0; i < rank; ++i) {
    KILN_CHECK(kernel[i] >= 1 || kernel[i] == -1, "kernel size ", kernel[i], " is invalid");
    if (input[i] < 0 || kernel[i] < 0) continue;
    const int64_t window = g.dilations[i] * (kernel[i] - 1) + 1;
    const int64_t stride = g.strides[i];
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      g.output[i] = CeilDiv(input[i], stride);
      const int64_t total = std::max<int64_t>(0, (g.output[i] - 1) * stride + window - input[i]);
      g.pads_begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pads_end[i] = total - g.pads_begin[i];
      continue;
    }
    const int64_t padded = input[i] + g.pads_begin[i] + g.pads_end[i];
    KILN_CHECK(padded >= window, "the window (", window, " with dilation) is larger than the ",
               "padded input (", padded, ") on spatial axis ", i);
    if (ceil_mode) {
      g.output[i] = CeilDiv(padded - window, stride) + 1;
      // The last window must start inside the input or the leading padding.
      if ((g.output[i] - 1) * stride >= input[i] + g.pads_begin[i]) --g.output[i];
    } else {
      g.output[i] = (padded - window) / stride + 1;
    }
  }
  return g;
}

WindowGeometry ComputeConvTransposeGeometry(const ir::Attributes& attrs,
                                            const std::vector<int64_t>& input,
                                            const std::vector<int64_t>& kernel) {
  const int rank = static_cast<int>(input.size());
  KILN_CHECK(static_cast<int>(kernel.size()) == rank, "kernel has ", kernel.size(),
             " spatial dims but the input has ", rank);
  WindowGeometry g;
  g.input = input;
  g.kernel = kernel;
  g.strides = PerAxis(attrs, "strides", rank, 1, 1);
  g.dilations = PerAxis(attrs, "dilations", rank, 1, 1);
  const std::vector<int64_t> output_padding = PerAxis(attrs, "output_padding", rank, 0, 0);
  const std::string auto_pad = AutoPad(attrs);
  std::vector<int64_t> pads = ExplicitPads(attrs, auto_pad, rank);
  // output_shape lists the spatial sizes (some exporters include N and C).
  std::vector<int64_t> output_shape = attrs.GetInts("output_shape", {});
  if (static_cast<int>(output_shape.size()) == rank + 2)
    output_shape.erase(output_shape.begin(), output_shape.begin() + 2);
  KILN_CHECK(output_shape.empty() || static_cast<int>(output_shape.size()) == rank,
             "attribute 'output_shape' has ", output_shape.size(), " values, expected ", rank);

  g.pads_begin.assign(pads.begin(), pads.begin() + rank);
  g.pads_end.assign(pads.begin() + rank, pads.end());
  g.output.assign(rank, -1);
  for (int i = 0; i < rank; ++i) {
    KILN_CHECK(kernel[i] >= 1 || kernel[i] == -1, "kernel size ", kernel[i], " is invalid");
    if (!output_shape.empty()) KILN_CHECK(output_shape[i] > 0, "output_shape has a size < 1");
    if (input[i] < 0 || kernel[i] < 0) {
      if (!output_shape.empty()) g.output[i] = output_shape[i];
      continue;
    }
    const int64_t full = g.strides[i] * (input[i] - 1) + g.dilations[i] * (kernel[i] - 1) + 1;
    if (!output_shape.empty() || auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      g.output[i] = !output_shape.empty() ? output_shape[i] : input[i] * g.strides[i];
      // Padding that crops the full result to the requested size, the odd
      // element at the end except for SAME_LOWER. A negative total means the
      // output extends past the full result (at the end).
      const int64_t total = full + output_padding[i] - g.output[i];
      const int64_t crop = std::max<int64_t>(total, 0);
      g.pads_begin[i] = auto_pad == "SAME_LOWER" ? crop - crop / 2 : crop / 2;
      g.pads_end[i] = total - g.pads_begin[i];
    } else {
      g.output[i] = full + output_padding[i] - g.pads_begin[i] - g.pads_end[i];
    }
    KILN_CHECK(g.output[i] > 0, "ConvTranspose output size ", g.output[i], " on spatial axis ", i,
               " is not positive");
  }
  return g;
}

EinsumSpec ParseEinsum(const std::string& equation, const std::vector<int>& input_ranks) {
  std::string eq;
  for (char c : equation)
    if (c != ' ' && c != '\t') eq.push_back(c);
  std::string lhs = eq, rhs;
  const size_t arrow = eq.find("->");
  const bool explicit_output = arrow != std::string::npos;
  if (explicit_output) {
    lhs = eq.substr(0, arrow);
    rhs = eq.substr(arrow + 2);
  }
  std::vector<std::string> terms;
  for (size_t start = 0;;) {
    const size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos
                                                                 : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  KILN_CHECK(terms.size() == input_ranks.size(), "Einsum equation '", equation, "' has ",
             terms.size(), " operand terms but the node has ", input_ranks.size(), " inputs");

  auto letter_id = [&](char c) -> int {
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= 'A' && c <= 'Z') return 26 + (c - 'A');
    Fail("Einsum equation '", equation, "' has invalid character '", c, "'");
  };
  // A term's letters before and after its optional ellipsis.
  struct Split {
    std::string before, after;
    bool has_ellipsis = false;
  };
  auto split = [&](const std::string& term) {
    Split s;
    const size_t dots = term.find("...");
    if (dots == std::string::npos) {
      s.before = term;
    } else {
      s.has_ellipsis = true;
      s.before = term.substr(0, dots);
      s.after = term.substr(dots + 3);
    }
    KILN_CHECK(s.before.find('.') == std::string::npos && s.after.find('.') == std::string::npos,
               "Einsum equation '", equation, "' has a malformed ellipsis");
    return s;
  };

  std::vector<Split> splits;
  int ellipsis_rank = 0;
  for (size_t t = 0; t < terms.size(); ++t) {
    Split s = split(terms[t]);
    const int letters = static_cast<int>(s.before.size() + s.after.size());
    if (s.has_ellipsis) {
      KILN_CHECK(input_ranks[t] >= letters, "Einsum term '", terms[t], "' needs rank >= ",
                 letters, " but input ", t, " has rank ", input_ranks[t]);
      ellipsis_rank = std::max(ellipsis_rank, input_ranks[t] - letters);
    } else {
      KILN_CHECK(input_ranks[t] == letters, "Einsum term '", terms[t], "' has ", letters,
                 " labels but input ", t, " has rank ", input_ranks[t]);
    }
    splits.push_back(s);
  }
  constexpr int kEllipsisBase = 52;
  EinsumSpec spec;
  spec.num_labels = kEllipsisBase + ellipsis_rank;
  std::array<int, kEllipsisBase> counts{};
  for (size_t t = 0; t < terms.size(); ++t) {
    std::vector<int> labels;
    for (char c : splits[t].before) labels.push_back(letter_id(c));
    if (splits[t].has_ellipsis) {
      const int e = input_ranks[t] -
                    static_cast<int>(splits[t].before.size() + splits[t].after.size());
      for (int j = 0; j < e; ++j) labels.push_back(kEllipsisBase + ellipsis_rank - e + j);
    }
    for (char c : splits[t].after) labels.push_back(letter_id(c));
    for (int l : labels)
      if (l < kEllipsisBase) ++counts[static_cast<size_t>(l)];
    spec.inputs.push_back(std::move(labels));
  }

  if (explicit_output) {
    Split s = split(rhs);
    for (char c : s.before) spec.output.push_back(letter_id(c));
    if (s.has_ellipsis)
      for (int j = 0; j < ellipsis_rank; ++j) spec.output.push_back(kEllipsisBase + j);
    for (char c : s.after) spec.output.push_back(letter_id(c));
    std::vector<bool> seen(static_cast<size_t>(spec.num_labels), false);
    for (int l : spec.output) {
      KILN_CHECK(!seen[static_cast<size_t>(l)], "Einsum output '", rhs, "' repeats a label");
      seen[static_cast<size_t>(l)] = true;
      KILN_CHECK(l >= kEllipsisBase || counts[static_cast<size_t>(l)] > 0, "Einsum output '",
                 rhs, "' uses a label that no input has");
    }
  } else {
    for (int j = 0; j < ellipsis_rank; ++j) spec.output.push_back(kEllipsisBase + j);
    // ASCII order: uppercase (ids 26..51) before lowercase (ids 0..25).
    for (int l = 26; l < 52; ++l)
      if (counts[static_cast<size_t>(l)] == 1) spec.output.push_back(l);
    for (int l = 0; l < 26; ++l)
      if (counts[static_cast<size_t>(l)] == 1) spec.output.push_back(l);
  }
  return spec;
}

}  // namespace nn

namespace {

ir::Dim DimOf(int64_t v) { return v >= 0 ? ir::Dim::Known(v) : ir::Dim::Unknown(); }

// Known sizes of shape[begin:], -1 for unknown ones.
std::vector<int64_t> SizesFrom(const ir::Shape& shape, size_t begin) {
  std::vector<int64_t> sizes;
  for (size_t i = begin; i < shape.size(); ++i)
    sizes.push_back(shape[i].is_known() ? shape[i].value : -1);
  return sizes;
}

// A dim's value for FLOP counts: unknown (symbolic batch) counts as 1.
double FlopDim(const ir::Dim& d) { return d.is_known() ? static_cast<double>(d.value) : 1.0; }
double FlopNumel(const ir::TensorType& t) {
  double n = 1;
  if (t.has_rank())
    for (const ir::Dim& d : *t.shape) n *= FlopDim(d);
  return n;
}

void CheckFloat(DType dtype, const char* what) {
  KILN_CHECK(IsFloatingPoint(dtype), what, " must be a floating-point tensor, got ",
             DTypeName(dtype));
}

void CheckSameDType(const InferContext& ctx, int i, int reference) {
  KILN_CHECK(ctx.input_type(i).dtype == ctx.input_type(reference).dtype, "input ", i, " is ",
             DTypeName(ctx.input_type(i).dtype), " but input ", reference, " is ",
             DTypeName(ctx.input_type(reference).dtype));
}

// The data input of a conv/pool op is N, C, spatial...
void CheckSpatialRank(const ir::TensorType& x) {
  KILN_CHECK(x.rank() >= 3, "input must have rank >= 3 (N, C, spatial...), got ", x.ToString());
}

// Checks a per-channel parameter (bias, scale, mean...) of `channels` entries.
void CheckChannelVector(const InferContext& ctx, int i, const char* what,
                        const ir::Dim& channels) {
  if (!ctx.has_input(i)) return;
  const ir::TensorType& t = ctx.input_type(i);
  if (!t.has_rank()) return;
  KILN_CHECK(t.rank() == 1, what, " must be 1-D, got ", t.ToString());
  const ir::Dim& d = (*t.shape)[0];
  KILN_CHECK(!d.is_known() || !channels.is_known() || d.value == channels.value, what, " has ",
             d.value, " entries but there are ", channels.value, " channels");
}

// Spatial kernel sizes from the weight (-1 unknown), checked against kernel_shape.
std::vector<int64_t> KernelSizes(const InferContext& ctx, const ir::TensorType& w) {
  std::vector<int64_t> kernel = SizesFrom(*w.shape, 2);
  if (!ctx.attrs().has("kernel_shape")) return kernel;
  std::vector<int64_t> ks = ctx.attrs().GetInts("kernel_shape");
  KILN_CHECK(ks.size() == kernel.size(), "kernel_shape has ", ks.size(), " values, expected ",
             kernel.size());
  for (size_t i = 0; i < ks.size(); ++i)
    KILN_CHECK(kernel[i] < 0 || kernel[i] == ks[i], "kernel_shape ", DimsToString(ks),
               " does not match weight ", w.ToString());
  return ks;
}

// ---- Conv / ConvTranspose ----

void InferConv(InferContext& ctx) {
  const ir::TensorType& x = ctx.input_type(0);
  const ir::TensorType& w = ctx.input_type(1);
  CheckFloat(x.dtype, "Conv input X");
  CheckSameDType(ctx, 1, 0);
  const int64_t group = ctx.attrs().GetInt("group", 1);
  KILN_CHECK(group >= 1, "group must be >= 1, got ", group);
  if (!x.has_rank() || !w.has_rank()) {
    ctx.set_output(0, {x.dtype, std::nullopt});
    return;
  }
  CheckSpatialRank(x);
  KILN_CHECK(w.rank() == x.rank(), "weight ", w.ToString(), " must have the rank of input ",
             x.ToString());
  const ir::Shape& xs = *x.shape;
  const ir::Shape& ws = *w.shape;
  if (xs[1].is_known() && ws[1].is_known())
    KILN_CHECK(xs[1].value == ws[1].value * group, "input has ", xs[1].value,
               " channels but weight ", w.ToString(), " with group ", group, " expects ",
               ws[1].value * group);
  if (ws[0].is_known())
    KILN_CHECK(ws[0].value % group == 0, "weight has ", ws[0].value,
               " output channels, not divisible by group ", group);
  CheckChannelVector(ctx, 2, "bias", ws[0]);
  nn::WindowGeometry g =
      nn::ComputeWindowGeometry(ctx.attrs(), SizesFrom(xs, 2), KernelSizes(ctx, w), false);
  ir::Shape out = {xs[0], ws[0]};
  for (int64_t o : g.output) out.push_back(DimOf(o));
  ctx.set_output(0, x.dtype, out);
}

double ConvFlops(const ir::Node&, const std::vector<ir::TensorType>& in,
                 const std::vector<ir::TensorType>& out) {
  if (in.size() < 2 || out.empty() || !in[1].has_rank() || in[1].rank() < 1) return 0;
  // Each output element takes C/group * kernel MACs: weight numel / M.
  const double macs_per_output = FlopNumel(in[1]) / FlopDim((*in[1].shape)[0]);
  return 2.0 * FlopNumel(out[0]) * macs_per_output;
}

void InferConvTranspose(InferContext& ctx) {
  const ir::TensorType& x = ctx.input_type(0);
  const ir::TensorType& w = ctx.input_type(1);
  CheckFloat(x.dtype, "ConvTranspose input X");
  CheckSameDType(ctx, 1, 0);
  const int64_t group = ctx.attrs().GetInt("group", 1);
  KILN_CHECK(group >= 1, "group must be >= 1, got ", group);
  if (!x.has_rank() || !w.has_rank()) {
    ctx.set_output(0, {x.dtype, std::nullopt});
    return;
  }
  CheckSpatialRank(x);
  KILN_CHECK(w.rank() == x.rank(), "weight ", w.ToString(), " must have the rank of input ",
             x.ToString());
  const ir::Shape& xs = *x.shape;
  const ir::Shape& ws = *w.shape;
  if (xs[1].is_known() && ws[0].is_known())
    KILN_CHECK(xs[1].value == ws[0].value, "input has ", xs[1].value, " channels but weight ",
               w.ToString(), " expects ", ws[0].value);
  if (ws[0].is_known())
    KILN_CHECK(ws[0].value % group == 0, "weight has ", ws[0].value,
               " input channels, not divisible by group ", group);
  const ir::Dim out_channels = ws[1].is_known() ? ir::Dim::Known(ws[1].value * group)
                                                : ir::Dim::Unknown();
  CheckChannelVector(ctx, 2, "bias", out_channels);
  nn::WindowGeometry g =
      nn::ComputeConvTransposeGeometry(ctx.attrs(), SizesFrom(xs, 2), KernelSizes(ctx, w));
  ir::Shape out = {xs[0], out_channels};
  for (int64_t o : g.output) out.push_back(DimOf(o));
  ctx.set_output(0, x.dtype, out);
}

double ConvTransposeFlops(const ir::Node&, const std::vector<ir::TensorType>& in,
                          const std::vector<ir::TensorType>&) {
  if (in.size() < 2 || !in[0].has_rank() || !in[1].has_rank() || in[1].rank() < 1) return 0;
  // Every input element scatters into (M/group) * kernel outputs: weight numel / C.
  return 2.0 * FlopNumel(in[0]) * FlopNumel(in[1]) / FlopDim((*in[1].shape)[0]);
}

// ---- Pooling ----

bool IsMaxPoolType(DType d) {
  return IsFloatingPoint(d) || d == DType::kInt8 || d == DType::kUInt8;
}

void InferPool(InferContext& ctx, bool is_max) {
  const ir::TensorType& x = ctx.input_type(0);
  if (is_max) {
    KILN_CHECK(IsMaxPoolType(x.dtype), "MaxPool input must be floating-point, int8 or uint8, got ",
               DTypeName(x.dtype));
  } else {
    CheckFloat(x.dtype, "AveragePool input X");
  }
  const std::vector<int64_t> kernel = ctx.attrs().GetInts("kernel_shape");
  for (int64_t k : kernel) KILN_CHECK(k >= 1, "kernel_shape has invalid value ", k);
  const bool ceil_mode = ctx.attrs().GetInt("ceil_mode", 0) != 0;
  const bool has_indices = is_max && ctx.num_outputs() > 1 && ctx.node().outputs[1] != nullptr;
  if (!x.has_rank()) {
    ctx.set_output(0, {x.dtype, std::nullopt});
    if (has_indices) ctx.set_output(1, {DType::kInt64, std::nullopt});
    return;
  }
  CheckSpatialRank(x);
  KILN_CHECK(static_cast<int>(kernel.size()) == x.rank() - 2, "kernel_shape has ", kernel.size(),
             " values but the input ", x.ToString(), " has ", x.rank() - 2, " spatial dims");
  if (is_max) {
    const int64_t order = ctx.attrs().GetInt("storage_order", 0);
    KILN_CHECK(order == 0 || order == 1, "storage_order must be 0 or 1, got ", order);
  }
  nn::WindowGeometry g =
      nn::ComputeWindowGeometry(ctx.attrs(), SizesFrom(*x.shape, 2), kernel, ceil_mode);
  ir::Shape out = {(*x.shape)[0], (*x.shape)[1]};
  for (int64_t o : g.output) out.push_back(DimOf(o));
  ctx.set_output(0, x.dtype, out);
  if (has_indices) ctx.set_output(1, DType::kInt64, out);
}

void InferGlobalPool(InferContext& ctx, bool is_max) {
  const ir::TensorType& x = ctx.input_type(0);
  if (is_max) {
    KILN_CHECK(IsMaxPoolType(x.dtype), "GlobalMaxPool input must be floating-point, got ",
               DTypeName(x.dtype));
  } else {
    CheckFloat(x.dtype, "GlobalAveragePool input X");
  }
  if (!x.has_rank()) {
    ctx.set_output(0, {x.dtype, std::nullopt});
    return;
  }
  CheckSpatialRank(x);
  ir::Shape out = {(*x.shape)[0], (*x.shape)[1]};
  for (int i = 2; i < x.rank(); ++i) out.push_back(ir::Dim::Known(1));
  ctx.set_output(0, x.dtype, out);
}

// ---- Normalization ----

void InferBatchNorm(InferContext& ctx) {
  const ir::TensorType& x = ctx.input_type(0);
  CheckFloat(x.dtype, "BatchNormalization input X");
  KILN_CHECK(ctx.attrs().GetInt("training_mode", 0) == 0,
             "training_mode=1 is not supported (kiln runs inference only)");
  // Opsets 1-6 default to training mode (batch statistics); only is_test=1 is inference.
  if (ctx.opset() < 7)
    KILN_CHECK(ctx.attrs().GetInt("is_test", 0) != 0,
               "is_test=0 (training mode, the default before opset 7) is not supported: kiln "
               "runs inference only and needs is_test=1");
  for (int i = 1; i < ctx.num_outputs(); ++i)
    KILN_CHECK(ctx.node().outputs[static_cast<size_t>(i)] == nullptr,
               "training-mode outputs (running or saved mean/var) are not supported");
  for (int i = 1; i <= 4; ++i) KILN_CHECK(ctx.has_input(i), "missing required input ", i);
  if (!x.has_rank()) {
    ctx.set_output(0, x);
    return;
  }
  KILN_CHECK(x.rank() >= 2, "input must have rank >= 2 (N, C, ...), got ", x.ToString());
  // Opsets 7-8 with spatial=0 take per-activation parameters shaped like X[1:].
  const bool spatial = ctx.opset() >= 9 || ctx.attrs().GetInt("spatial", 1) != 0;
  if (spatial) {
    static const char* kNames[] = {"", "scale", "B", "mean", "var"};
    for (int i = 1; i <= 4; ++i) CheckChannelVector(ctx, i, kNames[i], (*x.shape)[1]);
  }
  ctx.set_output(0, x);
}

void InferInstanceNorm(InferContext& ctx) {
  const ir::TensorType& x = ctx.input_type(0);
  CheckFloat(x.dtype, "InstanceNormalization input");
  for (int i = 1; i <= 2; ++i) KILN_CHECK(ctx.has_input(i), "missing required input ", i);
  if (!x.has_rank()) {
    ctx.set_output(0, x);
    return;
  }
  KILN_CHECK(x.rank() >= 3, "input must have rank >= 3 (N, C, spatial...), got ", x.ToString());
  CheckChannelVector(ctx, 1, "scale", (*x.shape)[1]);
  CheckChannelVector(ctx, 2, "B", (*x.shape)[1]);
  ctx.set_output(0, x);
}

// ---- Gemm / MatMul / Einsum ----

bool IsGemmType(DType d) {
  return IsFloatingPoint(d) || d == DType::kInt32 || d == DType::kInt64 || d == DType::kUInt32 ||
         d == DType::kUInt64;
}

void InferGemm(InferContext& ctx) {
  const ir::TensorType& a = ctx.input_type(0);
  const ir::TensorType& b = ctx.input_type(1);
  KILN_CHECK(IsGemmType(a.dtype), "Gemm does not support dtype ", DTypeName(a.dtype));
  CheckSameDType(ctx, 1, 0);
  if (ctx.opset() < 11) KILN_CHECK(ctx.has_input(2), "input C is required before opset 11");
  if (ctx.has_input(2)) CheckSameDType(ctx, 2, 0);
  if (!a.has_rank() || !b.has_rank()) {
    ctx.set_output(0, {a.dtype, ir::Shape{ir::Dim::Unknown(), ir::Dim::Unknown()}});
    return;
  }
  KILN_CHECK(a.rank() == 2, "A must be 2-D, got ", a.ToString());
  KILN_CHECK(b.rank() == 2, "B must be 2-D, got ", b.ToString());
  const bool trans_a = ctx.attrs().GetInt("transA", 0) != 0;
  const bool trans_b = ctx.attrs().GetInt("transB", 0) != 0;
  const ir::Dim& m = (*a.shape)[trans_a ? 1 : 0];
  const ir::Dim& ka = (*a.shape)[trans_a ? 0 : 1];
  const ir::Dim& kb = (*b.shape)[trans_b ? 1 : 0];
  const ir::Dim& n = (*b.shape)[trans_b ? 0 : 1];
  KILN_CHECK(!ka.is_known() || !kb.is_known() || ka.value == kb.value, "inner dims differ: A ",
             a.ToString(), (trans_a ? " (transposed)" : ""), " and B ", b.ToString(),
             (trans_b ? " (transposed)" : ""));
  ir::Shape out = {m, n};
  if (ctx.has_input(2) && ctx.input_type(2).has_rank()) {
    // C broadcasts unidirectionally to [M, N].
    const ir::Shape& cs = *ctx.input_type(2).shape;
    KILN_CHECK(cs.size() <= 2, "C must have rank <= 2, got ", ctx.input_type(2).ToString());
    for (size_t i = 0; i < cs.size(); ++i) {
      const ir::Dim& target = out[2 - cs.size() + i];
      KILN_CHECK(!cs[i].is_known() || cs[i].value == 1 || !target.is_known() ||
                     cs[i].value == target.value,
                 "C ", ctx.input_type(2).ToString(), " does not broadcast to [M, N] = ",
                 ir::ShapeToString(out));
    }
  }
  ctx.set_output(0, a.dtype, out);
}

double GemmFlops(const ir::Node& node, const std::vector<ir::TensorType>& in,
                 const std::vector<ir::TensorType>& out) {
  if (in.empty() || out.empty() || !in[0].has_rank() || in[0].rank() != 2) return 0;
  const bool trans_a = node.attrs.GetInt("transA", 0) != 0;
  return 2.0 * FlopNumel(out[0]) * FlopDim((*in[0].shape)[trans_a ? 0 : 1]);
}

void InferMatMul(InferContext& ctx) {
  const ir::TensorType& a = ctx.input_type(0);
  const ir::TensorType& b = ctx.input_type(1);
  KILN_CHECK(IsGemmType(a.dtype), "MatMul does not support dtype ", DTypeName(a.dtype));
  CheckSameDType(ctx, 1, 0);
  if (!a.has_rank() || !b.has_rank()) {
    ctx.set_output(0, {a.dtype, std::nullopt});
    return;
  }
  KILN_CHECK(a.rank() >= 1 && b.rank() >= 1, "MatMul operands must have rank >= 1, got ",
             a.ToString(), " and ", b.ToString());
  ir::Shape as = *a.shape, bs = *b.shape;
  const bool a_vector = as.size() == 1, b_vector = bs.size() == 1;
  if (a_vector) as.insert(as.begin(), ir::Dim::Known(1));
  if (b_vector) bs.push_back(ir::Dim::Known(1));
  const ir::Dim& ka = as[as.size() - 1];
  const ir::Dim& kb = bs[bs.size() - 2];
  KILN_CHECK(!ka.is_known() || !kb.is_known() || ka.value == kb.value, "inner dims differ: ",
             a.ToString(), " x ", b.ToString());
  ir::Shape out = BroadcastShapes(ir::Shape(as.begin(), as.end() - 2),
                                  ir::Shape(bs.begin(), bs.end() - 2), ctx.node());
  if (!a_vector) out.push_back(as[as.size() - 2]);
  if (!b_vector) out.push_back(bs[bs.size() - 1]);
  ctx.set_output(0, a.dtype, out);
}

double MatMulFlops(const ir::Node&, const std::vector<ir::TensorType>& in,
                   const std::vector<ir::TensorType>& out) {
  if (in.empty() || out.empty() || !in[0].has_rank() || in[0].rank() < 1) return 0;
  return 2.0 * FlopNumel(out[0]) * FlopDim(in[0].shape->back());
}

// Per label, the size the operands agree on (size-1 dims broadcast); -1 when unknown.
std::vector<int64_t> EinsumLabelSizes(const nn::EinsumSpec& spec, const InferContext& ctx) {
  std::vector<int64_t> sizes(static_cast<size_t>(spec.num_labels), -2);  // -2: not seen yet.
  for (size_t t = 0; t < spec.inputs.size(); ++t) {
    const ir::Shape& shape = *ctx.input_type(static_cast<int>(t)).shape;
    for (size_t i = 0; i < spec.inputs[t].size(); ++i) {
      int64_t& s = sizes[static_cast<size_t>(spec.inputs[t][i])];
      const int64_t d = shape[i].is_known() ? shape[i].value : -1;
      if (s == -2) {
        s = d;  // First sighting.
      } else if (d == -1) {
        if (s == 1) s = -1;  // A known size > 1 wins over an unknown one.
      } else if (d != 1) {   // Size-1 dims broadcast.
        KILN_CHECK(s == -1 || s == 1 || s == d, "Einsum operand ", t, " has size ", d,
                   " for a label of size ", s);
        s = d;
      }
    }
  }
  return sizes;
}

void InferEinsum(InferContext& ctx) {
  const std::string equation = ctx.attrs().GetString("equation");
  KILN_CHECK(ctx.num_inputs() >= 1, "Einsum needs at least one input");
  const DType dtype = ctx.input_type(0).dtype;
  KILN_CHECK(dtype != DType::kBool && dtype != DType::kString, "Einsum does not support dtype ",
             DTypeName(dtype));
  std::vector<int> ranks;
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    if (i > 0) CheckSameDType(ctx, i, 0);
    const ir::TensorType& t = ctx.input_type(i);
    if (!t.has_rank()) {
      ctx.set_output(0, {dtype, std::nullopt});
      return;
    }
    ranks.push_back(t.rank());
  }
  nn::EinsumSpec spec = nn::ParseEinsum(equation, ranks);
  std::vector<int64_t> sizes = EinsumLabelSizes(spec, ctx);
  ir::Shape out;
  for (int l : spec.output) out.push_back(DimOf(sizes[static_cast<size_t>(l)]));
  ctx.set_output(0, dtype, out);
}

double EinsumFlops(const ir::Node& node, const std::vector<ir::TensorType>& in,
                   const std::vector<ir::TensorType>&) {
  // 2 * the product of every label's size: exact for one pairwise contraction.
  std::vector<int> ranks;
  for (const ir::TensorType& t : in) {
    if (!t.has_rank()) return 0;
    ranks.push_back(t.rank());
  }
  nn::EinsumSpec spec;
  try {
    spec = nn::ParseEinsum(node.attrs.GetString("equation", ""), ranks);
  } catch (const Error&) {
    return 0;
  }
  std::vector<double> sizes(static_cast<size_t>(spec.num_labels), 1.0);
  for (size_t t = 0; t < spec.inputs.size(); ++t)
    for (size_t i = 0; i < spec.inputs[t].size(); ++i) {
      double& s = sizes[static_cast<size_t>(spec.inputs[t][i])];
      s = std::max(s, FlopDim((*in[t].shape)[i]));
    }
  double product = 1;
  for (double s : sizes) product *= s;
  return (in.size() >= 2 ? 2.0 : 1.0) * product;
}

}  // namespace

void RegisterNnOps(OpRegistry& registry) {
  // Conv, ConvTranspose, pools, InstanceNormalization, Gemm and MatMul mean the
  // same since opset 1: later versions only added attributes whose defaults
  // are the old behaviour, or (Gemm-7) relaxed Gemm-6's `broadcast` flag into
  // the unidirectional broadcast kiln always applies.
  OpDef& conv = registry.Define("Conv");
  conv.min_opset = 1;
  conv.infer = InferConv;
  conv.flops = ConvFlops;

  OpDef& conv_transpose = registry.Define("ConvTranspose");
  conv_transpose.min_opset = 1;
  conv_transpose.infer = InferConvTranspose;
  conv_transpose.flops = ConvTransposeFlops;

  OpDef& max_pool = registry.Define("MaxPool");
  max_pool.min_opset = 1;
  max_pool.infer = [](InferContext& ctx) { InferPool(ctx, true); };
  OpDef& average_pool = registry.Define("AveragePool");
  average_pool.min_opset = 1;
  average_pool.infer = [](InferContext& ctx) { InferPool(ctx, false); };
  OpDef& global_average_pool = registry.Define("GlobalAveragePool");
  global_average_pool.min_opset = 1;
  global_average_pool.infer = [](InferContext& ctx) { InferGlobalPool(ctx, false); };
  OpDef& global_max_pool = registry.Define("GlobalMaxPool");
  global_max_pool.min_opset = 1;
  global_max_pool.infer = [](InferContext& ctx) { InferGlobalPool(ctx, true); };

  // Before opset 7, BatchNormalization's is_test picks inference (see InferBatchNorm).
  OpDef& batch_norm = registry.Define("BatchNormalization");
  batch_norm.min_opset = 1;
  batch_norm.infer = InferBatchNorm;
  OpDef& instance_norm = registry.Define("InstanceNormalization");
  instance_norm.min_opset = 1;
  instance_norm.infer = InferInstanceNorm;

  OpDef& gemm = registry.Define("Gemm");
  gemm.min_opset = 1;
  gemm.infer = InferGemm;
  gemm.flops = GemmFlops;

  OpDef& matmul = registry.Define("MatMul");
  matmul.min_opset = 1;
  matmul.infer = InferMatMul;
  matmul.flops = MatMulFlops;

  OpDef& einsum = registry.Define("Einsum");
  einsum.min_opset = 12;  // Einsum first appeared in opset 12.
  einsum.infer = InferEinsum;
  einsum.flops = EinsumFlops;
}

}  // namespace kiln
