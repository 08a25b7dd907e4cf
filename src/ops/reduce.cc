// Reductions, normalizations and the softmax family: opset ranges, type and
// shape inference, FLOP counts. Kernels are in cpu/reduce.cc.
#include "ops/reduce.h"

#include <algorithm>

#include "ops/registry.h"

namespace kiln {

ReduceAxesArg ReadReduceAxes(const ir::Node& node, int axes_input_opset, bool has_axes_input,
                             const Tensor* axes_value) {
  ReduceAxesArg arg;
  if (node.opset < axes_input_opset) {
    KILN_CHECK(!has_axes_input, node.op_type, " takes axes as an attribute before opset ",
               axes_input_opset, ", but this opset-", node.opset, " node has an axes input");
    arg.axes = node.attrs.GetInts("axes", {});
    return arg;
  }
  arg.noop_with_empty_axes = node.attrs.GetInt("noop_with_empty_axes", 0) != 0;
  if (has_axes_input) {
    if (axes_value == nullptr) {
      arg.known = false;
      return arg;
    }
    KILN_CHECK(IsInteger(axes_value->dtype()) && axes_value->rank() <= 1,
               "axes input must be a 1-D integer tensor, got ", axes_value->TypeString());
    arg.axes = axes_value->ToInt64Vector();
  } else {
    // Not valid ONNX from this opset on, but unambiguous: accept the attribute.
    arg.axes = node.attrs.GetInts("axes", {});
  }
  return arg;
}

std::vector<bool> ReducedAxesMask(const std::vector<int64_t>& axes, bool noop_with_empty_axes,
                                  int rank) {
  if (axes.empty()) return std::vector<bool>(static_cast<size_t>(rank), !noop_with_empty_axes);
  std::vector<bool> mask(static_cast<size_t>(rank), false);
  for (int64_t axis : axes) {
    KILN_CHECK(axis >= -rank && axis < rank, "axis ", axis, " is out of range for rank ", rank);
    size_t a = static_cast<size_t>(axis < 0 ? axis + rank : axis);
    KILN_CHECK(!mask[a], "axis ", axis, " is listed twice in axes");
    mask[a] = true;
  }
  return mask;
}

int ReduceAxesInputOpset(const std::string& op_type) { return op_type == "ReduceSum" ? 13 : 18; }

namespace {

// Element count of a concrete type, 0 when unknown (for FLOP estimates).
double NumElements(const ir::TensorType& type) {
  if (!type.has_rank() || !ir::IsFullyKnown(*type.shape)) return 0;
  return static_cast<double>(Product(ir::KnownDims(*type.shape)));
}

// FLOPs proportional to the first input's size.
FlopsFn InputProportionalFlops(double per_element) {
  return [per_element](const ir::Node&, const std::vector<ir::TensorType>& inputs,
                       const std::vector<ir::TensorType>&) {
    return inputs.empty() ? 0.0 : per_element * NumElements(inputs[0]);
  };
}

void CheckFloatInput(const InferContext& ctx, int i) {
  DType dtype = ctx.input_type(i).dtype;
  KILN_CHECK(IsFloatingPoint(dtype), "input ", i, " must be a floating-point tensor, got ",
             DTypeName(dtype));
}

void CheckNumericInput(const InferContext& ctx, int i, bool allow_bool) {
  DType dtype = ctx.input_type(i).dtype;
  KILN_CHECK(IsFloatingPoint(dtype) || IsInteger(dtype) || (allow_bool && dtype == DType::kBool),
             "input ", i, " has unsupported dtype ", DTypeName(dtype));
}

// Reduce*: data (+ axes) -> reduced. Reduced axes become 1 (keepdims) or
// disappear; symbolic kept dims carry over.
void InferReduce(InferContext& ctx, bool allow_bool) {
  CheckNumericInput(ctx, 0, allow_bool);
  const ir::TensorType& data = ctx.input_type(0);
  const ir::Node& node = ctx.node();
  bool keepdims = ctx.attrs().GetInt("keepdims", 1) != 0;
  ReduceAxesArg arg = ReadReduceAxes(node, ReduceAxesInputOpset(node.op_type), ctx.has_input(1),
                                     ctx.input_value(1));
  if (!data.has_rank()) {
    bool reduces_everything = arg.known && arg.axes.empty() && !arg.noop_with_empty_axes;
    if (reduces_everything && !keepdims) {
      ctx.set_output(0, data.dtype, ir::Shape{});
    } else {
      ctx.set_output(0, {data.dtype, std::nullopt});
    }
    return;
  }
  const ir::Shape& in = *data.shape;
  if (!arg.known) {
    if (!keepdims) {
      ctx.set_output(0, {data.dtype, std::nullopt});
      return;
    }
    // Each dim either stays or becomes 1, so only dims already 1 are certain.
    ir::Shape out;
    for (const ir::Dim& d : in)
      out.push_back(d.is_known() && d.value == 1 ? d : ir::Dim::Unknown());
    ctx.set_output(0, data.dtype, out);
    return;
  }
  std::vector<bool> mask = ReducedAxesMask(arg.axes, arg.noop_with_empty_axes, data.rank());
  ir::Shape out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!mask[i]) {
      out.push_back(in[i]);
    } else if (keepdims) {
      out.push_back(ir::Dim::Known(1));
    }
  }
  ctx.set_output(0, data.dtype, out);
}

// ArgMax/ArgMin: int64 indices along one axis.
void InferArgReduce(InferContext& ctx) {
  CheckNumericInput(ctx, 0, /*allow_bool=*/false);
  const ir::TensorType& data = ctx.input_type(0);
  bool keepdims = ctx.attrs().GetInt("keepdims", 1) != 0;
  int64_t select_last = ctx.attrs().GetInt("select_last_index", 0);
  KILN_CHECK(select_last == 0 || select_last == 1, "select_last_index must be 0 or 1, got ",
             select_last);
  if (!data.has_rank()) {
    ctx.set_output(0, {DType::kInt64, std::nullopt});
    return;
  }
  KILN_CHECK(data.rank() >= 1, "input must have rank >= 1");
  int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  ir::Shape out;
  for (int i = 0; i < data.rank(); ++i) {
    if (i != axis) {
      out.push_back((*data.shape)[static_cast<size_t>(i)]);
    } else if (keepdims) {
      out.push_back(ir::Dim::Known(1));
    }
  }
  ctx.set_output(0, DType::kInt64, out);
}

// Softmax, LogSoftmax, Hardmax: same type and shape; the axis must exist.
void InferSoftmaxLike(InferContext& ctx) {
  CheckFloatInput(ctx, 0);
  const ir::TensorType& x = ctx.input_type(0);
  if (x.has_rank()) {
    int64_t default_axis = ctx.opset() >= 13 ? -1 : 1;
    NormalizeAxis(ctx.attrs().GetInt("axis", default_axis), x.rank(), ctx.node());
  }
  ctx.set_output(0, x);
}

// Checks that a Scale/B shape broadcasts to the normalized dims `norm`
// (a trailing part of X's shape), where both are known.
void CheckBroadcastsTo(const ir::TensorType& param, const ir::Shape& norm, const char* what) {
  if (!param.has_rank()) return;
  const ir::Shape& p = *param.shape;
  size_t leading = p.size() > norm.size() ? p.size() - norm.size() : 0;
  for (size_t i = 0; i < leading; ++i)
    KILN_CHECK(!p[i].is_known() || p[i].value == 1, what, " shape ", ir::ShapeToString(p),
               " does not broadcast to the normalized shape ", ir::ShapeToString(norm));
  for (size_t i = leading; i < p.size(); ++i) {
    const ir::Dim& pd = p[i];
    const ir::Dim& nd = norm[norm.size() - (p.size() - i)];
    bool ok = !pd.is_known() || !nd.is_known() || pd.value == 1 || pd.value == nd.value;
    KILN_CHECK(ok, what, " shape ", ir::ShapeToString(p),
               " does not broadcast to the normalized shape ", ir::ShapeToString(norm));
  }
}

// LayerNormalization: Y like X; Mean and InvStdDev keep X's leading dims and
// have 1 in the normalized ones, typed by stash_type.
void InferLayerNorm(InferContext& ctx) {
  CheckFloatInput(ctx, 0);
  KILN_CHECK(ctx.has_input(1), "LayerNormalization requires the Scale input");
  const ir::TensorType& x = ctx.input_type(0);
  KILN_CHECK(ctx.input_type(1).dtype == x.dtype, "Scale dtype ", DTypeName(ctx.input_type(1).dtype),
             " differs from X dtype ", DTypeName(x.dtype));
  if (ctx.has_input(2))
    KILN_CHECK(ctx.input_type(2).dtype == x.dtype, "B dtype ", DTypeName(ctx.input_type(2).dtype),
               " differs from X dtype ", DTypeName(x.dtype));
  DType stash = static_cast<DType>(ctx.attrs().GetInt("stash_type", 1));
  KILN_CHECK(IsFloatingPoint(stash), "stash_type must name a floating-point type, got ",
             static_cast<int>(stash));
  ctx.set_output(0, x);
  if (!x.has_rank()) {
    for (int i = 1; i < std::min(ctx.num_outputs(), 3); ++i)
      ctx.set_output(i, {stash, std::nullopt});
    return;
  }
  KILN_CHECK(x.rank() >= 1, "X must have rank >= 1");
  int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), x.rank(), ctx.node());
  const ir::Shape& xs = *x.shape;
  ir::Shape norm(xs.begin() + axis, xs.end());
  CheckBroadcastsTo(ctx.input_type(1), norm, "Scale");
  if (ctx.has_input(2)) CheckBroadcastsTo(ctx.input_type(2), norm, "B");
  ir::Shape stats(xs.begin(), xs.begin() + axis);
  stats.resize(xs.size(), ir::Dim::Known(1));
  for (int i = 1; i < std::min(ctx.num_outputs(), 3); ++i) ctx.set_output(i, stash, stats);
}

// GroupNormalization: X [N, C, ...]; scale/bias hold one value per group
// (opset 18) or per channel (opset 21).
void InferGroupNorm(InferContext& ctx) {
  CheckFloatInput(ctx, 0);
  const ir::TensorType& x = ctx.input_type(0);
  int64_t groups = ctx.attrs().GetInt("num_groups");
  KILN_CHECK(groups >= 1, "num_groups must be >= 1, got ", groups);
  KILN_CHECK(ctx.has_input(1) && ctx.has_input(2),
             "GroupNormalization requires the scale and bias inputs");
  if (x.has_rank()) {
    KILN_CHECK(x.rank() >= 2, "X must have rank >= 2 (N, C, ...), got ", x.ToString());
    const ir::Dim& channels = (*x.shape)[1];
    if (channels.is_known()) {
      KILN_CHECK(channels.value % groups == 0, "channel count ", channels.value,
                 " is not divisible by num_groups ", groups);
      int64_t expected = ctx.opset() >= 21 ? channels.value : groups;
      for (int i = 1; i <= 2; ++i) {
        const ir::TensorType& p = ctx.input_type(i);
        if (!p.has_rank() || !ir::IsFullyKnown(*p.shape)) continue;
        KILN_CHECK(Product(ir::KnownDims(*p.shape)) == expected, i == 1 ? "scale" : "bias",
                   " has shape ", p.ToString(), " but opset ", ctx.opset(), " expects ", expected,
                   ctx.opset() >= 21 ? " values (one per channel)" : " values (one per group)");
      }
    }
  }
  ctx.set_output(0, x);
}

void InferLpNorm(InferContext& ctx) {
  CheckFloatInput(ctx, 0);
  const ir::TensorType& x = ctx.input_type(0);
  int64_t p = ctx.attrs().GetInt("p", 2);
  KILN_CHECK(p == 1 || p == 2, "p must be 1 or 2, got ", p);
  if (x.has_rank()) NormalizeAxis(ctx.attrs().GetInt("axis", -1), x.rank(), ctx.node());
  ctx.set_output(0, x);
}

void InferMeanVarianceNorm(InferContext& ctx) {
  CheckFloatInput(ctx, 0);
  const ir::TensorType& x = ctx.input_type(0);
  if (x.has_rank()) {
    ReducedAxesMask(ctx.attrs().GetInts("axes", {0, 2, 3}), false, x.rank());
  }
  ctx.set_output(0, x);
}

}  // namespace

void RegisterReduceOps(OpRegistry& registry) {
  // Reductions. ReduceMax/ReduceMin also accept bool (opset 20) and 8-bit ints.
  const char* kReduceOps[] = {"ReduceSum", "ReduceMean",   "ReduceProd",      "ReduceL1",
                              "ReduceL2",  "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};
  // Every family member below has kept its semantics since opset 1 (axes and
  // axis were attributes; the softmax family's pre-13 coerce-to-2-D is handled).
  for (const char* name : kReduceOps) {
    OpDef& def = registry.Define(name);
    def.min_opset = 1;
    def.infer = [](InferContext& ctx) { InferReduce(ctx, /*allow_bool=*/false); };
    def.flops = InputProportionalFlops(1);
  }
  for (const char* name : {"ReduceMax", "ReduceMin"}) {
    OpDef& def = registry.Define(name);
    def.min_opset = 1;
    def.infer = [](InferContext& ctx) { InferReduce(ctx, /*allow_bool=*/true); };
    def.flops = InputProportionalFlops(1);
  }
  for (const char* name : {"ArgMax", "ArgMin"}) {
    OpDef& def = registry.Define(name);
    def.min_opset = 1;
    def.infer = InferArgReduce;
    def.flops = InputProportionalFlops(1);
  }

  // Softmax family: max, subtract, exp, sum, scale.
  for (const char* name : {"Softmax", "LogSoftmax", "Hardmax"}) {
    OpDef& def = registry.Define(name);
    def.min_opset = 1;
    def.infer = InferSoftmaxLike;
    def.flops = InputProportionalFlops(5);
  }

  // Normalizations. LayerNormalization is an opset-17 op, but kiln accepts it
  // in older models too (hand-built graphs and fusion passes emit it).
  OpDef& layer_norm = registry.Define("LayerNormalization");
  layer_norm.infer = InferLayerNorm;
  layer_norm.flops = InputProportionalFlops(8);

  OpDef& group_norm = registry.Define("GroupNormalization");
  group_norm.min_opset = 18;
  group_norm.infer = InferGroupNorm;
  group_norm.flops = InputProportionalFlops(8);

  OpDef& lp_norm = registry.Define("LpNormalization");
  lp_norm.min_opset = 1;
  lp_norm.infer = InferLpNorm;
  lp_norm.flops = InputProportionalFlops(3);

  OpDef& mvn = registry.Define("MeanVarianceNormalization");
  mvn.min_opset = 9;
  mvn.infer = InferMeanVarianceNorm;
  mvn.flops = InputProportionalFlops(6);
}

}  // namespace kiln
