// GPU layers for reductions (Reduce*, ArgMax/ArgMin), the softmax family,
// LpNormalization and the normalizations (LayerNormalization,
// GroupNormalization, InstanceNormalization, MeanVarianceNormalization).
// Semantics follow the CPU kernels in src/cpu/reduce.cc and src/cpu/nn.cc;
// axis handling reuses ops/reduce.h. Kernels: cuda/kernels/reduce.cu.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda/kernels/reduce.h"
#include "cuda/layer.h"
#include "ops/reduce.h"
#include "ops/registry.h"

namespace kiln::gpu {

void RegisterPoolGpuLayers(GpuLayerRegistry& registry);  // layers/pool.cc

namespace {

using kernels::AxisOp;
using kernels::AxisView;
using kernels::IndexMap;
using kernels::ReduceOp;
using kernels::ReducePlan;

bool HasInput(const LayerInit& init, size_t i) {
  return i < init.inputs.size() && init.inputs[i].defined();
}

bool HasOutput(const LayerInit& init, size_t i) {
  return i < init.outputs.size() && init.outputs[i].defined() && i < init.node.outputs.size() &&
         init.node.outputs[i] != nullptr;
}

void CheckRowMajor(const LayerInit& init) {
  for (const TensorDesc& d : init.inputs)
    KILN_LAYER_CHECK(init, !d.defined() || d.layout == Layout::kRowMajor,
                     "expects row-major inputs, got ", d.ToString());
}

bool IsGpuFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

void CheckFloatInput(const LayerInit& init, size_t i) {
  KILN_LAYER_CHECK(init, HasInput(init, i), "missing input ", i);
  KILN_LAYER_CHECK(init, IsGpuFloat(init.inputs[i].dtype), "input ", i, " dtype ",
                   DTypeName(init.inputs[i].dtype),
                   " is not supported (float32, float16 and bfloat16 are)");
}

// Fills an IndexMap from groups; throws when there are too many.
IndexMap MakeIndexMap(const LayerInit& init, const std::vector<int64_t>& sizes,
                      const std::vector<int64_t>& strides) {
  KILN_LAYER_CHECK(init, sizes.size() <= static_cast<size_t>(kernels::kMaxIndexDims),
                   "too many dims after merging (", sizes.size(), ", at most ",
                   kernels::kMaxIndexDims, " are supported)");
  IndexMap m;
  m.rank = static_cast<int>(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    m.sizes[i] = sizes[i];
    m.strides[i] = strides[i];
  }
  return m;
}

// Views dims (row-major) as kept x reduced index spaces. Size-1 axes are
// dropped and adjacent axes that are all kept or all reduced are merged.
ReducePlan MakeReducePlan(const LayerInit& init, const std::vector<int64_t>& dims,
                          const std::vector<bool>& reduced) {
  std::vector<int64_t> sizes;
  std::vector<bool> group_reduced;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 1) continue;
    if (!sizes.empty() && group_reduced.back() == reduced[i]) {
      sizes.back() *= dims[i];
    } else {
      sizes.push_back(dims[i]);
      group_reduced.push_back(reduced[i]);
    }
  }
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t g = sizes.size(); g-- > 1;) strides[g - 1] = strides[g] * sizes[g];
  std::vector<int64_t> kept_sizes, kept_strides, red_sizes, red_strides;
  ReducePlan plan;
  plan.outputs = 1;
  plan.count = 1;
  for (size_t g = 0; g < sizes.size(); ++g) {
    if (group_reduced[g]) {
      red_sizes.push_back(sizes[g]);
      red_strides.push_back(strides[g]);
      plan.count *= sizes[g];
    } else {
      kept_sizes.push_back(sizes[g]);
      kept_strides.push_back(strides[g]);
      plan.outputs *= sizes[g];
    }
  }
  plan.kept = MakeIndexMap(init, kept_sizes, kept_strides);
  plan.reduced = MakeIndexMap(init, red_sizes, red_strides);
  plan.inner_reduced = !sizes.empty() && group_reduced.back();
  return plan;
}

// ---------------------------------------------------------------------------
// Reduce*

class ReduceLayer : public Layer {
 public:
  ReduceLayer(ReduceOp op, DType dtype, ReducePlan plan)
      : op_(op), dtype_(dtype), plan_(plan) {}
  bool ReadsInputOnDevice(int input) const override { return input == 0; }
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchReduce(op_, dtype_, args.inputs[0], args.outputs[0], plan_, args.stream);
  }

 private:
  ReduceOp op_;
  DType dtype_;
  ReducePlan plan_;
};

std::unique_ptr<Layer> CreateReduce(ReduceOp op, const LayerInit& init) {
  CheckRowMajor(init);
  const ir::Node& node = init.node;
  KILN_LAYER_CHECK(init, HasInput(init, 0), "missing input 0");
  const TensorDesc& x = init.inputs[0];
  KILN_LAYER_CHECK(init, kernels::ReduceSupportsDType(op, x.dtype), "dtype ", DTypeName(x.dtype),
                   " is not supported (float32, float16, bfloat16, int32, int64",
                   (op == ReduceOp::kMax || op == ReduceOp::kMin) ? ", int8, uint8, bool" : "",
                   ")");
  const bool has_axes = HasInput(init, 1);
  const Tensor* axes_value = has_axes && init.constants.size() > 1 ? init.constants[1] : nullptr;
  KILN_LAYER_CHECK(init, !has_axes || axes_value != nullptr,
                   "the axes input must be a constant (engines have static shapes)");
  ReduceAxesArg arg = ReadReduceAxes(node, ReduceAxesInputOpset(node.op_type), has_axes, axes_value);
  KILN_LAYER_CHECK(init, arg.known, "axes input has no value");
  std::vector<bool> mask = ReducedAxesMask(arg.axes, arg.noop_with_empty_axes, x.rank());
  ReducePlan plan = MakeReducePlan(init, x.dims, mask);
  KILN_LAYER_CHECK(init, !init.outputs.empty() && init.outputs[0].numel() == plan.outputs,
                   "output ", init.outputs.empty() ? std::string("?") : init.outputs[0].ToString(),
                   " does not match the reduction of ", x.ToString());
  KILN_LAYER_CHECK(init, init.outputs[0].dtype == x.dtype, "output dtype differs from input");
  return std::make_unique<ReduceLayer>(op, x.dtype, plan);
}

// ---------------------------------------------------------------------------
// ArgMax / ArgMin

AxisView ViewAroundAxis(const std::vector<int64_t>& dims, int axis) {
  size_t a = static_cast<size_t>(axis);
  return {Product(dims, 0, a), dims[a], Product(dims, a + 1)};
}

class ArgReduceLayer : public Layer {
 public:
  ArgReduceLayer(bool is_max, bool select_last, DType dtype, AxisView view)
      : is_max_(is_max), select_last_(select_last), dtype_(dtype), view_(view) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchArgReduce(is_max_, select_last_, dtype_, args.inputs[0],
                             static_cast<int64_t*>(args.outputs[0]), view_, args.stream);
  }

 private:
  bool is_max_, select_last_;
  DType dtype_;
  AxisView view_;
};

std::unique_ptr<Layer> CreateArgReduce(bool is_max, const LayerInit& init) {
  CheckRowMajor(init);
  KILN_LAYER_CHECK(init, HasInput(init, 0), "missing input 0");
  const TensorDesc& x = init.inputs[0];
  KILN_LAYER_CHECK(init, kernels::ArgReduceSupportsDType(x.dtype), "dtype ", DTypeName(x.dtype),
                   " is not supported (float32, float16, bfloat16, int8, uint8, int32, int64)");
  KILN_LAYER_CHECK(init, x.rank() >= 1, "input must have rank >= 1");
  const int axis = NormalizeAxis(init.node.attrs.GetInt("axis", 0), x.rank(), init.node);
  const bool select_last = init.node.attrs.GetInt("select_last_index", 0) != 0;
  AxisView v = ViewAroundAxis(x.dims, axis);
  KILN_LAYER_CHECK(init, v.n > 0 || v.outer * v.inner == 0, "cannot take ", init.node.op_type,
                   " over an empty axis ", axis, " of ", x.ToString());
  KILN_LAYER_CHECK(init, !init.outputs.empty() && init.outputs[0].dtype == DType::kInt64 &&
                             init.outputs[0].numel() == v.outer * v.inner,
                   "unexpected output type");
  return std::make_unique<ArgReduceLayer>(is_max, select_last, x.dtype, v);
}

// ---------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax, LpNormalization

class AxisOpLayer : public Layer {
 public:
  AxisOpLayer(AxisOp op, DType dtype, AxisView view) : op_(op), dtype_(dtype), view_(view) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchAxisOp(op_, dtype_, args.inputs[0], args.outputs[0], view_, args.stream);
  }

 private:
  AxisOp op_;
  DType dtype_;
  AxisView view_;
};

std::unique_ptr<Layer> CreateSoftmaxLike(AxisOp op, const LayerInit& init) {
  CheckRowMajor(init);
  CheckFloatInput(init, 0);
  const TensorDesc& x = init.inputs[0];
  // Before opset 13 these ops flatten the input to 2-D at `axis`.
  const bool legacy = init.node.opset < 13;
  const int axis =
      NormalizeAxis(init.node.attrs.GetInt("axis", legacy ? 1 : -1), x.rank(), init.node);
  AxisView v;
  if (legacy) {
    v = {Product(x.dims, 0, static_cast<size_t>(axis)), Product(x.dims, static_cast<size_t>(axis)),
         1};
  } else {
    v = ViewAroundAxis(x.dims, axis);
  }
  return std::make_unique<AxisOpLayer>(op, x.dtype, v);
}

std::unique_ptr<Layer> CreateLpNorm(const LayerInit& init) {
  CheckRowMajor(init);
  CheckFloatInput(init, 0);
  const TensorDesc& x = init.inputs[0];
  const int axis = NormalizeAxis(init.node.attrs.GetInt("axis", -1), x.rank(), init.node);
  const int64_t p = init.node.attrs.GetInt("p", 2);
  KILN_LAYER_CHECK(init, p == 1 || p == 2, "p must be 1 or 2, got ", p);
  return std::make_unique<AxisOpLayer>(p == 1 ? AxisOp::kLpNorm1 : AxisOp::kLpNorm2, x.dtype,
                                       ViewAroundAxis(x.dims, axis));
}

// ---------------------------------------------------------------------------
// LayerNormalization

// Maps element k of the normalized dims `norm` to an index into a parameter
// of shape `param` that broadcasts to them (rank-0 map when dense).
IndexMap ParamMap(const LayerInit& init, const std::vector<int64_t>& param,
                  const std::vector<int64_t>& norm, const char* what) {
  std::vector<int64_t> dims = param;
  while (dims.size() > norm.size() && dims.front() == 1) dims.erase(dims.begin());
  KILN_LAYER_CHECK(init, dims.size() <= norm.size(), what, " ", DimsToString(param),
                   " does not broadcast to the normalized shape ", DimsToString(norm));
  dims.insert(dims.begin(), norm.size() - dims.size(), 1);
  for (size_t i = 0; i < dims.size(); ++i)
    KILN_LAYER_CHECK(init, dims[i] == norm[i] || dims[i] == 1, what, " ", DimsToString(param),
                     " does not broadcast to the normalized shape ", DimsToString(norm));
  // Equal element counts after broadcasting mean identical row-major order.
  if (Product(param) == Product(norm)) return IndexMap{};
  std::vector<int64_t> strides(dims.size(), 0);
  int64_t stride = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = dims[i] == 1 ? 0 : stride;
    stride *= dims[i];
  }
  return MakeIndexMap(init, norm, strides);
}

class LayerNormLayer : public Layer {
 public:
  LayerNormLayer(DType dtype, DType out_dtype, int64_t rows, int64_t n, float epsilon,
                 IndexMap scale_map, IndexMap bias_map, bool has_bias, bool has_mean,
                 bool has_inv_std)
      : dtype_(dtype), out_dtype_(out_dtype), rows_(rows), n_(n), epsilon_(epsilon),
        scale_map_(scale_map),
        bias_map_(bias_map), has_bias_(has_bias), has_mean_(has_mean),
        has_inv_std_(has_inv_std) {}
  void Enqueue(const LaunchArgs& args) const override {
    float* mean = has_mean_ && args.outputs.size() > 1 ? static_cast<float*>(args.outputs[1])
                                                        : nullptr;
    float* inv_std = has_inv_std_ && args.outputs.size() > 2
                         ? static_cast<float*>(args.outputs[2])
                         : nullptr;
    kernels::LaunchLayerNorm(dtype_, out_dtype_, args.inputs[0], args.inputs[1],
                             has_bias_ ? args.inputs[2] : nullptr, args.outputs[0], mean, inv_std,
                             rows_, n_, epsilon_, scale_map_, bias_map_, args.stream,
                             params_first_);
  }
  // Tactic 1 loads scale and bias before the row's reductions
  // (kernels::LaunchLayerNorm's params_first).
  int NumTactics() const override { return 2; }
  void SetTactic(int tactic) override {
    KILN_CHECK(tactic == 0 || tactic == 1, "LayerNorm tactic ", tactic, " out of range");
    params_first_ = tactic == 1;
  }
  std::string TacticName() const override { return params_first_ ? "params_first" : "default"; }

 private:
  bool params_first_ = false;
  DType dtype_, out_dtype_;
  int64_t rows_, n_;
  float epsilon_;
  IndexMap scale_map_, bias_map_;
  bool has_bias_, has_mean_, has_inv_std_;
};

std::unique_ptr<Layer> CreateLayerNorm(const LayerInit& init) {
  CheckRowMajor(init);
  CheckFloatInput(init, 0);
  CheckFloatInput(init, 1);
  const TensorDesc& x = init.inputs[0];
  KILN_LAYER_CHECK(init, x.rank() >= 1, "X must have rank >= 1");
  const int axis = NormalizeAxis(init.node.attrs.GetInt("axis", -1), x.rank(), init.node);
  const float epsilon = init.node.attrs.GetFloat("epsilon", 1e-5f);
  const std::vector<int64_t> norm(x.dims.begin() + axis, x.dims.end());
  const int64_t rows = Product(x.dims, 0, static_cast<size_t>(axis));
  const int64_t n = Product(norm);
  KILN_LAYER_CHECK(init, init.inputs[1].dtype == x.dtype, "Scale dtype differs from X dtype");
  IndexMap scale_map = ParamMap(init, init.inputs[1].dims, norm, "Scale");
  const bool has_bias = HasInput(init, 2);
  IndexMap bias_map;
  if (has_bias) {
    KILN_LAYER_CHECK(init, init.inputs[2].dtype == x.dtype, "B dtype differs from X dtype");
    bias_map = ParamMap(init, init.inputs[2].dims, norm, "B");
  }
  const bool has_mean = HasOutput(init, 1);
  const bool has_inv_std = HasOutput(init, 2);
  for (size_t i = 1; i <= 2; ++i)
    if (HasOutput(init, i))
      KILN_LAYER_CHECK(init, init.outputs[i].dtype == DType::kFloat32, "output ", i, " has dtype ",
                       DTypeName(init.outputs[i].dtype),
                       "; only stash_type float32 Mean/InvStdDev outputs are supported");
  // Y is X's dtype, or float32 when the builder fused the output cast of a
  // float16/bfloat16 LayerNorm (FuseOutputCasts).
  const DType y_dtype = init.outputs[0].dtype;
  KILN_LAYER_CHECK(init, y_dtype == x.dtype || y_dtype == DType::kFloat32, "Y is ",
                   DTypeName(y_dtype), "; only X's dtype or float32 is supported");
  return std::make_unique<LayerNormLayer>(x.dtype, y_dtype, rows, n, epsilon, scale_map,
                                          bias_map, has_bias, has_mean, has_inv_std);
}

// KilnSumLayerNorm (src/builder/fuse_layernorm.h): inputs scale, bias?,
// indices?, terms...

class SumLayerNormLayer : public Layer {
 public:
  SumLayerNormLayer(DType dtype, kernels::SumTerms terms, bool gather, bool has_bias,
                    int64_t rows, int64_t n, float epsilon)
      : dtype_(dtype), terms_(terms), gather_(gather), has_bias_(has_bias), rows_(rows), n_(n),
        epsilon_(epsilon) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::SumTerms terms = terms_;  // Pointers are bound per launch.
    terms.indices = gather_ ? args.inputs[2] : nullptr;
    for (int k = 0; k < terms.count; ++k) terms.terms[k] = args.inputs[static_cast<size_t>(3 + k)];
    kernels::LaunchSumLayerNorm(dtype_, terms, args.inputs[0], has_bias_ ? args.inputs[1] : nullptr,
                                args.outputs[0], rows_, n_, epsilon_, args.stream);
  }

 private:
  DType dtype_;
  kernels::SumTerms terms_;  // Periods, count, index dtype; pointers set at Enqueue.
  bool gather_, has_bias_;
  int64_t rows_, n_;
  float epsilon_;
};

std::unique_ptr<Layer> CreateSumLayerNorm(const LayerInit& init) {
  CheckRowMajor(init);
  KILN_LAYER_CHECK(init, !init.outputs.empty() && init.outputs[0].defined(), "missing output");
  const TensorDesc& y = init.outputs[0];
  KILN_LAYER_CHECK(init, IsGpuFloat(y.dtype) && y.rank() >= 1, "Y ", y.ToString(),
                   " must be float32, float16 or bfloat16 with rank >= 1");
  const int64_t n = y.dims.back();
  const int64_t rows = y.numel() / std::max<int64_t>(n, 1);
  const int count = static_cast<int>(init.inputs.size()) - 3;
  KILN_LAYER_CHECK(init, count >= 1 && count <= kernels::kMaxSumTerms, "takes 1 to ",
                   kernels::kMaxSumTerms, " terms after scale, bias and indices, got ", count);
  for (size_t i = 0; i < 2; ++i) {
    if (i == 1 && !HasInput(init, 1)) continue;
    CheckFloatInput(init, i);
    KILN_LAYER_CHECK(init, init.inputs[i].dtype == y.dtype && init.inputs[i].numel() == n,
                     i == 0 ? "scale " : "bias ", init.inputs[i].ToString(), " must hold ", n,
                     " ", DTypeName(y.dtype), " values");
  }
  kernels::SumTerms terms;
  terms.count = count;
  const bool gather = HasInput(init, 2);
  if (gather) {
    const TensorDesc& indices = init.inputs[2];
    KILN_LAYER_CHECK(init, indices.dtype == DType::kInt64 || indices.dtype == DType::kInt32,
                     "indices must be int32 or int64, got ", DTypeName(indices.dtype));
    KILN_LAYER_CHECK(init, indices.numel() == rows, "indices ", indices.ToString(),
                     " must hold one index per output row (", rows, ")");
    terms.indices_int64 = indices.dtype == DType::kInt64;
  }
  for (int k = 0; k < count; ++k) {
    const TensorDesc& t = init.inputs[static_cast<size_t>(3 + k)];
    CheckFloatInput(init, static_cast<size_t>(3 + k));
    KILN_LAYER_CHECK(init, t.dtype == y.dtype && t.rank() >= 1 && t.dims.back() == n, "term ", k,
                     " ", t.ToString(), " must be ", DTypeName(y.dtype), " rows of ", n);
    const int64_t term_rows = t.numel() / n;
    if (k == 0 && gather) {
      KILN_LAYER_CHECK(init, t.rank() == 2, "the gathered table ", t.ToString(), " must be 2-D");
      terms.table_rows = term_rows;
    } else {
      KILN_LAYER_CHECK(init, term_rows >= 1 && rows % term_rows == 0, "term ", k, " ",
                       t.ToString(), " does not repeat evenly over ", rows, " rows");
      terms.periods[k] = term_rows;
    }
  }
  const float epsilon = init.node.attrs.GetFloat("epsilon", 1e-5f);
  return std::make_unique<SumLayerNormLayer>(y.dtype, terms, gather, HasInput(init, 1), rows, n,
                                             epsilon);
}

// ---------------------------------------------------------------------------
// GroupNormalization / InstanceNormalization

class GroupNormLayer : public Layer {
 public:
  GroupNormLayer(DType dtype, int64_t batch, int64_t groups, int64_t channels_per_group,
                 int64_t spatial, bool per_channel, float epsilon)
      : dtype_(dtype), batch_(batch), groups_(groups), channels_per_group_(channels_per_group),
        spatial_(spatial), per_channel_(per_channel), epsilon_(epsilon) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchGroupNorm(dtype_, args.inputs[0], args.inputs[1], args.inputs[2],
                             args.outputs[0], batch_, groups_, channels_per_group_, spatial_,
                             per_channel_, epsilon_, args.stream);
  }

 private:
  DType dtype_;
  int64_t batch_, groups_, channels_per_group_, spatial_;
  bool per_channel_;
  float epsilon_;
};

std::unique_ptr<Layer> CreateGroupNorm(const LayerInit& init) {
  CheckRowMajor(init);
  for (size_t i = 0; i < 3; ++i) CheckFloatInput(init, i);
  const TensorDesc& x = init.inputs[0];
  KILN_LAYER_CHECK(init, x.rank() >= 2, "X must have rank >= 2 (N, C, ...), got ", x.ToString());
  const int64_t groups = init.node.attrs.GetInt("num_groups");
  const float epsilon = init.node.attrs.GetFloat("epsilon", 1e-5f);
  const int64_t batch = x.dims[0], channels = x.dims[1];
  KILN_LAYER_CHECK(init, groups >= 1 && channels % groups == 0, "channel count ", channels,
                   " is not divisible by num_groups ", groups);
  // Opset 18: one scale/bias per group; opset 21: one per channel.
  const bool per_channel = init.node.opset >= 21;
  const int64_t params = per_channel ? channels : groups;
  KILN_LAYER_CHECK(init, init.inputs[1].numel() == params && init.inputs[2].numel() == params,
                   "scale ", init.inputs[1].ToString(), " and bias ", init.inputs[2].ToString(),
                   " must hold ", params, per_channel ? " values (one per channel)"
                                                      : " values (one per group)");
  for (size_t i = 1; i <= 2; ++i)
    KILN_LAYER_CHECK(init, init.inputs[i].dtype == x.dtype, "input ", i,
                     " dtype differs from X dtype");
  return std::make_unique<GroupNormLayer>(x.dtype, batch, groups, channels / groups,
                                          Product(x.dims, 2), per_channel, epsilon);
}

std::unique_ptr<Layer> CreateInstanceNorm(const LayerInit& init) {
  CheckRowMajor(init);
  for (size_t i = 0; i < 3; ++i) CheckFloatInput(init, i);
  const TensorDesc& x = init.inputs[0];
  KILN_LAYER_CHECK(init, x.rank() >= 3, "input must have rank >= 3 (N, C, spatial...), got ",
                   x.ToString());
  const float epsilon = init.node.attrs.GetFloat("epsilon", 1e-5f);
  const int64_t batch = x.dims[0], channels = x.dims[1];
  KILN_LAYER_CHECK(init, init.inputs[1].numel() == channels && init.inputs[2].numel() == channels,
                   "scale and B must have ", channels, " entries");
  for (size_t i = 1; i <= 2; ++i)
    KILN_LAYER_CHECK(init, init.inputs[i].dtype == x.dtype, "input ", i,
                     " dtype differs from X dtype");
  // One group per channel, per-channel parameters.
  return std::make_unique<GroupNormLayer>(x.dtype, batch, channels, 1, Product(x.dims, 2),
                                          /*per_channel=*/true, epsilon);
}

// ---------------------------------------------------------------------------
// MeanVarianceNormalization

class MeanVarianceNormLayer : public Layer {
 public:
  MeanVarianceNormLayer(DType dtype, ReducePlan plan) : dtype_(dtype), plan_(plan) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchMeanVarianceNorm(dtype_, args.inputs[0], args.outputs[0], plan_, args.stream);
  }

 private:
  DType dtype_;
  ReducePlan plan_;
};

std::unique_ptr<Layer> CreateMeanVarianceNorm(const LayerInit& init) {
  CheckRowMajor(init);
  CheckFloatInput(init, 0);
  const TensorDesc& x = init.inputs[0];
  std::vector<bool> mask =
      ReducedAxesMask(init.node.attrs.GetInts("axes", {0, 2, 3}), false, x.rank());
  return std::make_unique<MeanVarianceNormLayer>(x.dtype, MakeReducePlan(init, x.dims, mask));
}

}  // namespace

void RegisterReduceGpuLayers(GpuLayerRegistry& registry) {
  const std::pair<const char*, ReduceOp> kReductions[] = {
      {"ReduceSum", ReduceOp::kSum},       {"ReduceMean", ReduceOp::kMean},
      {"ReduceProd", ReduceOp::kProd},     {"ReduceMax", ReduceOp::kMax},
      {"ReduceMin", ReduceOp::kMin},       {"ReduceL1", ReduceOp::kL1},
      {"ReduceL2", ReduceOp::kL2},         {"ReduceSumSquare", ReduceOp::kSumSquare},
      {"ReduceLogSum", ReduceOp::kLogSum}, {"ReduceLogSumExp", ReduceOp::kLogSumExp},
  };
  for (const auto& [name, op] : kReductions) {
    const ReduceOp reduce_op = op;
    registry.Register({name, [reduce_op](const LayerInit& init) {
                         return CreateReduce(reduce_op, init);
                       }});
  }
  registry.Register({"ArgMax", [](const LayerInit& init) { return CreateArgReduce(true, init); }});
  registry.Register({"ArgMin", [](const LayerInit& init) { return CreateArgReduce(false, init); }});
  registry.Register({"Softmax", [](const LayerInit& init) {
                       return CreateSoftmaxLike(AxisOp::kSoftmax, init);
                     }});
  registry.Register({"LogSoftmax", [](const LayerInit& init) {
                       return CreateSoftmaxLike(AxisOp::kLogSoftmax, init);
                     }});
  registry.Register({"Hardmax", [](const LayerInit& init) {
                       return CreateSoftmaxLike(AxisOp::kHardmax, init);
                     }});
  registry.Register({"LpNormalization", CreateLpNorm});
  registry.Register({"LayerNormalization", CreateLayerNorm});
  registry.Register({"KilnSumLayerNorm", CreateSumLayerNorm});
  registry.Register({"GroupNormalization", CreateGroupNorm});
  registry.Register({"InstanceNormalization", CreateInstanceNorm});
  registry.Register({"MeanVarianceNormalization", CreateMeanVarianceNorm});
  RegisterPoolGpuLayers(registry);
}

}  // namespace kiln::gpu
