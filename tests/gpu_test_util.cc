#include "gpu_test_util.h"

#include <cublasLt.h>
#include <cudnn.h>

#include <cmath>
#include <cstring>

#include "cpu/executor.h"
#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/library_check.h"
#include "ops/registry.h"
#include "runtime/engine_impl.h"
#include "test_util.h"

namespace kiln::testing {
namespace {

// One cuDNN/cuBLASLt handle pair for every test in the process.
gpu::Handles TestHandles() {
  static gpu::Handles handles = CreateHandles();
  return handles;
}

gpu::TensorDesc DescOf(const Tensor& t) {
  gpu::TensorDesc d;
  if (!t.defined()) return d;
  d.dtype = t.dtype();
  d.dims = t.dims();
  return d;
}

using cuda::DeviceBuffer;

Tensor ToFloat32IfHalf(const Tensor& t) {
  if (t.defined() && (t.dtype() == DType::kFloat16 || t.dtype() == DType::kBFloat16))
    return t.CastTo(DType::kFloat32);
  return t;
}

}  // namespace

std::vector<std::vector<Tensor>> RunNodeOnGpu(const std::string& op_type,
                                              const std::vector<Tensor>& inputs,
                                              const ir::Attributes& attrs,
                                              const GpuNodeOptions& options) {
  // Output types come from the same registry inference the builder uses
  // (or from options.output_types for GPU-only fused ops).
  ir::Graph graph;
  graph.opset_version = options.opset;
  std::vector<ir::Value*> node_inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) {
      node_inputs.push_back(nullptr);
      continue;
    }
    node_inputs.push_back(graph.AddValue("in" + std::to_string(i), ir::TensorType::Of(inputs[i])));
  }
  std::vector<ir::Value*> node_outputs;
  for (int i = 0; i < options.num_outputs; ++i)
    node_outputs.push_back(graph.AddValue("out" + std::to_string(i)));
  ir::Node* node = graph.AddNode(op_type, "test_" + op_type, node_inputs, node_outputs);
  node->attrs = attrs;
  node->opset = options.opset;

  std::vector<ir::TensorType> in_types(inputs.size());
  std::vector<const ir::TensorType*> in_type_ptrs(inputs.size(), nullptr);
  std::vector<const Tensor*> in_values(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    in_types[i] = ir::TensorType::Of(inputs[i]);
    in_type_ptrs[i] = &in_types[i];
    in_values[i] = &inputs[i];
  }
  std::vector<ir::TensorType> out_types =
      options.output_types.empty() ? InferNode(*node, in_type_ptrs, in_values)
                                   : options.output_types;

  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find(op_type);
  KILN_CHECK(def, "no GPU layer registered for ", op_type);
  gpu::LayerInit init{*node, {}, {}, {}, options.precision, TestHandles()};
  for (size_t i = 0; i < inputs.size(); ++i) {
    init.inputs.push_back(DescOf(inputs[i]));
    bool constant = i < options.constant_inputs.size() && options.constant_inputs[i];
    init.constants.push_back(constant && inputs[i].defined() ? &inputs[i] : nullptr);
  }
  for (size_t o = 0; o < out_types.size(); ++o) {
    gpu::TensorDesc d;
    d.dtype = out_types[o].dtype;
    d.dims = ir::KnownDims(*out_types[o].shape);
    if (o < options.output_layouts.size()) d.layout = options.output_layouts[o];
    init.outputs.push_back(d);
  }
  std::unique_ptr<gpu::Layer> layer = def->create(init);

  std::vector<std::unique_ptr<DeviceBuffer>> in_buffers;
  gpu::LaunchArgs args;
  args.handles = init.handles;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !layer->ReadsInputOnDevice(static_cast<int>(i))) {
      args.inputs.push_back(nullptr);
      in_buffers.push_back(nullptr);
      continue;
    }
    in_buffers.push_back(std::make_unique<DeviceBuffer>(inputs[i].nbytes()));
    KILN_CUDA_CHECK(cudaMemcpy(in_buffers.back()->ptr, inputs[i].raw_data(), inputs[i].nbytes(),
                               cudaMemcpyHostToDevice));
    args.inputs.push_back(in_buffers.back()->ptr);
  }
  std::vector<std::unique_ptr<DeviceBuffer>> out_buffers;
  for (const gpu::TensorDesc& d : init.outputs) {
    out_buffers.push_back(std::make_unique<DeviceBuffer>(d.nbytes()));
    args.outputs.push_back(out_buffers.back()->ptr);
  }

  std::vector<std::vector<Tensor>> results;
  int tactics = options.all_tactics ? layer->NumTactics() : 1;
  for (int tactic = 0; tactic < tactics; ++tactic) {
    layer->SetTactic(tactic);
    DeviceBuffer workspace(layer->WorkspaceBytes());
    args.workspace = workspace.ptr;
    for (size_t o = 0; o < init.outputs.size(); ++o) {
      int alias = layer->AliasOf(static_cast<int>(o));
      if (alias >= 0) {
        args.outputs[o] = const_cast<void*>(args.inputs[static_cast<size_t>(alias)]);
      } else if (init.outputs[o].nbytes()) {
        args.outputs[o] = out_buffers[o]->ptr;
        KILN_CUDA_CHECK(cudaMemset(args.outputs[o], 0xFF, init.outputs[o].nbytes()));
      }
    }
    layer->Enqueue(args);
    KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    KILN_CUDA_CHECK(cudaGetLastError());
    std::vector<Tensor> outs;
    for (size_t o = 0; o < init.outputs.size(); ++o) {
      const gpu::TensorDesc& d = init.outputs[o];
      Tensor t(d.dtype, d.PhysicalDims());
      if (t.nbytes())
        KILN_CUDA_CHECK(
            cudaMemcpy(t.raw_data(), args.outputs[o], t.nbytes(), cudaMemcpyDeviceToHost));
      if (d.layout == gpu::Layout::kNHWC && d.rank() == 4) t = NhwcToNchw(t);
      outs.push_back(t);
    }
    results.push_back(std::move(outs));
  }
  return results;
}

void ExpectGpuMatchesCpu(const std::string& op_type, const std::vector<Tensor>& inputs,
                         const ir::Attributes& attrs, const GpuNodeOptions& options,
                         double rtol, double atol) {
  std::vector<Tensor> cpu_inputs;
  for (const Tensor& t : inputs) cpu_inputs.push_back(ToFloat32IfHalf(t));
  std::vector<Tensor> expected = RunNode(op_type, cpu_inputs, attrs, options.num_outputs,
                                         options.opset, options.constant_inputs);
  std::vector<std::vector<Tensor>> actual = RunNodeOnGpu(op_type, inputs, attrs, options);
  for (size_t tactic = 0; tactic < actual.size(); ++tactic) {
    for (size_t o = 0; o < expected.size(); ++o) {
      const Tensor& want = expected[o];
      Tensor got = ToFloat32IfHalf(actual[tactic][o]);
      SCOPED_TRACE(StrCat(op_type, " tactic ", tactic, " output ", o));
      ASSERT_EQ(got.dims(), want.dims());
      if (IsFloatingPoint(want.dtype())) {
        Tensor g = got.CastTo(DType::kFloat64), w = want.CastTo(DType::kFloat64);
        for (int64_t i = 0; i < w.numel(); ++i) {
          double a = g.data<double>()[i], b = w.data<double>()[i];
          if (std::isnan(b)) continue;
          ASSERT_FALSE(std::isnan(a)) << "element " << i << " not written (NaN), expected " << b;
          if (std::isinf(b)) {
            ASSERT_EQ(a, b) << "element " << i;
            continue;
          }
          ASSERT_LE(std::fabs(a - b), atol + rtol * std::fabs(b))
              << "element " << i << ": gpu " << a << " cpu " << b;
        }
      } else {
        ASSERT_EQ(got.dtype(), want.dtype());
        ASSERT_EQ(0, std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()))
            << "integer/bool output differs";
      }
    }
  }
}

double TimeEnqueueMs(const gpu::Layer& layer, const gpu::LaunchArgs& args, int warmup, int iterations) {
  for (int i = 0; i < warmup; ++i) layer.Enqueue(args);
  cudaEvent_t start = nullptr, stop = nullptr;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  float ms = 0;
  try {
    KILN_CUDA_CHECK(cudaEventRecord(start, args.stream));
    for (int i = 0; i < iterations; ++i) layer.Enqueue(args);
    KILN_CUDA_CHECK(cudaEventRecord(stop, args.stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop));
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  KILN_CUDA_CHECK(cudaEventDestroy(start));
  KILN_CUDA_CHECK(cudaEventDestroy(stop));
  return ms / iterations;
}

}  // namespace kiln::testing
