// GPU layers for pooling: MaxPool (optional Indices output), AveragePool,
// GlobalAveragePool, GlobalMaxPool. Row-major inputs with 1-3 spatial dims
// and NHWC rank-4 inputs (outputs, Indices included, are written in the
// input's layout, as layer.h specifies for accepts_nhwc layers). Window geometry
// comes from ops/nn.h, as for the CPU kernels in src/cpu/nn.cc.
#include <memory>
#include <utility>
#include <vector>

#include "cuda/kernels/pool.h"
#include "cuda/layer.h"
#include "ops/nn.h"
#include "ops/registry.h"

namespace kiln::gpu {
namespace {

using kernels::PoolParams;

bool HasOutput(const LayerInit& init, size_t i) {
  return i < init.outputs.size() && init.outputs[i].defined() && i < init.node.outputs.size() &&
         init.node.outputs[i] != nullptr;
}

// Validates X's rank/layout; returns whether it is NHWC.
bool CheckPoolInput(const LayerInit& init) {
  KILN_LAYER_CHECK(init, !init.inputs.empty() && init.inputs[0].defined(), "missing input X");
  const TensorDesc& x = init.inputs[0];
  const bool nhwc = x.layout == Layout::kNHWC;
  if (nhwc) {
    KILN_LAYER_CHECK(init, x.rank() == 4, "an nhwc input must have rank 4, got ", x.ToString());
  } else {
    KILN_LAYER_CHECK(init, x.rank() >= 3 && x.rank() <= 5,
                     "input must have 1 to 3 spatial dims (rank 3 to 5), got ", x.ToString());
  }
  KILN_LAYER_CHECK(init, !init.outputs.empty() && init.outputs[0].dtype == x.dtype,
                   "output dtype differs from input");
  return nhwc;
}

bool IsGpuFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

class PoolLayer : public Layer {
 public:
  PoolLayer(bool is_max, DType dtype, PoolParams params, bool flag, bool has_indices)
      : is_max_(is_max), dtype_(dtype), params_(params), flag_(flag), has_indices_(has_indices) {}
  void Enqueue(const LaunchArgs& args) const override {
    if (is_max_) {
      int64_t* indices = has_indices_ && args.outputs.size() > 1
                             ? static_cast<int64_t*>(args.outputs[1])
                             : nullptr;
      kernels::LaunchMaxPool(dtype_, args.inputs[0], args.outputs[0], indices, flag_, params_,
                             args.stream);
    } else {
      kernels::LaunchAveragePool(dtype_, args.inputs[0], args.outputs[0], flag_, params_,
                                 args.stream);
    }
  }

 private:
  bool is_max_;
  DType dtype_;
  PoolParams params_;
  bool flag_;  // MaxPool: column-major indices; AveragePool: count_include_pad.
  bool has_indices_;
};

std::unique_ptr<Layer> CreatePool(bool is_max, const LayerInit& init) {
  const bool nhwc = CheckPoolInput(init);
  const TensorDesc& x = init.inputs[0];
  const ir::Attributes& attrs = init.node.attrs;
  if (is_max) {
    KILN_LAYER_CHECK(init, kernels::MaxPoolSupportsDType(x.dtype), "dtype ", DTypeName(x.dtype),
                     " is not supported (float32, float16, bfloat16, int8, uint8)");
  } else {
    KILN_LAYER_CHECK(init, IsGpuFloat(x.dtype), "dtype ", DTypeName(x.dtype),
                     " is not supported (float32, float16, bfloat16)");
  }
  const std::vector<int64_t> kernel = attrs.GetInts("kernel_shape");
  const bool ceil_mode = attrs.GetInt("ceil_mode", 0) != 0;
  const std::vector<int64_t> spatial(x.dims.begin() + 2, x.dims.end());
  KILN_LAYER_CHECK(init, kernel.size() == spatial.size(), "kernel_shape has ", kernel.size(),
                   " values but the input ", x.ToString(), " has ", spatial.size(),
                   " spatial dims");
  const nn::WindowGeometry g = nn::ComputeWindowGeometry(attrs, spatial, kernel, ceil_mode);
  const TensorDesc& y = init.outputs[0];
  std::vector<int64_t> expected = {x.dims[0], x.dims[1]};
  expected.insert(expected.end(), g.output.begin(), g.output.end());
  KILN_LAYER_CHECK(init, y.dims == expected, "output ", y.ToString(), " does not match the ",
                   "pooling geometry ", DimsToString(expected));

  PoolParams p;
  p.batch = x.dims[0];
  p.channels = x.dims[1];
  p.nhwc = nhwc;
  const int rank = g.rank();
  for (int i = 0; i < rank; ++i) {
    const int j = 3 - rank + i;
    const size_t s = static_cast<size_t>(i);
    p.in[j] = g.input[s];
    p.out[j] = g.output[s];
    p.kernel[j] = g.kernel[s];
    p.stride[j] = g.strides[s];
    p.dilation[j] = g.dilations[s];
    p.pad[j] = g.pads_begin[s];
    p.pad_end[j] = g.pads_end[s];
  }

  bool flag = false;
  bool has_indices = false;
  if (is_max) {
    const int64_t order = attrs.GetInt("storage_order", 0);
    KILN_LAYER_CHECK(init, order == 0 || order == 1, "storage_order must be 0 or 1, got ", order);
    flag = order == 1;
    has_indices = HasOutput(init, 1);
    if (has_indices) {
      KILN_LAYER_CHECK(init, init.outputs[1].dtype == DType::kInt64 &&
                                 init.outputs[1].dims == y.dims,
                       "Indices output must be int64 shaped like Y, got ",
                       init.outputs[1].ToString());
    }
  } else {
    flag = attrs.GetInt("count_include_pad", 0) != 0;
  }
  return std::make_unique<PoolLayer>(is_max, x.dtype, p, flag, has_indices);
}

class GlobalPoolLayer : public Layer {
 public:
  GlobalPoolLayer(bool is_max, DType dtype, int64_t batch, int64_t channels, int64_t volume,
                  bool nhwc)
      : is_max_(is_max), dtype_(dtype), batch_(batch), channels_(channels), volume_(volume),
        nhwc_(nhwc) {}
  void Enqueue(const LaunchArgs& args) const override {
    kernels::LaunchGlobalPool(is_max_, dtype_, args.inputs[0], args.outputs[0], batch_, channels_,
                              volume_, nhwc_, args.stream);
  }

 private:
  bool is_max_;
  DType dtype_;
  int64_t batch_, channels_, volume_;
  bool nhwc_;
};

std::unique_ptr<Layer> CreateGlobalPool(bool is_max, const LayerInit& init) {
  const bool nhwc = CheckPoolInput(init);
  const TensorDesc& x = init.inputs[0];
  if (is_max) {
    KILN_LAYER_CHECK(init, kernels::MaxPoolSupportsDType(x.dtype), "dtype ", DTypeName(x.dtype),
                     " is not supported (float32, float16, bfloat16, int8, uint8)");
  } else {
    KILN_LAYER_CHECK(init, IsGpuFloat(x.dtype), "dtype ", DTypeName(x.dtype),
                     " is not supported (float32, float16, bfloat16)");
  }
  const int64_t volume = Product(x.dims, 2);
  const int64_t planes = x.dims[0] * x.dims[1];
  KILN_LAYER_CHECK(init, volume > 0 || planes == 0, "global pooling over an empty spatial extent");
  KILN_LAYER_CHECK(init, init.outputs[0].numel() == planes, "output ", init.outputs[0].ToString(),
                   " does not match ", x.ToString());
  return std::make_unique<GlobalPoolLayer>(is_max, x.dtype, x.dims[0], x.dims[1], volume, nhwc);
}

}  // namespace

void RegisterPoolGpuLayers(GpuLayerRegistry& registry) {
  GpuOpDef max_pool{"MaxPool", [](const LayerInit& init) { return CreatePool(true, init); }};
  max_pool.accepts_nhwc = true;
  registry.Register(std::move(max_pool));
  GpuOpDef average_pool{"AveragePool",
                        [](const LayerInit& init) { return CreatePool(false, init); }};
  average_pool.accepts_nhwc = true;
  registry.Register(std::move(average_pool));
  GpuOpDef global_average{"GlobalAveragePool",
                          [](const LayerInit& init) { return CreateGlobalPool(false, init); }};
  global_average.accepts_nhwc = true;
  registry.Register(std::move(global_average));
  GpuOpDef global_max{"GlobalMaxPool",
                      [](const LayerInit& init) { return CreateGlobalPool(true, init); }};
  global_max.accepts_nhwc = true;
  registry.Register(std::move(global_max));
}

}  // namespace kiln::gpu
