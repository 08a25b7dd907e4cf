// The inside of kiln::Engine and kiln::ExecutionContext (include/kiln/engine.h).
//
// An engine is a lowered ir::Graph (every value has a concrete dtype, dims and
// layout; constants hold the weights in their final dtype and layout) plus the
// tactic chosen for each node. From those two, Engine::Impl::Create rebuilds
// everything else deterministically — layers, memory plan, device weights —
// both after a build and when an engine file is loaded, so the file stores no
// derived state that could disagree with the code.
#pragma once

#include <memory>
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

struct Engine::Impl {
  // ---- What the engine file stores ----
  std::unique_ptr<ir::Graph> graph;  // Lowered, topologically sorted.
  std::unordered_map<const ir::Value*, gpu::Layout> layouts;  // Only non-row-major entries.
  std::vector<int> tactics;                 // Per node, in graph order.
  std::vector<std::string> fused_from;      // Per node: the ONNX nodes it replaced.
  Precision precision = Precision::kFP32;
  EngineInfo info;                           // Build facts (layers' times, build time).

  // ---- Derived by Create ----
  std::vector<TensorDesc> inputs, outputs;
  std::unordered_map<const ir::Value*, int> value_index;
  std::vector<const ir::Value*> values;      // By index.
  std::vector<gpu::TensorDesc> descs;        // By value index.
  std::vector<runtime::ValueSlot> slots;     // By value index; aliases point at their root's slot.
  std::vector<std::unique_ptr<gpu::Layer>> layers;  // Per node.
  std::vector<bool> launches;                // Per node: false when every output is an alias.
  std::vector<runtime::OutputCopy> output_copies;
  size_t arena_bytes = 0;
  size_t workspace_bytes = 0;
  void* weights = nullptr;                   // Device weight block.
  size_t weight_bytes = 0;
  gpu::Handles handles;                      // For layer creation.

  ~Impl();
  // Derives the run-time state from graph/layouts/tactics/precision.
  void Create();
  gpu::TensorDesc DescOf(const ir::Value* v) const;
  gpu::LayerInit MakeInit(const ir::Node& node) const;
};

struct ExecutionContext::Impl {
  const Engine::Impl* engine = nullptr;
  void* arena = nullptr;
  void* workspace = nullptr;
  gpu::Handles handles;
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
  // CUDA Graph state.
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t graph_exec = nullptr;
  std::vector<const void*> graph_inputs;
  std::vector<void*> graph_outputs;
  int graph_kernel_nodes = 0;

  ~Impl();
  void Bind(const std::vector<const void*>& inputs, const std::vector<void*>& outputs);
  void LaunchNode(size_t n, cudaStream_t stream);
  void CopyOutputs(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                   cudaStream_t stream);
  const void* ValuePointer(int value, const std::vector<const void*>& inputs,
                           const std::vector<void*>& outputs) const;
};

// Creates the cuDNN/cuBLASLt handle pair (engine.cc).
gpu::Handles CreateHandles();
void DestroyHandles(gpu::Handles& handles);

}  // namespace kiln
