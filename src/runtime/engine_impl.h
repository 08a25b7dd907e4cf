// The inside of kiln::Engine and kiln::ExecutionContext (include/kiln/engine.h).
//
// A plan is a lowered ir::Graph (every value has a concrete dtype, dims and
// layout; constants hold the weights in their final dtype and layout) plus the
// tactic chosen for each node. From those two, Plan::Create rebuilds
// everything else deterministically — layers, memory plan, device weights —
// both after a build and when an engine file is loaded, so the file stores no
// derived state that could disagree with the code. A static engine is one
// plan; an engine with optimization profiles is a set of them (Engine::Impl).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/layer.h"
#include "ir/graph.h"
#include "kiln/engine.h"

namespace kiln {

namespace runtime {

// Where a value's bytes live while an inference runs.
enum class Storage : uint8_t {
  kNone,      // Omitted optional value, or a host-only constant.
  kWeight,    // In the engine's weight block (shared by contexts).
  kArena,     // In the context's activation arena.
  kInput,     // A caller's input binding.
  kOutput,    // A caller's output binding.
};

struct ValueSlot {
  Storage storage = Storage::kNone;
  size_t offset = 0;  // Into the weight block or arena.
  int binding = -1;   // For kInput/kOutput.
};

// Copies done after the layers: graph outputs that are views of other
// values, constants or inputs (the caller's output buffer must be filled).
struct OutputCopy {
  int value = -1;  // Source value index.
  int binding = -1;
  size_t bytes = 0;
};

}  // namespace runtime

namespace runtime {

// Device weights shared by the plans of one engine: identical bytes (same
// dtype, dims and content) are uploaded once, found by an FNV-1a hash.
struct WeightStore {
  struct Entry {
    Tensor host;  // Kept to compare bytes on a hash match (shares the graph's storage).
    void* device = nullptr;
  };
  std::unordered_map<uint64_t, std::vector<Entry>> entries;
  size_t unique_bytes = 0;     // Uploaded.
  size_t requested_bytes = 0;  // Asked for by all plans (before sharing).

  WeightStore() = default;
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;
  ~WeightStore();
  // The device copy of `t`'s bytes, uploading them on first sight.
  void* Intern(const Tensor& t);
};

// One shape-specialized executable graph: an ONNX model lowered at concrete
// input dims, with a tactic per node and the state derived from both.
struct Plan {
  // ---- What the engine file stores ----
  std::unique_ptr<ir::Graph> graph;  // Lowered, topologically sorted.
  std::unordered_map<const ir::Value*, gpu::Layout> layouts;  // Only non-row-major entries.
  std::vector<int> tactics;                 // Per node, in graph order.
  std::vector<std::string> fused_from;      // Per node: the ONNX nodes it replaced.
  Precision precision = Precision::kFP32;
  EngineInfo info;                           // Build facts (layers' times, build time).
  int profile = -1;                          // Optimization profile; -1 in static engines.

  // ---- Derived by Create ----
  std::vector<TensorDesc> inputs, outputs;
  std::unordered_map<const ir::Value*, int> value_index;
  std::vector<const ir::Value*> values;      // By index.
  std::vector<gpu::TensorDesc> descs;        // By value index.
  std::vector<runtime::ValueSlot> slots;     // By value index; aliases point at their root's slot.
  std::vector<std::unique_ptr<gpu::Layer>> layers;  // Per node.
  std::vector<bool> launches;                // Per node: false when every output is an alias.
  std::vector<runtime::OutputCopy> output_copies;
  std::unordered_map<size_t, void*> shared_weights;  // With a WeightStore: weight slot offset -> device bytes.
  size_t arena_bytes = 0;
  size_t workspace_bytes = 0;
  void* weights = nullptr;                   // Device weight block (without a WeightStore).
  size_t weight_bytes = 0;
  gpu::Handles handles;                      // For layer creation.
  bool owns_handles = true;                  // False where borrowed from the engine's base plan.

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  virtual ~Plan();
  // Derives the run-time state from graph/layouts/tactics/precision. With a
  // store, weights go there (shared with the engine's other plans) instead
  // of a block of their own. `fallback_tactics`: a stored tactic a layer does
  // not accept (borrowed from another shape) becomes the layer's default (0)
  // instead of an error.
  void Create(WeightStore* store = nullptr, bool fallback_tactics = false);
  gpu::TensorDesc DescOf(const ir::Value* v) const;
  gpu::LayerInit MakeInit(const ir::Node& node) const;
  // Device address of a kWeight value.
  void* WeightPointer(int value) const;
  // This plan's dims of the inputs profile `p` names.
  InputShapes ProfileDims(const OptimizationProfile& p) const;
};

// How an engine with profiles lowers a new shape: the build settings that,
// with the source model and the input dims, determine a plan.
struct LoweringOptions {
  Precision precision = Precision::kFP32;
  std::string conv_layout = "auto";
  std::map<std::string, Tensor> frozen_inputs;
  InputShapes shapes;  // Dims of inputs no profile names (BuildConfig::shapes).
  ImageInput image_input;  // BuildConfig::image_input.
  // FuseConvPool in FP16 NHWC builds; KILN_CONV_POOL=0 at build time turns it
  // off (A/B measurements), and shapes specialized later lower the same way.
  bool conv_pool_stems = true;
};

}  // namespace runtime

// A static engine is one Plan (this struct's base). An engine with
// optimization profiles is a set of plans grouped by profile: the base is
// profile 0's opt-shape plan (its dims are what Engine::inputs() reports),
// `plans` holds the others built at build time (each profile's opt, min and
// max) and those specialized at run time for new shapes.
struct Engine::Impl : runtime::Plan {
  std::vector<OptimizationProfile> profiles;  // Empty: static shapes.
  runtime::LoweringOptions lowering;
  std::string source_onnx;                    // The model's bytes, for new shapes.
  std::unique_ptr<runtime::WeightStore> weight_store;
  // Largest arena/workspace of the plans built at build/load time: what a
  // context allocates.
  size_t max_arena_bytes = 0;
  size_t max_workspace_bytes = 0;
  std::vector<const runtime::Plan*> opt_plans;  // Per profile.
  // Where the one line about a shape specialized at run time goes; null:
  // stderr (the build's log may not outlive Build).
  std::function<void(const std::string&)> log;

  mutable std::mutex plans_mutex;  // Guards `plans` (contexts on several threads).
  mutable std::vector<std::unique_ptr<runtime::Plan>> plans;

  // Profile p's opt-shape plan (tactics to borrow for new shapes).
  const runtime::Plan& OptPlan(int profile) const;
  // The plan for exactly these input dims: selects the profile (throws when
  // none covers them), then finds a built plan or specializes a new one.
  const runtime::Plan& PlanFor(const InputShapes& shapes) const;
  // Lowers the source model at `shapes` for profile p, borrowing the
  // profile's opt-shape tactics by node name (no timing), and creates it on
  // the shared weight store. Needs opt_plans[p].
  std::unique_ptr<runtime::Plan> Specialize(int p, const InputShapes& shapes) const;
  // Sets opt_plans, max_arena_bytes/max_workspace_bytes and the engine-wide
  // info fields once every build/load-time plan exists.
  void Summarize();
};

struct ExecutionContext::Impl {
  const Engine::Impl* engine = nullptr;
  // One arena and workspace for every plan (one inference at a time per
  // context), sized for the engine's largest plan.
  void* arena = nullptr;
  size_t arena_capacity = 0;
  void* workspace = nullptr;
  size_t workspace_capacity = 0;
  gpu::Handles handles;

  // What a context prepares per plan it has run.
  struct PlanState {
    const runtime::Plan* plan = nullptr;
    // Per node, the launch arguments with arena/weight pointers resolved;
    // binding pointers are patched in at each Enqueue from the refs below.
    std::vector<gpu::LaunchArgs> args;
    struct BindingRef {
      int node;
      bool is_output;   // Which list of the node's LaunchArgs.
      int slot;         // Index in that list.
      bool binding_is_output;
      int binding;
    };
    std::vector<BindingRef> binding_refs;
    // CUDA Graph state (one graph per plan, i.e. per shape).
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t graph_exec = nullptr;
    std::vector<const void*> graph_inputs;
    std::vector<void*> graph_outputs;
    int graph_kernel_nodes = 0;
    ~PlanState();
  };
  std::vector<std::unique_ptr<PlanState>> states;  // Plans this context has run.
  PlanState* current = nullptr;

  ~Impl();
  // Selects (preparing on first use) the state of `plan`; grows the arena or
  // workspace if a plan specialized at run time needs more.
  void Select(const runtime::Plan& plan);
  void Bind(const std::vector<const void*>& inputs, const std::vector<void*>& outputs);
  void LaunchNode(size_t n, cudaStream_t stream);
  void CopyOutputs(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                   cudaStream_t stream);
  const void* ValuePointer(int value, const std::vector<const void*>& inputs,
                           const std::vector<void*>& outputs) const;
};

namespace builder {
// The build's lowering pipeline (builder.cc): imports `onnx_bytes` (no
// external data), freezes inputs, specializes `shapes` (plus
// options.shapes), optimizes, assigns precision, fuses and assigns layouts.
// Returns a plan with graph, layouts and precision set (no tactics yet).
std::unique_ptr<runtime::Plan> LowerModelBytes(const std::string& onnx_bytes, const std::string& source,
                                               const runtime::LoweringOptions& options,
                                               const InputShapes& shapes,
                                               const std::function<void(const std::string&)>& log);
}  // namespace builder

// Creates the cuDNN/cuBLASLt handle pair (engine.cc).
gpu::Handles CreateHandles();
void DestroyHandles(gpu::Handles& handles);

}  // namespace kiln
