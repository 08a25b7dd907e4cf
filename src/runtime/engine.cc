// Engine and ExecutionContext: turning a lowered graph into launches.
#include <cublasLt.h>
#include <cudnn.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "cuda/cuda_check.h"
#include "cuda/library_check.h"
#include "ops/registry.h"
#include "runtime/engine_impl.h"
#include "runtime/memory_plan.h"

namespace kiln {

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFP32: return "fp32";
    case Precision::kTF32: return "tf32";
    case Precision::kFP16: return "fp16";
    case Precision::kBF16: return "bf16";
  }
  return "?";
}

Precision ParsePrecision(const std::string& name) {
  for (Precision p : {Precision::kFP32, Precision::kTF32, Precision::kFP16, Precision::kBF16})
    if (name == PrecisionName(p)) return p;
  Fail("unknown precision '", name, "' (expected fp32, tf32, fp16 or bf16)");
}

gpu::Handles CreateHandles() {
  gpu::Handles h;
  cudnnHandle_t cudnn = nullptr;
  KILN_CUDNN_CHECK(cudnnCreate(&cudnn));
  cublasLtHandle_t lt = nullptr;
  KILN_CUBLAS_CHECK(cublasLtCreate(&lt));
  h.cudnn = cudnn;
  h.cublaslt = lt;
  return h;
}

void DestroyHandles(gpu::Handles& h) {
  if (h.cudnn) cudnnDestroy(h.cudnn);
  if (h.cublaslt) cublasLtDestroy(h.cublaslt);
  h = {};
}

namespace {
TensorDesc BindingDesc(const ir::Value& v) {
  TensorDesc d;
  d.name = v.name;
  d.dtype = v.type.dtype;
  d.dims = ir::KnownDims(*v.type.shape);
  d.dim_names.assign(d.dims.size(), "");
  return d;
}
}  // namespace

// ---------------------------------------------------------------- Engine

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
const std::vector<TensorDesc>& Engine::inputs() const { return impl_->inputs; }
const std::vector<TensorDesc>& Engine::outputs() const { return impl_->outputs; }
const EngineInfo& Engine::info() const { return impl_->info; }

Engine::Impl::~Impl() {
  if (weights) cudaFree(weights);
  DestroyHandles(handles);
}

gpu::TensorDesc Engine::Impl::DescOf(const ir::Value* v) const {
  gpu::TensorDesc d;
  if (!v) return d;
  KILN_CHECK(v->type.has_rank() && ir::IsFullyKnown(*v->type.shape), "value '", v->name,
             "' has no concrete shape (", v->type.ToString(), ")");
  d.dtype = v->type.dtype;
  d.dims = ir::KnownDims(*v->type.shape);
  auto it = layouts.find(v);
  if (it != layouts.end()) d.layout = it->second;
  return d;
}

gpu::LayerInit Engine::Impl::MakeInit(const ir::Node& node) const {
  gpu::PrecisionOptions precision_options;
  precision_options.fp16 = precision == Precision::kFP16;
  precision_options.bf16 = precision == Precision::kBF16;
  precision_options.tf32 = precision != Precision::kFP32;
  gpu::LayerInit init{node, {}, {}, {}, precision_options, handles};
  for (const ir::Value* v : node.inputs) {
    init.inputs.push_back(DescOf(v));
    init.constants.push_back(v && v->is_constant() ? &v->constant : nullptr);
  }
  for (const ir::Value* v : node.outputs) init.outputs.push_back(DescOf(v));
  return init;
}

void Engine::Impl::Create() {
  if (!handles.cudnn) handles = CreateHandles();
  const auto& nodes = graph->nodes();
  KILN_CHECK(tactics.size() == nodes.size(), "engine: ", tactics.size(), " tactics for ",
             nodes.size(), " layers");
  fused_from.resize(nodes.size());

  // Index every value nodes and bindings refer to.
  auto index_of = [&](const ir::Value* v) {
    auto [it, inserted] = value_index.emplace(v, static_cast<int>(values.size()));
    if (inserted) values.push_back(v);
    return it->second;
  };
  for (const ir::Value* v : graph->inputs()) index_of(v);
  for (const auto& node : nodes) {
    for (const ir::Value* v : node->inputs)
      if (v) index_of(v);
    for (const ir::Value* v : node->outputs)
      if (v) index_of(v);
  }
  for (const ir::Value* v : graph->outputs()) index_of(v);
  for (const ir::Value* v : values) descs.push_back(DescOf(v));

  inputs.clear();
  outputs.clear();
  for (const ir::Value* v : graph->inputs()) inputs.push_back(BindingDesc(*v));
  for (const ir::Value* v : graph->outputs()) outputs.push_back(BindingDesc(*v));

  // Layers, with the stored tactic.
  const gpu::GpuLayerRegistry& registry = gpu::GpuLayerRegistry::Global();
  layers.clear();
  for (size_t n = 0; n < nodes.size(); ++n) {
    const ir::Node& node = *nodes[n];
    const gpu::GpuOpDef* def = registry.Find(node.op_type);
    KILN_CHECK(def, node.Describe(), ": no GPU implementation of ", node.op_type);
    std::unique_ptr<gpu::Layer> layer = def->create(MakeInit(node));
    KILN_CHECK(tactics[n] >= 0 && tactics[n] < layer->NumTactics(), node.Describe(),
               ": tactic ", tactics[n], " out of range (", layer->NumTactics(),
               " available); the engine was built with another cuDNN/cuBLAS version?");
    layer->SetTactic(tactics[n]);
    layers.push_back(std::move(layer));
  }

  runtime::MemoryPlan plan = runtime::PlanMemory(*this);
  slots = std::move(plan.slots);
  output_copies = std::move(plan.output_copies);
  launches = std::move(plan.launches);
  arena_bytes = plan.arena_bytes;
  weight_bytes = plan.weight_bytes;
  workspace_bytes = 0;
  for (const auto& layer : layers) workspace_bytes = std::max(workspace_bytes, layer->WorkspaceBytes());

  // Upload the weights layers read on the device.
  if (weights) cudaFree(weights);
  weights = nullptr;
  if (weight_bytes) {
    KILN_CUDA_CHECK(cudaMalloc(&weights, weight_bytes));
    std::vector<char> staging(weight_bytes, 0);
    for (size_t i = 0; i < values.size(); ++i) {
      if (slots[i].storage != runtime::Storage::kWeight || !values[i]->is_constant()) continue;
      const Tensor& t = values[i]->constant;
      std::memcpy(staging.data() + slots[i].offset, t.raw_data(), t.nbytes());
    }
    KILN_CUDA_CHECK(cudaMemcpy(weights, staging.data(), weight_bytes, cudaMemcpyHostToDevice));
  }

  info.precision = precision;
  info.weight_bytes = weight_bytes;
  info.activation_bytes = arena_bytes;
  info.workspace_bytes = workspace_bytes;
  int launches_total = 0;
  for (size_t n = 0; n < nodes.size(); ++n)
    if (launches[n]) launches_total += layers[n]->KernelLaunches();
  info.kernel_launches = launches_total + static_cast<int>(output_copies.size());
}

std::unique_ptr<ExecutionContext> Engine::CreateContext() const {
  auto impl = std::make_unique<ExecutionContext::Impl>();
  const Impl& e = *impl_;
  impl->engine = &e;
  if (e.arena_bytes) KILN_CUDA_CHECK(cudaMalloc(&impl->arena, e.arena_bytes));
  if (e.workspace_bytes) KILN_CUDA_CHECK(cudaMalloc(&impl->workspace, e.workspace_bytes));
  impl->handles = CreateHandles();
  const auto& nodes = e.graph->nodes();
  impl->args.resize(nodes.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    const ir::Node& node = *nodes[n];
    gpu::LaunchArgs& a = impl->args[n];
    a.handles = impl->handles;
    a.workspace = impl->workspace;
    auto resolve = [&](const ir::Value* v, bool is_output, int slot) -> void* {
      if (!v) return nullptr;
      int idx = e.value_index.at(v);
      const runtime::ValueSlot& s = e.slots[static_cast<size_t>(idx)];
      switch (s.storage) {
        case runtime::Storage::kNone: return nullptr;
        case runtime::Storage::kWeight: return static_cast<char*>(e.weights) + s.offset;
        case runtime::Storage::kArena: return static_cast<char*>(impl->arena) + s.offset;
        case runtime::Storage::kInput:
        case runtime::Storage::kOutput:
          impl->binding_refs.push_back({static_cast<int>(n), is_output, slot,
                                        s.storage == runtime::Storage::kOutput, s.binding});
          return nullptr;
      }
      return nullptr;
    };
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      bool on_device = node.inputs[i] && e.layers[n]->ReadsInputOnDevice(static_cast<int>(i));
      a.inputs.push_back(on_device ? resolve(node.inputs[i], false, static_cast<int>(i)) : nullptr);
    }
    for (size_t i = 0; i < node.outputs.size(); ++i)
      a.outputs.push_back(resolve(node.outputs[i], true, static_cast<int>(i)));
  }
  return std::unique_ptr<ExecutionContext>(new ExecutionContext(std::move(impl)));
}

// ---------------------------------------------------------------- ExecutionContext

ExecutionContext::ExecutionContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ExecutionContext::~ExecutionContext() = default;

ExecutionContext::Impl::~Impl() {
  if (graph_exec) cudaGraphExecDestroy(graph_exec);
  if (graph) cudaGraphDestroy(graph);
  if (arena) cudaFree(arena);
  if (workspace) cudaFree(workspace);
  DestroyHandles(handles);
}

void ExecutionContext::Impl::Bind(const std::vector<const void*>& inputs,
                                  const std::vector<void*>& outputs) {
  KILN_CHECK(inputs.size() == engine->inputs.size(), "Enqueue: ", inputs.size(),
             " input pointers for ", engine->inputs.size(), " inputs");
  KILN_CHECK(outputs.size() == engine->outputs.size(), "Enqueue: ", outputs.size(),
             " output pointers for ", engine->outputs.size(), " outputs");
  for (const BindingRef& r : binding_refs) {
    void* p = r.binding_is_output ? outputs[static_cast<size_t>(r.binding)]
                                  : const_cast<void*>(inputs[static_cast<size_t>(r.binding)]);
    gpu::LaunchArgs& a = args[static_cast<size_t>(r.node)];
    if (r.is_output) {
      a.outputs[static_cast<size_t>(r.slot)] = p;
    } else {
      a.inputs[static_cast<size_t>(r.slot)] = p;
    }
  }
}

const void* ExecutionContext::Impl::ValuePointer(int value, const std::vector<const void*>& inputs,
                                                 const std::vector<void*>& outputs) const {
  const runtime::ValueSlot& s = engine->slots[static_cast<size_t>(value)];
  switch (s.storage) {
    case runtime::Storage::kWeight: return static_cast<const char*>(engine->weights) + s.offset;
    case runtime::Storage::kArena: return static_cast<const char*>(arena) + s.offset;
    case runtime::Storage::kInput: return inputs[static_cast<size_t>(s.binding)];
    case runtime::Storage::kOutput: return outputs[static_cast<size_t>(s.binding)];
    case runtime::Storage::kNone: break;
  }
  Fail("value '", engine->values[static_cast<size_t>(value)]->name, "' has no device storage");
}

void ExecutionContext::Impl::LaunchNode(size_t n, cudaStream_t stream) {
  gpu::LaunchArgs& a = args[n];
  a.stream = stream;
  try {
    engine->layers[n]->Enqueue(a);
  } catch (const Error& err) {
    Fail(engine->graph->nodes()[n]->Describe(), ": ", err.what());
  }
}

void ExecutionContext::Impl::CopyOutputs(const std::vector<const void*>& inputs,
                                         const std::vector<void*>& outputs, cudaStream_t stream) {
  for (const runtime::OutputCopy& c : engine->output_copies) {
    if (!c.bytes) continue;
    const void* src = ValuePointer(c.value, inputs, outputs);
    KILN_CUDA_CHECK(cudaMemcpyAsync(outputs[static_cast<size_t>(c.binding)], src, c.bytes,
                                    cudaMemcpyDeviceToDevice, stream));
  }
}

void ExecutionContext::Enqueue(const std::vector<const void*>& inputs,
                               const std::vector<void*>& outputs, cudaStream_t stream) {
  Impl& c = *impl_;
  c.Bind(inputs, outputs);
  for (size_t n = 0; n < c.args.size(); ++n)
    if (c.engine->launches[n]) c.LaunchNode(n, stream);
  c.CopyOutputs(inputs, outputs, stream);
}

void ExecutionContext::EnqueueGraph(const std::vector<const void*>& inputs,
                                    const std::vector<void*>& outputs, cudaStream_t stream) {
  Impl& c = *impl_;
  KILN_CHECK(stream != nullptr, "EnqueueGraph needs a non-default stream (capture)");
  if (!c.graph_exec || inputs != c.graph_inputs || outputs != c.graph_outputs) {
    cudaGraph_t graph = nullptr;
    KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      Enqueue(inputs, outputs, stream);
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    bool updated = false;
    if (c.graph_exec) {
      cudaGraphExecUpdateResultInfo result{};
      updated = cudaGraphExecUpdate(c.graph_exec, graph, &result) == cudaSuccess;
      if (!updated) {
        cudaGetLastError();
        KILN_CUDA_CHECK(cudaGraphExecDestroy(c.graph_exec));
        c.graph_exec = nullptr;
      }
    }
    if (!updated) KILN_CUDA_CHECK(cudaGraphInstantiate(&c.graph_exec, graph, 0));
    if (c.graph) KILN_CUDA_CHECK(cudaGraphDestroy(c.graph));
    c.graph = graph;
    size_t count = 0;
    KILN_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
    std::vector<cudaGraphNode_t> graph_nodes(count);
    if (count) KILN_CUDA_CHECK(cudaGraphGetNodes(graph, graph_nodes.data(), &count));
    int kernels = 0;
    for (cudaGraphNode_t node : graph_nodes) {
      cudaGraphNodeType type;
      KILN_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
      if (type == cudaGraphNodeTypeKernel) ++kernels;
    }
    c.graph_kernel_nodes = kernels;
    c.graph_inputs = inputs;
    c.graph_outputs = outputs;
  }
  KILN_CUDA_CHECK(cudaGraphLaunch(c.graph_exec, stream));
}

int ExecutionContext::GraphKernelNodes() const { return impl_->graph_kernel_nodes; }

size_t ExecutionContext::DeviceMemoryBytes() const {
  return impl_->engine->arena_bytes + impl_->engine->workspace_bytes;
}

std::vector<Tensor> ExecutionContext::Run(const std::map<std::string, Tensor>& inputs) {
  const Engine::Impl& e = *impl_->engine;
  std::vector<void*> device_inputs, device_outputs;
  auto free_all = [&] {
    for (void* p : device_inputs) cudaFree(p);
    for (void* p : device_outputs) cudaFree(p);
  };
  std::vector<Tensor> results;
  try {
    for (const auto& [name, t] : inputs) {
      bool known = std::any_of(e.inputs.begin(), e.inputs.end(),
                               [&](const TensorDesc& d) { return d.name == name; });
      KILN_CHECK(known, "the engine has no input named '", name, "'");
    }
    for (const TensorDesc& d : e.inputs) {
      auto it = inputs.find(d.name);
      KILN_CHECK(it != inputs.end(), "missing input '", d.name, "' (", DTypeName(d.dtype),
                 DimsToString(d.dims), ")");
      const Tensor& t = it->second;
      KILN_CHECK(t.dtype() == d.dtype && t.dims() == d.dims, "input '", d.name,
                 "': the engine was built for ", DTypeName(d.dtype), DimsToString(d.dims),
                 ", got ", t.TypeString());
      void* p = nullptr;
      KILN_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(t.nbytes(), 1)));
      device_inputs.push_back(p);
      if (t.nbytes()) KILN_CUDA_CHECK(cudaMemcpy(p, t.raw_data(), t.nbytes(), cudaMemcpyHostToDevice));
    }
    for (const TensorDesc& d : e.outputs) {
      Tensor t(d.dtype, d.dims);
      void* p = nullptr;
      KILN_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(t.nbytes(), 1)));
      device_outputs.push_back(p);
      // Poison: anything the engine fails to write shows up as NaN.
      if (t.nbytes()) KILN_CUDA_CHECK(cudaMemset(p, 0xFF, t.nbytes()));
      results.push_back(std::move(t));
    }
    std::vector<const void*> in(device_inputs.begin(), device_inputs.end());
    Enqueue(in, device_outputs, nullptr);
    KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    for (size_t i = 0; i < results.size(); ++i)
      if (results[i].nbytes())
        KILN_CUDA_CHECK(cudaMemcpy(results[i].raw_data(), device_outputs[i], results[i].nbytes(),
                                   cudaMemcpyDeviceToHost));
  } catch (...) {
    free_all();
    throw;
  }
  free_all();
  return results;
}

std::vector<double> ExecutionContext::ProfileLayers(const std::vector<const void*>& inputs,
                                                    const std::vector<void*>& outputs,
                                                    cudaStream_t stream, int iterations) {
  Impl& c = *impl_;
  c.Bind(inputs, outputs);
  const size_t n_layers = c.args.size();
  std::vector<cudaEvent_t> events(n_layers + 1);
  for (auto& ev : events) KILN_CUDA_CHECK(cudaEventCreate(&ev));
  std::vector<std::vector<float>> samples(n_layers);
  for (int it = 0; it < iterations + 1; ++it) {
    KILN_CUDA_CHECK(cudaEventRecord(events[0], stream));
    for (size_t n = 0; n < n_layers; ++n) {
      if (c.engine->launches[n]) c.LaunchNode(n, stream);
      KILN_CUDA_CHECK(cudaEventRecord(events[n + 1], stream));
    }
    KILN_CUDA_CHECK(cudaEventSynchronize(events[n_layers]));
    if (it == 0) continue;  // Warm-up.
    for (size_t n = 0; n < n_layers; ++n) {
      float ms = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, events[n], events[n + 1]));
      samples[n].push_back(ms);
    }
  }
  for (auto& ev : events) cudaEventDestroy(ev);
  std::vector<double> medians;
  for (auto& s : samples) {
    std::sort(s.begin(), s.end());
    medians.push_back(s.empty() ? 0.0 : s[s.size() / 2]);
  }
  return medians;
}

}  // namespace kiln
