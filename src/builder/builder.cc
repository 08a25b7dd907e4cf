// Engine::Build: ONNX file → lowered graph → layers with the fastest tactics.
#include <cublasLt.h>
#include <cudnn.h>

#include <algorithm>
#include <functional>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "builder/conv_space_to_depth.h"
#include "builder/fuse_attention.h"
#include "builder/fuse_conv_gemm.h"
#include "builder/fuse_conv_pool.h"
#include "builder/fuse_elementwise.h"
#include "builder/fuse_layernorm.h"
#include "builder/image_input.h"
#include "builder/lower.h"
#include "builder/tactic_choice.h"
#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "onnx/importer.h"
#include "ops/registry.h"
#include "passes/passes.h"
#include "runtime/engine_impl.h"

namespace kiln {
namespace {

// ---- Timing cache: one line per layer signature → tactic index.

std::string AttrText(const ir::AttrValue& v) {
  std::ostringstream s;
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Tensor>) {
          s << x.TypeString();
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>> ||
                             std::is_same_v<T, std::vector<float>> ||
                             std::is_same_v<T, std::vector<std::string>>) {
          s << "[";
          for (const auto& e : x) s << e << ",";
          s << "]";
        } else {
          s << x;
        }
      },
      v);
  return s.str();
}

std::string LayerSignature(const gpu::LayerInit& init, const std::string& device) {
  std::ostringstream s;
  s << device << "|" << init.node.op_type << "|";
  for (const auto& [name, value] : init.node.attrs.all()) s << name << "=" << AttrText(value) << ";";
  s << "|";
  for (const gpu::TensorDesc& d : init.inputs) s << (d.defined() ? d.ToString() : "-") << ",";
  s << "|";
  for (const gpu::TensorDesc& d : init.outputs) s << d.ToString() << ",";
  s << "|fp16=" << init.precision.fp16 << ",bf16=" << init.precision.bf16
    << ",tf32=" << init.precision.tf32;
  return s.str();
}

class TimingCache {
 public:
  explicit TimingCache(std::string path) : path_(std::move(path)) {
    if (path_.empty()) return;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      size_t tab = line.rfind('\t');
      if (tab == std::string::npos) continue;
      try {
        entries_[line.substr(0, tab)] = std::stoi(line.substr(tab + 1));
      } catch (const std::exception&) {
        // A damaged line only costs a re-timing.
      }
    }
  }
  int Find(const std::string& key) const {
    auto it = entries_.find(key);
    return it == entries_.end() ? -1 : it->second;
  }
  void Put(const std::string& key, int tactic) { entries_[key] = tactic; }
  void Save() const {
    if (path_.empty()) return;
    std::ofstream out(path_, std::ios::trunc);
    KILN_CHECK(out, "cannot write the timing cache '", path_, "'");
    for (const auto& [key, tactic] : entries_) out << key << "\t" << tactic << "\n";
  }

 private:
  std::string path_;
  std::map<std::string, int> entries_;
};

using cuda::DeviceBuffer;

// Times one tactic as engines run it: `reps` enqueues captured into a CUDA
// Graph and replayed, so the host cost of each library call (large next to
// a 10 us kernel at batch 1) is not counted, as it is not in a graph replay.
// Timing each enqueue between two events on an idle stream counted it and
// preferred cheap-to-launch non-tensor-core algorithms at small batch.
// Returns `iterations` samples in ms per enqueue (after two warm-ups) and
// the kernel nodes one enqueue adds to the graph.
struct EnqueueTimings {
  std::vector<float> samples;
  int kernels = 0;
};
EnqueueTimings TimeEnqueues(gpu::Layer& layer, gpu::LaunchArgs& args, cudaStream_t stream,
                            cudaEvent_t start, cudaEvent_t stop, int iterations) {
  auto time_once = [&](const std::function<void()>& launch) {
    KILN_CUDA_CHECK(cudaEventRecord(start, stream));
    launch();
    KILN_CUDA_CHECK(cudaEventRecord(stop, stream));
    KILN_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return ms;
  };
  iterations = std::max(iterations, 1);
  // Warm-up (and a failing tactic throws here, outside any capture).
  float single = 0;
  for (int it = 0; it < 2; ++it) single = time_once([&] { layer.Enqueue(args); });
  // Enough enqueues per replay for ~0.2 ms of GPU work, at most 20.
  const int reps = std::clamp(static_cast<int>(0.2f / std::max(single, 1e-3f)), 1, 20);
  cudaGraph_t graph = nullptr;
  KILN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    for (int r = 0; r < reps; ++r) layer.Enqueue(args);
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  EnqueueTimings timings;
  try {
    timings.kernels = cuda::CountKernelNodes(graph) / reps;
  } catch (...) {
    cudaGraphDestroy(graph);
    throw;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  KILN_CUDA_CHECK(instantiated);
  try {
    KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream));  // Warm-up replay.
    for (int it = 0; it < iterations; ++it) {
      timings.samples.push_back(
          time_once([&] { KILN_CUDA_CHECK(cudaGraphLaunch(exec, stream)); }) / reps);
    }
  } catch (...) {
    cudaGraphExecDestroy(exec);
    throw;
  }
  cudaGraphExecDestroy(exec);
  return timings;
}

// Times each tactic of `layer` on its real shapes with non-zero data and
// returns (best tactic, its median ms). Tactics that fail are skipped.
std::pair<int, double> TimeTactics(gpu::Layer& layer, const gpu::LayerInit& init,
                                   const gpu::Handles& handles, int iterations,
                                   const std::function<void(const std::string&)>& log) {
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  gpu::LaunchArgs args;
  args.handles = handles;
  for (size_t i = 0; i < init.inputs.size(); ++i) {
    const gpu::TensorDesc& d = init.inputs[i];
    if (!d.defined() || !layer.ReadsInputOnDevice(static_cast<int>(i))) {
      args.inputs.push_back(nullptr);
      continue;
    }
    buffers.push_back(std::make_unique<DeviceBuffer>(std::max<size_t>(d.nbytes(), 1)));
    if (init.constants[i]) {
      KILN_CUDA_CHECK(cudaMemcpy(buffers.back()->ptr, init.constants[i]->raw_data(), d.nbytes(),
                                 cudaMemcpyHostToDevice));
    } else if (d.nbytes()) {
      // Small non-zero values of every float type (0x3C bytes: 1.06 in
      // float16, 0.0115 in float32); integer inputs get zeros so indices stay
      // in range.
      int byte = IsFloatingPoint(d.dtype) ? 0x3C : 0;
      KILN_CUDA_CHECK(cudaMemset(buffers.back()->ptr, byte, d.nbytes()));
    }
    args.inputs.push_back(buffers.back()->ptr);
  }
  for (const gpu::TensorDesc& d : init.outputs) {
    buffers.push_back(std::make_unique<DeviceBuffer>(std::max<size_t>(d.nbytes(), 1)));
    args.outputs.push_back(buffers.back()->ptr);
  }
  cudaStream_t stream = nullptr;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  args.stream = stream;
  cudaEvent_t start, stop;
  KILN_CUDA_CHECK(cudaEventCreate(&start));
  KILN_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<builder::TimedTactic> timed;
  for (int t = 0; t < layer.NumTactics(); ++t) {
    try {
      layer.SetTactic(t);
      DeviceBuffer workspace(layer.WorkspaceBytes());
      args.workspace = workspace.ptr;
      EnqueueTimings timings = TimeEnqueues(layer, args, stream, start, stop, iterations);
      std::vector<float>& samples = timings.samples;
      std::sort(samples.begin(), samples.end());
      timed.push_back({t, samples[samples.size() / 2], timings.kernels});
    } catch (const Error& e) {
      cudaGetLastError();
      if (log) log(StrCat("  ", init.node.name, ": tactic ", t, " (", layer.TacticName(), ") failed: ", e.what()));
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  const int best = builder::ChooseTactic(timed);
  KILN_CHECK(best >= 0, init.node.Describe(), ": every tactic failed on the GPU");
  double best_ms = 0;
  for (const builder::TimedTactic& t : timed)
    if (t.index == best) best_ms = t.median_ms;
  return {best, best_ms};
}

double LayerFlops(const ir::Node& node) {
  std::string op = node.op_type;
  const bool packed_qkv = op == "KilnAttention" && node.attrs.GetInt("packed_qkv", 0) != 0;
  if (op == "KilnAttention" && !node.inputs.empty() && node.inputs[0] &&
      (packed_qkv || (node.inputs.size() >= 2 && node.inputs[1]))) {
    // Q·Kᵀ and P·V: 2 x 2·b·sq·sk·(h·d) for Q [b,sq,h·d] or [b,sq,h,d], K [b,sk,...]
    // (packed: Q, K, V are the column thirds of one [b,s,3·h·d]).
    const std::vector<int64_t> q = ir::KnownDims(*node.inputs[0]->type.shape);
    const std::vector<int64_t> k = ir::KnownDims(*node.inputs[packed_qkv ? 0 : 1]->type.shape);
    if (q.size() >= 3 && k.size() >= 2) {
      double heads_x_dim = packed_qkv ? 1.0 / 3.0 : 1.0;
      for (size_t i = 2; i < q.size(); ++i) heads_x_dim *= static_cast<double>(q[i]);
      return 4.0 * static_cast<double>(q[0]) * static_cast<double>(q[1]) * static_cast<double>(k[1]) *
             heads_x_dim;
    }
  }
  if (op == "KilnConv") op = "Conv";
  if (op == "KilnMatMul") op = "MatMul";
  std::vector<ir::TensorType> ins, outs;
  for (const ir::Value* v : node.inputs) ins.push_back(v ? v->type : ir::TensorType{});
  for (const ir::Value* v : node.outputs) outs.push_back(v ? v->type : ir::TensorType{});
  const OpDef* def = OpRegistry::Global().Find(op);
  if (def && def->flops && op != "MatMul") {
    try {
      return def->flops(node, ins, outs);
    } catch (const Error&) {
    }
  }
  if (op == "MatMul" && node.inputs.size() >= 2 && node.inputs[0] && node.outputs[0]) {
    // 2·M·N·K, K being A's last dim.
    const auto a = ir::KnownDims(*node.inputs[0]->type.shape);
    const auto y = ir::KnownDims(*node.outputs[0]->type.shape);
    return 2.0 * static_cast<double>(Product(y)) * static_cast<double>(a.back());
  }
  double n = 0;
  for (const ir::TensorType& t : outs)
    if (t.has_rank()) n += static_cast<double>(Product(ir::KnownDims(*t.shape)));
  return n;
}

std::string DescList(const std::vector<gpu::TensorDesc>& descs) {
  std::string s;
  for (const gpu::TensorDesc& d : descs) {
    if (!d.defined()) continue;
    if (!s.empty()) s += ", ";
    s += d.ToString();
  }
  return s;
}


// Creates a layer per node of `plan`, picks each one's tactic (timing cache,
// else timed on the GPU) into plan.tactics and reports it in plan.info.
void TuneTactics(runtime::Plan& plan, const BuildConfig& config, TimingCache& cache,
                 const std::string& device_key) {
  auto log = [&](const std::string& line) {
    if (config.log) config.log(line);
  };
  const gpu::GpuLayerRegistry& registry = gpu::GpuLayerRegistry::Global();
  EngineInfo& info = plan.info;
  for (const auto& node_ptr : plan.graph->nodes()) {
    const ir::Node& node = *node_ptr;
    const gpu::GpuOpDef* def = registry.Find(node.op_type);
    KILN_CHECK(def, node.Describe(), ": kiln has no GPU implementation of ", node.op_type);
    gpu::LayerInit init = plan.MakeInit(node);
    std::unique_ptr<gpu::Layer> layer = def->create(init);
    LayerInfo li;
    li.name = node.name;
    li.op_type = node.op_type;
    li.num_tactics = layer->NumTactics();
    li.inputs = DescList(init.inputs);
    li.outputs = DescList(init.outputs);
    li.flops = LayerFlops(node);
    for (size_t i = 0; i < init.inputs.size(); ++i)
      if (init.inputs[i].defined() && layer->ReadsInputOnDevice(static_cast<int>(i)))
        li.bytes += static_cast<double>(init.inputs[i].nbytes());
    for (const gpu::TensorDesc& d : init.outputs) li.bytes += static_cast<double>(d.nbytes());
    int tactic = 0;
    if (layer->NumTactics() > 1) {
      // The tactic count too: a cache written when the layer had other
      // tactics (another kiln or library version) must not pick by index.
      std::string key = StrCat(LayerSignature(init, device_key), "|tactics=", layer->NumTactics());
      int cached = cache.Find(key);
      if (cached >= 0 && cached < layer->NumTactics()) {
        tactic = cached;
        ++info.tactics_cached;
      } else {
        auto [best, ms] = TimeTactics(*layer, init, plan.handles, config.tuning_iterations, config.log);
        tactic = best;
        li.tactic_time_ms = ms;
        info.tactics_timed += layer->NumTactics();
        cache.Put(key, tactic);
      }
    }
    layer->SetTactic(tactic);
    li.tactic = layer->TacticName();
    li.kernel_launches = layer->KernelLaunches();
    plan.tactics.push_back(tactic);
    if (config.verbose)
      log(StrCat("  ", node.name, " [", node.op_type, "] ", li.inputs, " -> ", li.outputs,
                 ": tactic ", li.tactic, " (", tactic + 1, "/", li.num_tactics, ")",
                 li.tactic_time_ms > 0 ? StrCat(", ", li.tactic_time_ms * 1e3, " us") : ""));
    info.layers.push_back(std::move(li));
  }
}

// After Create: zero-copy views launch nothing.
void MarkAliases(runtime::Plan& plan) {
  for (size_t n = 0; n < plan.info.layers.size(); ++n) {
    bool alias = !plan.launches[n];
    plan.info.layers[n].alias = alias;
    if (alias) plan.info.layers[n].kernel_launches = 0;
  }
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "cannot open '", path, "'");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  KILN_CHECK(!in.bad(), "reading '", path, "' failed");
  return bytes;
}

}  // namespace

namespace builder {

// The lowering pipeline shared by every plan: the static build, each
// profile's plans and shapes specialized at run time. Returns the summary
// line for the build log.
std::string LowerGraph(ir::Graph& graph, std::unordered_map<const ir::Value*, gpu::Layout>& layouts,
                       const runtime::LoweringOptions& options, const InputShapes& shapes,
                       const std::function<void(const std::string&)>& log) {
  builder::FreezeInputs(graph, options.frozen_inputs);
  builder::ApplyImageInput(graph, options.image_input);  // Before shapes: they give the uint8 binding's dims.
  builder::SpecializeShapes(graph, shapes, log);
  passes::Optimize(graph);
  builder::CheckShapesConcrete(graph);

  DType low = DType::kFloat32;
  if (options.precision == Precision::kFP16) low = DType::kFloat16;
  if (options.precision == Precision::kBF16) low = DType::kBFloat16;
  builder::AssignPrecision(graph, low);
  bool nhwc = options.conv_layout == "nhwc" ||
              (options.conv_layout == "auto" && low != DType::kFloat32);
  KILN_CHECK(options.conv_layout == "auto" || options.conv_layout == "nhwc" ||
                 options.conv_layout == "nchw",
             "unknown convolution layout '", options.conv_layout, "' (auto, nhwc or nchw)");
  // The fused stem writes float16 NHWC; before ConvSpaceToDepth takes its conv.
  int conv_pools = low == DType::kFloat16 && nhwc && options.conv_pool_stems
                       ? builder::FuseConvPool(graph)
                       : 0;
  int stems = builder::ConvSpaceToDepth(graph);  // Before the epilogue fusion: bias/ReLU fuse into the new conv.
  int fused_conv = builder::FuseConvEpilogues(graph);
  int fused_gemm = builder::FuseGemmEpilogues(graph);
  int attentions = builder::FuseAttention(graph);  // FP16/BF16 only; before FuseElementwise takes the Div/Add.
  int packed_qkv = builder::PackAttentionQkv(graph);
  int sum_layernorms = builder::FuseSumLayerNorm(graph);  // Before FuseElementwise takes the Adds.
  int fused_elementwise = builder::FuseElementwise(graph);
  builder::FuseOutputCasts(graph);
  graph.SortTopologically();
  graph.RemoveUnusedValues();
  layouts = builder::AssignLayouts(graph, nhwc);
  builder::MergeCastsIntoLayoutChanges(graph, layouts);
  builder::FusePadSpaceToDepth(graph, layouts);
  graph.SortTopologically();
  graph.Validate();
  return StrCat("lowered: ", graph.nodes().size(), " layers (fused: ", fused_conv, " conv epilogues, ",
                fused_gemm, " GEMM epilogues, ", attentions, " attentions (", packed_qkv,
                " with packed QKV), ", fused_elementwise,
                " elementwise nodes, ", sum_layernorms, " sum-LayerNorms; ", stems,
                " space-to-depth stems, ", conv_pools, " conv+pool stems)");
}

std::unique_ptr<runtime::Plan> LowerModelBytes(const std::string& onnx_bytes, const std::string& source,
                                               const runtime::LoweringOptions& options,
                                               const InputShapes& shapes,
                                               const std::function<void(const std::string&)>& log) {
  auto plan = std::make_unique<runtime::Plan>();
  plan->precision = options.precision;
  plan->graph = onnx_import::ImportModelBytes(onnx_bytes, "", source);
  InputShapes all = options.shapes;
  for (const auto& [name, dims] : shapes) all[name] = dims;
  std::string line = builder::LowerGraph(*plan->graph, plan->layouts, options, all, log);
  if (log) log(line);
  return plan;
}

}  // namespace builder

std::unique_ptr<Engine> Engine::Build(const std::string& onnx_path, const BuildConfig& config) {
  auto started = std::chrono::steady_clock::now();
  std::string why;
  KILN_CHECK(cuda::DeviceAvailable(&why), "cannot build a GPU engine: ", why);
  auto log = [&](const std::string& line) {
    if (config.log) config.log(line);
  };

  auto impl = std::make_unique<Impl>();
  impl->precision = config.precision;
  runtime::LoweringOptions& lowering = impl->lowering;
  lowering.precision = config.precision;
  lowering.conv_layout = config.conv_layout;
  lowering.image_input = config.image_input;
  lowering.frozen_inputs = config.frozen_inputs;
  lowering.shapes = config.shapes;
  // KILN_CONV_POOL=0: the unfused stem, for A/B runs.
  const char* conv_pool_env = std::getenv("KILN_CONV_POOL");
  lowering.conv_pool_stems = !(conv_pool_env && std::string(conv_pool_env) == "0");
  const bool dynamic = !config.profiles.empty();
  if (!dynamic) {
    impl->graph = onnx_import::ImportModelFile(onnx_path);
    log(builder::LowerGraph(*impl->graph, impl->layouts, lowering, config.shapes, config.log));
  } else {
    ValidateProfiles(config.profiles);
    for (const auto& [name, range] : config.profiles[0].inputs)
      KILN_CHECK(!config.shapes.count(name), "input '", name,
                 "' has both a fixed shape (--shapes) and an optimization profile; give one");
    impl->profiles = config.profiles;
    impl->source_onnx = ReadFileBytes(onnx_path);
    // Profile 0's opt shapes make the base plan (what inputs()/outputs() report).
    InputShapes opt;
    for (const auto& [name, range] : config.profiles[0].inputs) opt[name] = range.opt;
    std::unique_ptr<runtime::Plan> base;
    try {
      base = builder::LowerModelBytes(impl->source_onnx, onnx_path, lowering, opt, nullptr);
    } catch (const Error& e) {
      if (std::string(e.what()).find("external") == std::string::npos) throw;
      Fail(e.what(), " (an engine with optimization profiles keeps the model to specialize new "
           "shapes, so the model must be self-contained: no external data)");
    }
    impl->graph = std::move(base->graph);
    impl->layouts = std::move(base->layouts);
    impl->profile = 0;
    impl->weight_store = std::make_unique<runtime::WeightStore>();
    log(StrCat("optimization profile 0: ", DescribeProfile(config.profiles[0])));
  }

  // Layers and tactics.
  impl->handles = CreateHandles();
  cuda::DeviceInfo device = cuda::QueryDevice(0);
  std::string device_key =
      StrCat(device.name, " sm_", device.compute_major, device.compute_minor, " cudnn ",
             cudnnGetVersion(), " cublasLt ", cublasLtGetVersion());
  TimingCache cache(config.timing_cache_path);
  EngineInfo& info = impl->info;
  info.gpu_name = device.name;
  info.sm = device.compute_major * 10 + device.compute_minor;
  TuneTactics(*impl, config, cache, device_key);
  cache.Save();
  impl->Create(impl->weight_store.get());
  MarkAliases(*impl);

  if (dynamic) {
    // Each further profile: its own opt-shape plan with its own tactics.
    impl->opt_plans.assign(config.profiles.size(), nullptr);
    impl->opt_plans[0] = impl.get();
    for (size_t p = 1; p < config.profiles.size(); ++p) {
      log(StrCat("optimization profile ", p, ": ", DescribeProfile(config.profiles[p])));
      InputShapes opt;
      for (const auto& [name, range] : config.profiles[p].inputs) opt[name] = range.opt;
      std::unique_ptr<runtime::Plan> plan =
          builder::LowerModelBytes(impl->source_onnx, onnx_path, lowering, opt, nullptr);
      plan->profile = static_cast<int>(p);
      plan->handles = impl->handles;
      plan->owns_handles = false;
      TuneTactics(*plan, config, cache, device_key);
      plan->Create(impl->weight_store.get());
      MarkAliases(*plan);
      info.tactics_timed += plan->info.tactics_timed;
      info.tactics_cached += plan->info.tactics_cached;
      impl->opt_plans[p] = plan.get();
      impl->plans.push_back(std::move(plan));
    }
    // Min and max plans borrow their profile's opt tactics, as shapes
    // specialized at run time do.
    for (size_t p = 0; p < config.profiles.size(); ++p) {
      std::vector<InputShapes> extremes(2);
      for (const auto& [name, range] : config.profiles[p].inputs) {
        extremes[0][name] = range.min;
        extremes[1][name] = range.max;
      }
      for (const InputShapes& shapes : extremes) {
        bool built = impl->profile == static_cast<int>(p) && impl->ProfileDims(config.profiles[p]) == shapes;
        for (const auto& plan : impl->plans)
          built = built || (plan->profile == static_cast<int>(p) && plan->ProfileDims(config.profiles[p]) == shapes);
        if (built) continue;
        impl->plans.push_back(impl->Specialize(static_cast<int>(p), shapes));
      }
    }
  }
  if (dynamic) cache.Save();  // With the other profiles' timings.
  impl->Summarize();
  if (dynamic)
    log(StrCat(info.num_plans, " shape-specialized plans for ", info.num_profiles,
               " optimization profiles; weights ", info.weight_bytes, " bytes on the device, shared (",
               info.weight_bytes_unshared, " bytes without sharing); activation arena ",
               info.activation_bytes, " bytes (largest plan)"));
  info.build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

}  // namespace kiln
