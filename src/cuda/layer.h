// The GPU layer interface: how one node of a built engine runs on the GPU.
//
// The builder (src/builder/) turns an ir::Graph with concrete shapes into a
// list of Layers, one per node, each created by the factory registered for the
// node's op_type in GpuLayerRegistry. A Layer is created once (at build time,
// and again when an engine file is loaded) and then enqueued many times:
//
//   * creation may inspect attributes, host constants, shapes; may query
//     cuDNN/cuBLASLt; must not allocate device memory (ask for workspace);
//   * Enqueue only launches kernels / library calls on the given stream: no
//     allocation, no host synchronization, capturable into a CUDA Graph.
//
// Kernels themselves live in src/cuda/kernels/*.cu behind plain launcher
// functions; layers (src/cuda/layers/*.cc, host C++) validate and call them.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "kiln/tensor.h"

struct cudnnContext;
struct cublasLtContext;

namespace kiln::gpu {

// How a value's elements are laid out in device memory. Logical dims are
// always the ONNX dims (N,C,H,W for images); kNHWC stores a rank-4 tensor
// channels-last so convolutions feed tensor cores without transposes.
enum class Layout : uint8_t { kRowMajor = 0, kNHWC = 1 };
const char* LayoutName(Layout layout);

// A value as the engine stores it on the device.
struct TensorDesc {
  DType dtype = DType::kUndefined;  // kUndefined marks an omitted optional input.
  std::vector<int64_t> dims;        // Logical (ONNX) dims.
  Layout layout = Layout::kRowMajor;

  bool defined() const { return dtype != DType::kUndefined; }
  int rank() const { return static_cast<int>(dims.size()); }
  int64_t numel() const;
  size_t nbytes() const;
  // Dims in memory order: dims for kRowMajor, (N,H,W,C) for kNHWC.
  std::vector<int64_t> PhysicalDims() const;
  std::string ToString() const;  // "float16[32,64,56,56] nhwc"
};

// Maps a logical axis of a rank-4 NCHW tensor to its position in NHWC memory.
int PhysicalAxis(Layout layout, int rank, int logical_axis);

// Library handles of one execution context, bound to its stream.
struct Handles {
  cudnnContext* cudnn = nullptr;       // cudnnHandle_t
  cublasLtContext* cublaslt = nullptr;  // cublasLtHandle_t
};

// Precision the engine was built for. Storage precision of float activations
// is decided by the builder (TensorDesc::dtype); these flags tell layers what
// math they may use.
struct PrecisionOptions {
  bool fp16 = false;
  bool bf16 = false;
  bool tf32 = false;  // FP32 convolutions/GEMMs may use TF32 tensor cores.
};

// What a layer factory sees.
struct LayerInit {
  const ir::Node& node;
  std::vector<TensorDesc> inputs;   // One per node input (undefined when omitted).
  std::vector<TensorDesc> outputs;  // One per node output.
  // The host value of each input that is a constant (weights, shape
  // operands), else nullptr. Values are already in the dtype and layout of
  // `inputs[i]` (the builder converts weights before creating layers).
  std::vector<const Tensor*> constants;
  PrecisionOptions precision;
  Handles handles;  // For descriptor setup and algorithm queries.
};

// What Enqueue gets: device pointers in node order.
struct LaunchArgs {
  std::vector<const void*> inputs;  // nullptr for omitted inputs.
  std::vector<void*> outputs;
  void* workspace = nullptr;  // WorkspaceBytes() bytes, 256-byte aligned.
  cudaStream_t stream = nullptr;
  Handles handles;
};

class Layer {
 public:
  virtual ~Layer() = default;

  // Tactics: alternative implementations the builder times on the real
  // shapes. Their order must be deterministic for a given GPU and library
  // versions, because engine files store the chosen index.
  virtual int NumTactics() const { return 1; }
  virtual void SetTactic(int /*tactic*/) {}
  virtual std::string TacticName() const { return "default"; }

  // Device scratch memory Enqueue needs (for the current tactic).
  virtual size_t WorkspaceBytes() const { return 0; }
  // False for inputs the layer reads only on the host at creation (a
  // Reshape's shape, Slice's starts): the engine then does not upload them
  // and passes nullptr.
  virtual bool ReadsInputOnDevice(int /*input*/) const { return true; }
  // >= 0 when output `output` is the storage of that input reinterpreted
  // (Reshape, Flatten, Squeeze, ...): the memory planner aliases them and
  // Enqueue is not called for this layer if all outputs are aliases.
  virtual int AliasOf(int /*output*/) const { return -1; }

  // Launches the work on args.stream. Must not allocate or synchronize.
  virtual void Enqueue(const LaunchArgs& args) const = 0;
  // Kernel launches one Enqueue issues (for reports; library calls count
  // what they launch as far as known).
  virtual int KernelLaunches() const { return 1; }
};

using LayerFactory = std::function<std::unique_ptr<Layer>(const LayerInit&)>;

struct GpuOpDef {
  std::string op_type;
  LayerFactory create;
  // True when the layer accepts kNHWC inputs (and then produces kNHWC
  // outputs of the same rank, e.g. pooling, elementwise on physical dims);
  // otherwise the builder converts inputs to kRowMajor first.
  bool accepts_nhwc = false;
};

class GpuLayerRegistry {
 public:
  // The process-wide registry, filled by RegisterAllGpuLayers() on first use.
  static const GpuLayerRegistry& Global();
  void Register(GpuOpDef def);
  // nullptr when the op has no GPU layer.
  const GpuOpDef* Find(const std::string& op_type) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, GpuOpDef> defs_;
};

// Every family registers here (src/cuda/layers/register_all.cc).
void RegisterAllGpuLayers(GpuLayerRegistry& registry);

// ---- Helpers for layer implementations ----

// Throws naming the node when the condition does not hold.
#define KILN_LAYER_CHECK(init, cond, ...) \
  KILN_CHECK(cond, (init).node.Describe(), " on GPU: ", __VA_ARGS__)

// Row-major strides (in elements) of dims.
std::vector<int64_t> RowMajorStrides(const std::vector<int64_t>& dims);

}  // namespace kiln::gpu
