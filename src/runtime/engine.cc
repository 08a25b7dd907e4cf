// Engine and ExecutionContext: turning a lowered graph into launches.
#include <cublasLt.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <cstring>
#include <unordered_set>

#include "cuda/cuda_check.h"
#include "cuda/device.h"
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
const std::vector<OptimizationProfile>& Engine::profiles() const { return impl_->profiles; }

namespace runtime {

WeightStore::~WeightStore() {
  for (auto& [hash, list] : entries)
    for (Entry& e : list)
      if (e.device) cudaFree(e.device);
}

void* WeightStore::Intern(const Tensor& t) {
  const size_t n = t.nbytes();
  requested_bytes += n;
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = static_cast<const unsigned char*>(t.raw_data());
  for (size_t i = 0; i < n; ++i) {
    h ^= bytes[i];
    h *= 1099511628211ull;
  }
  std::vector<Entry>& list = entries[h];
  for (const Entry& e : list)
    if (e.host.dtype() == t.dtype() && e.host.dims() == t.dims() &&
        (n == 0 || std::memcmp(e.host.raw_data(), t.raw_data(), n) == 0))
      return e.device;
  Entry e;
  e.host = t;
  KILN_CUDA_CHECK(cudaMalloc(&e.device, std::max<size_t>(n, 1)));
  list.push_back(e);
  if (n) KILN_CUDA_CHECK(cudaMemcpy(e.device, t.raw_data(), n, cudaMemcpyHostToDevice));
  unique_bytes += n;
  return e.device;
}

Plan::~Plan() {
  if (weights) cudaFree(weights);
  if (owns_handles) DestroyHandles(handles);
}

gpu::TensorDesc Plan::DescOf(const ir::Value* v) const {
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

gpu::LayerInit Plan::MakeInit(const ir::Node& node) const {
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

void* Plan::WeightPointer(int value) const {
  const ValueSlot& s = slots[static_cast<size_t>(value)];
  if (!weights && !shared_weights.empty()) {
    auto it = shared_weights.find(s.offset);
    KILN_CHECK(it != shared_weights.end(), "weight '", values[static_cast<size_t>(value)]->name,
               "' has no device copy");
    return it->second;
  }
  return static_cast<char*>(weights) + s.offset;
}

InputShapes Plan::ProfileDims(const OptimizationProfile& p) const {
  InputShapes dims;
  for (const auto& [name, range] : p.inputs)
    for (const TensorDesc& d : inputs)
      if (d.name == name) dims[name] = d.dims;
  return dims;
}

void Plan::Create(WeightStore* store, bool fallback_tactics) {
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
    if (fallback_tactics && (tactics[n] < 0 || tactics[n] >= layer->NumTactics())) tactics[n] = 0;
    KILN_CHECK(tactics[n] >= 0 && tactics[n] < layer->NumTactics(), node.Describe(),
               ": tactic ", tactics[n], " out of range (", layer->NumTactics(),
               " available); the engine was built with another cuDNN/cuBLAS version?");
    if (fallback_tactics && tactics[n] != 0) {
      try {
        layer->SetTactic(tactics[n]);
      } catch (const Error&) {
        tactics[n] = 0;  // Not accepted at this shape: the layer's default.
      }
    }
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

  // Upload the weights layers read on the device: into the engine's shared
  // store (plans of an engine with profiles), else into one block.
  if (weights) cudaFree(weights);
  weights = nullptr;
  shared_weights.clear();
  if (store) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (slots[i].storage != runtime::Storage::kWeight || !values[i]->is_constant()) continue;
      if (!shared_weights.count(slots[i].offset))
        shared_weights[slots[i].offset] = store->Intern(values[i]->constant);
    }
  } else if (weight_bytes) {
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

}  // namespace runtime

const runtime::Plan& Engine::Impl::OptPlan(int profile) const {
  KILN_CHECK(profile >= 0 && static_cast<size_t>(profile) < opt_plans.size() && opt_plans[static_cast<size_t>(profile)],
             "engine: no opt-shape plan for optimization profile ", profile);
  return *opt_plans[static_cast<size_t>(profile)];
}

std::unique_ptr<runtime::Plan> Engine::Impl::Specialize(int p, const InputShapes& shapes) const {
  const runtime::Plan& opt = OptPlan(p);
  std::unique_ptr<runtime::Plan> plan =
      builder::LowerModelBytes(source_onnx, "the engine's model", lowering, shapes, nullptr);
  plan->profile = p;
  // Borrow the opt plan's tactics by node name (the lowering is the same
  // pipeline, so names match wherever the graph is); the rest get tactic 0.
  std::unordered_map<std::string, int> by_name;
  const auto& opt_nodes = opt.graph->nodes();
  for (size_t n = 0; n < opt_nodes.size(); ++n) by_name.emplace(opt_nodes[n]->name, opt.tactics[n]);
  for (const auto& node : plan->graph->nodes()) {
    auto it = by_name.find(node->name);
    plan->tactics.push_back(it == by_name.end() ? 0 : it->second);
  }
  plan->handles = handles;  // The base plan's: layer creation happens under plans_mutex or at build.
  plan->owns_handles = false;
  plan->Create(weight_store.get(), /*fallback_tactics=*/true);
  return plan;
}

void Engine::Impl::Summarize() {
  opt_plans.assign(profiles.size(), nullptr);
  std::vector<const runtime::Plan*> all = {this};
  for (const auto& plan : plans) all.push_back(plan.get());
  max_arena_bytes = 0;
  max_workspace_bytes = 0;
  for (const runtime::Plan* plan : all) {
    max_arena_bytes = std::max(max_arena_bytes, plan->arena_bytes);
    max_workspace_bytes = std::max(max_workspace_bytes, plan->workspace_bytes);
    if (plan->profile < 0) continue;
    const size_t p = static_cast<size_t>(plan->profile);
    KILN_CHECK(p < profiles.size(), "engine: a plan of profile ", p, " but ", profiles.size(), " profiles");
    InputShapes opt;
    for (const auto& [name, range] : profiles[p].inputs) opt[name] = range.opt;
    if (!opt_plans[p] && plan->ProfileDims(profiles[p]) == opt) opt_plans[p] = plan;
  }
  for (size_t p = 0; p < profiles.size(); ++p)
    KILN_CHECK(opt_plans[p], "engine: optimization profile ", p, " has no opt-shape plan");
  if (profiles.empty()) return;
  info.num_profiles = static_cast<int>(profiles.size());
  info.num_plans = static_cast<int>(all.size());
  info.activation_bytes = max_arena_bytes;
  info.workspace_bytes = max_workspace_bytes;
  if (weight_store) {
    info.weight_bytes = weight_store->unique_bytes;
    info.weight_bytes_unshared = weight_store->requested_bytes;
  }
}

const runtime::Plan& Engine::Impl::PlanFor(const InputShapes& shapes) const {
  const int p = SelectProfile(profiles, shapes);
  InputShapes key;
  for (const auto& [name, range] : profiles[static_cast<size_t>(p)].inputs) key[name] = shapes.at(name);
  std::lock_guard<std::mutex> lock(plans_mutex);
  auto matches = [&](const runtime::Plan& plan) {
    return plan.profile == p && plan.ProfileDims(profiles[static_cast<size_t>(p)]) == key;
  };
  if (matches(*this)) return *this;
  for (const auto& plan : plans)
    if (matches(*plan)) return *plan;
  std::string dims;
  for (const auto& [name, d] : key) dims += StrCat(dims.empty() ? "" : ", ", name, " ", ShapeText(d));
  auto started = std::chrono::steady_clock::now();
  std::unique_ptr<runtime::Plan> plan = Specialize(p, key);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  std::string line = StrCat("specialized a plan for ", dims, " (optimization profile ", p, ") in ",
                            static_cast<int>(ms), " ms, with the profile's opt-shape tactics");
  if (log) {
    log(line);
  } else {
    std::cerr << "kiln: " << line << "\n";
  }
  plans.push_back(std::move(plan));
  return *plans.back();
}

std::unique_ptr<ExecutionContext> Engine::CreateContext() const {
  auto impl = std::make_unique<ExecutionContext::Impl>();
  const Impl& e = *impl_;
  impl->engine = &e;
  if (e.max_arena_bytes) KILN_CUDA_CHECK(cudaMalloc(&impl->arena, e.max_arena_bytes));
  impl->arena_capacity = e.max_arena_bytes;
  if (e.max_workspace_bytes) KILN_CUDA_CHECK(cudaMalloc(&impl->workspace, e.max_workspace_bytes));
  impl->workspace_capacity = e.max_workspace_bytes;
  impl->handles = CreateHandles();
  impl->Select(e);  // The base plan: the engine's own dims.
  return std::unique_ptr<ExecutionContext>(new ExecutionContext(std::move(impl)));
}

// ---------------------------------------------------------------- ExecutionContext

ExecutionContext::ExecutionContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ExecutionContext::~ExecutionContext() = default;

ExecutionContext::Impl::PlanState::~PlanState() {
  if (graph_exec) cudaGraphExecDestroy(graph_exec);
  if (graph) cudaGraphDestroy(graph);
}

ExecutionContext::Impl::~Impl() {
  states.clear();
  if (arena) cudaFree(arena);
  if (workspace) cudaFree(workspace);
  DestroyHandles(handles);
}

void ExecutionContext::Impl::Select(const runtime::Plan& plan) {
  for (const auto& state : states)
    if (state->plan == &plan) {
      current = state.get();
      return;
    }
  if (plan.arena_bytes > arena_capacity || plan.workspace_bytes > workspace_capacity) {
    // A plan specialized at run time may plan its memory a little larger
    // than the build-time plans: grow once; every prepared state points at
    // the old buffers, so they are dropped (and their graphs re-captured).
    states.clear();
    current = nullptr;
    KILN_CUDA_CHECK(cudaDeviceSynchronize());
    if (plan.arena_bytes > arena_capacity) {
      if (arena) KILN_CUDA_CHECK(cudaFree(arena));
      arena = nullptr;
      arena_capacity = 0;
      KILN_CUDA_CHECK(cudaMalloc(&arena, plan.arena_bytes));
      arena_capacity = plan.arena_bytes;
    }
    if (plan.workspace_bytes > workspace_capacity) {
      if (workspace) KILN_CUDA_CHECK(cudaFree(workspace));
      workspace = nullptr;
      workspace_capacity = 0;
      KILN_CUDA_CHECK(cudaMalloc(&workspace, plan.workspace_bytes));
      workspace_capacity = plan.workspace_bytes;
    }
  }
  auto state = std::make_unique<PlanState>();
  state->plan = &plan;
  const auto& nodes = plan.graph->nodes();
  state->args.resize(nodes.size());
  for (size_t n = 0; n < nodes.size(); ++n) {
    const ir::Node& node = *nodes[n];
    gpu::LaunchArgs& a = state->args[n];
    a.handles = handles;
    a.workspace = workspace;
    auto resolve = [&](const ir::Value* v, bool is_output, int slot) -> void* {
      if (!v) return nullptr;
      int idx = plan.value_index.at(v);
      const runtime::ValueSlot& s = plan.slots[static_cast<size_t>(idx)];
      switch (s.storage) {
        case runtime::Storage::kNone: return nullptr;
        case runtime::Storage::kWeight: return plan.WeightPointer(idx);
        case runtime::Storage::kArena: return static_cast<char*>(arena) + s.offset;
        case runtime::Storage::kInput:
        case runtime::Storage::kOutput:
          state->binding_refs.push_back({static_cast<int>(n), is_output, slot,
                                         s.storage == runtime::Storage::kOutput, s.binding});
          return nullptr;
      }
      return nullptr;
    };
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      bool on_device = node.inputs[i] && plan.layers[n]->ReadsInputOnDevice(static_cast<int>(i));
      a.inputs.push_back(on_device ? resolve(node.inputs[i], false, static_cast<int>(i)) : nullptr);
    }
    for (size_t i = 0; i < node.outputs.size(); ++i)
      a.outputs.push_back(resolve(node.outputs[i], true, static_cast<int>(i)));
  }
  states.push_back(std::move(state));
  current = states.back().get();
}

void ExecutionContext::Impl::Bind(const std::vector<const void*>& inputs,
                                  const std::vector<void*>& outputs) {
  const runtime::Plan& plan = *current->plan;
  KILN_CHECK(inputs.size() == plan.inputs.size(), "Enqueue: ", inputs.size(),
             " input pointers for ", plan.inputs.size(), " inputs");
  KILN_CHECK(outputs.size() == plan.outputs.size(), "Enqueue: ", outputs.size(),
             " output pointers for ", plan.outputs.size(), " outputs");
  for (const PlanState::BindingRef& r : current->binding_refs) {
    void* p = r.binding_is_output ? outputs[static_cast<size_t>(r.binding)]
                                  : const_cast<void*>(inputs[static_cast<size_t>(r.binding)]);
    gpu::LaunchArgs& a = current->args[static_cast<size_t>(r.node)];
    if (r.is_output) {
      a.outputs[static_cast<size_t>(r.slot)] = p;
    } else {
      a.inputs[static_cast<size_t>(r.slot)] = p;
    }
  }
}

const void* ExecutionContext::Impl::ValuePointer(int value, const std::vector<const void*>& inputs,
                                                 const std::vector<void*>& outputs) const {
  const runtime::Plan& plan = *current->plan;
  const runtime::ValueSlot& s = plan.slots[static_cast<size_t>(value)];
  switch (s.storage) {
    case runtime::Storage::kWeight: return plan.WeightPointer(value);
    case runtime::Storage::kArena: return static_cast<const char*>(arena) + s.offset;
    case runtime::Storage::kInput: return inputs[static_cast<size_t>(s.binding)];
    case runtime::Storage::kOutput: return outputs[static_cast<size_t>(s.binding)];
    case runtime::Storage::kNone: break;
  }
  Fail("value '", plan.values[static_cast<size_t>(value)]->name, "' has no device storage");
}

void ExecutionContext::Impl::LaunchNode(size_t n, cudaStream_t stream) {
  gpu::LaunchArgs& a = current->args[n];
  a.stream = stream;
  try {
    current->plan->layers[n]->Enqueue(a);
  } catch (const Error& err) {
    Fail(current->plan->graph->nodes()[n]->Describe(), ": ", err.what());
  }
}

void ExecutionContext::Impl::CopyOutputs(const std::vector<const void*>& inputs,
                                         const std::vector<void*>& outputs, cudaStream_t stream) {
  for (const runtime::OutputCopy& c : current->plan->output_copies) {
    if (!c.bytes) continue;
    const void* src = ValuePointer(c.value, inputs, outputs);
    KILN_CUDA_CHECK(cudaMemcpyAsync(outputs[static_cast<size_t>(c.binding)], src, c.bytes,
                                    cudaMemcpyDeviceToDevice, stream));
  }
}

void ExecutionContext::SetInputShapes(const InputShapes& shapes) {
  Impl& c = *impl_;
  const Engine::Impl& e = *c.engine;
  auto find_input = [&](const std::vector<TensorDesc>& list, const std::string& name) -> const TensorDesc* {
    for (const TensorDesc& d : list)
      if (d.name == name) return &d;
    return nullptr;
  };
  for (const auto& [name, dims] : shapes) {
    if (find_input(e.inputs, name)) continue;
    std::string names;
    for (const TensorDesc& d : e.inputs) names += (names.empty() ? "" : ", ") + d.name;
    Fail("SetInputShapes: the engine has no input named '", name, "' (its inputs: ", names, ")");
  }
  if (e.profiles.empty()) {
    for (const auto& [name, dims] : shapes) {
      const TensorDesc* d = find_input(e.inputs, name);
      KILN_CHECK(d->dims == dims, "input '", name, "': the engine has static shapes, built for ",
                 ShapeText(d->dims), ", got ", ShapeText(dims),
                 "; rebuild it with --shapes or --profile covering these dims");
    }
    return;
  }
  // A shape this context has run: no allocation, no lock.
  bool complete = true;
  for (const auto& [name, range] : e.profiles[0].inputs) complete = complete && shapes.count(name);
  if (complete) {
    for (const auto& state : c.states) {
      const runtime::Plan& plan = *state->plan;
      bool same = true;
      for (const auto& [name, dims] : shapes) {
        const TensorDesc* d = find_input(plan.inputs, name);
        same = same && d && d->dims == dims;
      }
      if (same) {
        c.current = state.get();
        return;
      }
    }
  }
  const runtime::Plan& plan = e.PlanFor(shapes);  // Throws when no profile covers the dims.
  for (const auto& [name, dims] : shapes) {
    const TensorDesc* d = find_input(plan.inputs, name);
    KILN_CHECK(d && d->dims == dims, "input '", name, "' must be ", d ? ShapeText(d->dims) : "?",
               " (no optimization profile names it), got ", ShapeText(dims));
  }
  c.Select(plan);
}

const std::vector<TensorDesc>& ExecutionContext::CurrentInputs() const { return impl_->current->plan->inputs; }
const std::vector<TensorDesc>& ExecutionContext::CurrentOutputs() const { return impl_->current->plan->outputs; }

const std::vector<int64_t>& ExecutionContext::OutputDims(int index) const {
  const std::vector<TensorDesc>& outputs = CurrentOutputs();
  KILN_CHECK(index >= 0 && static_cast<size_t>(index) < outputs.size(), "OutputDims: output ", index,
             " of ", outputs.size());
  return outputs[static_cast<size_t>(index)].dims;
}

int ExecutionContext::ProfileIndex() const { return impl_->current->plan->profile; }

void ExecutionContext::Enqueue(const std::vector<const void*>& inputs,
                               const std::vector<void*>& outputs, cudaStream_t stream) {
  Impl& c = *impl_;
  c.Bind(inputs, outputs);
  const runtime::Plan& plan = *c.current->plan;
  for (size_t n = 0; n < c.current->args.size(); ++n)
    if (plan.launches[n]) c.LaunchNode(n, stream);
  c.CopyOutputs(inputs, outputs, stream);
}

void ExecutionContext::EnqueueGraph(const std::vector<const void*>& inputs,
                                    const std::vector<void*>& outputs, cudaStream_t stream) {
  Impl& ctx = *impl_;
  Impl::PlanState& c = *ctx.current;  // The graph of the current shape's plan.
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
    c.graph_kernel_nodes = cuda::CountKernelNodes(graph);
    c.graph_inputs = inputs;
    c.graph_outputs = outputs;
  }
  KILN_CUDA_CHECK(cudaGraphLaunch(c.graph_exec, stream));
}

int ExecutionContext::GraphKernelNodes() const { return impl_->current->graph_kernel_nodes; }

size_t ExecutionContext::DeviceMemoryBytes() const {
  return impl_->arena_capacity + impl_->workspace_capacity;
}

std::vector<Tensor> ExecutionContext::Run(const std::map<std::string, Tensor>& inputs) {
  if (!impl_->engine->profiles.empty()) {
    InputShapes shapes;
    for (const auto& [name, t] : inputs) shapes[name] = t.dims();
    SetInputShapes(shapes);
  }
  const runtime::Plan& e = *impl_->current->plan;
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
  const size_t n_layers = c.current->args.size();
  std::vector<cudaEvent_t> events(n_layers + 1);
  for (auto& ev : events) KILN_CUDA_CHECK(cudaEventCreate(&ev));
  std::vector<std::vector<float>> samples(n_layers);
  for (int it = 0; it < iterations + 1; ++it) {
    KILN_CUDA_CHECK(cudaEventRecord(events[0], stream));
    for (size_t n = 0; n < n_layers; ++n) {
      if (c.current->plan->launches[n]) c.LaunchNode(n, stream);
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
