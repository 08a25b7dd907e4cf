// kiln's GPU engine API, split like TensorRT's into build time and run time:
//
//   kiln::BuildConfig config;                       // precision, shapes, timing cache
//   config.precision = kiln::Precision::kFP16;
//   config.shapes["input"] = {32, 3, 224, 224};
//   auto engine = kiln::Engine::Build("resnet50.onnx", config);   // lower, fuse, autotune
//   engine->Save("resnet50.kiln");                   // later: kiln::Engine::Load(path)
//
//   auto context = engine->CreateContext();          // activation memory, handles
//   context->Enqueue(device_inputs, device_outputs, stream);  // launches only
//
// An Engine is immutable and owns the weights on the device; any number of
// ExecutionContexts share them, each with its own activation arena and
// library handles, so contexts on different streams/threads run concurrently.
// Enqueue allocates nothing and never synchronizes with the host; it can be
// captured into a CUDA Graph, and EnqueueGraph does that for you.
//
// Dynamic shapes: with BuildConfig::profiles the engine accepts any input
// dims inside a profile's [min, max] (tuned at opt); call
// context->SetInputShapes({{"input", {8, 3, 224, 224}}}) before Enqueue.
// Each distinct shape runs its own shape-specialized plan: built at build
// time (each profile's min, opt, max) or specialized on the first use of a
// shape from the model kept in the engine, reusing the profile's opt-shape
// tactics (no timing at run time; the first use of a new shape allocates host
// memory and uploads no weights twice). Later uses of a seen shape allocate
// nothing, and a context's CUDA Graphs are kept per shape.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/image.h"
#include "kiln/kiln.h"
#include "kiln/shape_profile.h"
#include "kiln/tensor.h"

namespace kiln {

enum class Precision {
  kFP32,  // FP32 storage and math (TF32 off): the accuracy reference.
  kTF32,  // FP32 storage, TF32 tensor-core math in convolutions and GEMMs.
  kFP16,  // FP16 storage, FP32 accumulation.
  kBF16,  // BF16 storage, FP32 accumulation.
};
const char* PrecisionName(Precision p);
// Parses "fp32", "tf32", "fp16", "bf16"; throws on anything else.
Precision ParsePrecision(const std::string& name);

struct BuildConfig {
  Precision precision = Precision::kFP32;
  // Concrete dims per input name, for inputs with dynamic dims. Dynamic dims
  // not given here are set to 1 (and reported in the build log).
  std::map<std::string, std::vector<int64_t>> shapes;
  // Inputs fixed at build time: they become constants of the engine (and
  // are no longer bindings). For shape operands a model takes as inputs
  // (a Reshape's shape, Resize's scales, ...), since engines have static shapes.
  std::map<std::string, Tensor> frozen_inputs;
  // Channels-last convolutions: "auto" (NHWC for FP16/BF16, NCHW otherwise),
  // "nhwc" or "nchw".
  std::string conv_layout = "auto";
  // A file mapping layer signatures to the fastest tactic; read before and
  // written after the build so a rebuild skips timing.
  std::string timing_cache_path;
  int tuning_iterations = 10;  // Timed runs per tactic (after 2 warm-ups).
  // Build log lines (per-layer choices with verbose) go here; null: silent.
  std::function<void(const std::string&)> log;
  bool verbose = false;
  // Optimization profiles (include/kiln/shape_profile.h): when given, the
  // engine accepts dynamic input dims inside each profile's ranges. `shapes`
  // then only fixes the inputs no profile names. The model must be
  // self-contained (no external data): the engine keeps it to specialize
  // shapes first seen at run time.
  std::vector<OptimizationProfile> profiles;
  // Images in (include/kiln/image.h): the named float [N, C, H, W] input
  // becomes a uint8 [N, H, W, C] binding (same name) and the engine
  // normalizes it, fused into a space-to-depth stem where there is one.
  // `shapes` and `profiles` then give that input's dims as [N, H, W, C].
  ImageInput image_input;
};

// One layer of a built engine, for reports.
struct LayerInfo {
  std::string name;
  std::string op_type;     // "KilnConv", "KilnMatMul", "Softmax", ...
  std::string fused;       // The ONNX nodes it replaced, comma separated.
  std::string tactic;      // The chosen implementation.
  int num_tactics = 1;
  double tactic_time_ms = 0;  // Measured time of the chosen tactic (0 when cached/not timed).
  std::string inputs, outputs;  // "float16[32,64,56,56] nhwc, ..."
  double flops = 0;       // Floating-point operations per inference.
  double bytes = 0;       // Bytes read + written (inputs, weights, outputs).
  int kernel_launches = 0;
  bool alias = false;     // Zero-copy view (Reshape, Flatten, ...): no launch.
};

struct EngineInfo {
  Precision precision = Precision::kFP32;
  std::string gpu_name;
  int sm = 0;  // 90 for Hopper.
  size_t weight_bytes = 0;
  size_t activation_bytes = 0;  // Peak, after liveness-based sharing.
  size_t workspace_bytes = 0;
  int kernel_launches = 0;  // Per inference, as planned (measured by CUDA Graph capture in bench).
  double build_seconds = 0;
  int tactics_timed = 0;
  int tactics_cached = 0;
  std::vector<LayerInfo> layers;  // Of the plan inputs()/outputs() describe.
  // Engines with optimization profiles (otherwise 0 and 1): shape-specialized
  // plans built so far, and the weight bytes they would need without sharing
  // identical weights (weight_bytes counts each distinct weight once;
  // activation_bytes/workspace_bytes are the largest plan's).
  int num_profiles = 0;
  int num_plans = 1;
  size_t weight_bytes_unshared = 0;
};

class ExecutionContext;

class Engine {
 public:
  // Imports, specializes shapes, lowers and autotunes. Throws kiln::Error
  // naming the node/value for anything kiln cannot run on the GPU.
  static std::unique_ptr<Engine> Build(const std::string& onnx_path, const BuildConfig& config);
  // Loads a file written by Save. Throws on a corrupt file, a file of another
  // format version, or one built for another GPU architecture/library version.
  static std::unique_ptr<Engine> Load(const std::string& path);
  void Save(const std::string& path) const;
  ~Engine();

  // Bindings with concrete dims, in model order. Inputs and outputs keep the
  // model's dtypes (float32 for float models) whatever the precision.
  const std::vector<TensorDesc>& inputs() const;
  const std::vector<TensorDesc>& outputs() const;
  const EngineInfo& info() const;
  // Empty for a static-shape engine. For one with profiles, inputs() and
  // outputs() give profile 0's opt dims; a context's bindings follow
  // ExecutionContext::SetInputShapes.
  const std::vector<OptimizationProfile>& profiles() const;

  std::unique_ptr<ExecutionContext> CreateContext() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ExecutionContext {
 public:
  ~ExecutionContext();

  // Chooses the input dims of the next Enqueue/EnqueueGraph/ProfileLayers
  // (TensorRT's setInputShape). Inputs no profile names may be left out.
  // Throws naming the input, its dims and the profiles' ranges when no
  // profile covers them; a static engine accepts only the dims it was built
  // for. A shape seen before allocates nothing.
  void SetInputShapes(const InputShapes& shapes);
  // The current bindings (after SetInputShapes; the engine's otherwise).
  const std::vector<TensorDesc>& CurrentInputs() const;
  const std::vector<TensorDesc>& CurrentOutputs() const;
  const std::vector<int64_t>& OutputDims(int index) const;
  // The profile the current shape falls in; -1 for a static engine.
  int ProfileIndex() const;

  // Device pointers to each input/output, in binding order (contiguous,
  // row-major, the binding's dtype and dims). Launches on `stream` only.
  void Enqueue(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
               cudaStream_t stream);
  // Same, replayed as a CUDA Graph: captured on the first call and whenever
  // the binding pointers change.
  void EnqueueGraph(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                    cudaStream_t stream);
  // Kernel nodes in the captured CUDA Graph (0 before the first EnqueueGraph).
  int GraphKernelNodes() const;

  // Convenience for tests and the CLI: copies host tensors in, runs, copies
  // outputs back (synchronous). Checks names, dtypes and dims; with profiles
  // it first selects the inputs' dims (SetInputShapes).
  std::vector<Tensor> Run(const std::map<std::string, Tensor>& inputs);

  // Times every layer with CUDA events (median of `iterations`), in ms, in
  // layer order (aliases get 0). Bindings as for Enqueue.
  std::vector<double> ProfileLayers(const std::vector<const void*>& inputs,
                                    const std::vector<void*>& outputs, cudaStream_t stream,
                                    int iterations);

  // Device memory this context owns (activation arena + workspace), sized
  // once for the engine's largest plan: switching shapes does not grow it.
  size_t DeviceMemoryBytes() const;

  struct Impl;

 private:
  friend class Engine;
  explicit ExecutionContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
