// kiln::Pipeline: continuous inference with the textbook optimizations built in.
//
//   kiln::PipelineConfig config;                       // every ladder step is a switch
//   auto pipeline = kiln::Pipeline::Create(*engine, config, [](const kiln::PipelineResult& r) {
//     // Called once per batch, in submission order, on the pipeline's output thread.
//   });
//   for (...) pipeline->SubmitImages(nhwc_uint8, bytes);  // blocks while every slot is busy
//   pipeline->Flush();                                     // everything submitted is delivered
//
// A pipeline owns a pool of slots (host staging + device buffers reused for its
// life); a batch holds a slot from Submit until its callback returns, so at most
// `slots` batches are in flight and Submit blocks (backpressure) instead of
// queueing without bound. Inputs are copied from the caller's memory (pageable
// is fine) into the slot before Submit returns (by several threads for big
// batches). Images (uint8 NHWC) are cast, normalized and transposed to the
// engine's NCHW input on the GPU, or, for an engine built with an image input
// (BuildConfig::image_input: a uint8 NHWC binding), copied into it as they are. An engine with optimization profiles takes
// tensors of any dims its profiles cover, batch by batch (buffers are sized
// for the largest); each context switches shapes as batches arrive.
//
// Errors: a bad input is rejected by Submit (kiln::Error) without using a slot;
// a callback that throws fails only its own result (reported through
// on_callback_error); a device error puts the pipeline in a failed state where
// the batches still in flight are delivered with `error` set and later
// Submit/Flush throw the message. The destructor drains what is in flight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/image.h"
#include "kiln/kiln.h"
#include "kiln/tensor.h"

namespace kiln {

class Engine;
namespace pipeline {
class Scheduler;
class Stages;
}  // namespace pipeline

struct PipelineConfig {
  // Batches in flight (each owns host staging and device buffers). Used when
  // `overlap` is on; without overlap one batch runs at a time.
  int slots = 3;
  // Ladder switches, in the order `kiln bench --ablation` turns them on.
  bool reuse_device_buffers = true;  // off: cudaMalloc/cudaFree the batch's device buffers per batch
  bool pinned_staging = true;        // off: pageable host staging buffers
  bool overlap = true;        // copy-in, compute and copy-out streams with events between them
  bool async_output = true;   // output callbacks on a pipeline thread; off: on the Submit caller
  bool cuda_graph = false;    // replay each inference as a CUDA Graph
  int contexts = 1;           // execution contexts, each on its own streams and host thread
  // Host threads that copy each submitted batch into its slot's staging (one
  // thread's memcpy is slower than PCIe). 0: automatic (half the hardware
  // threads, at most 8).
  int staging_threads = 0;
  // Records every batch's host stages (steady clock) and device stages (CUDA
  // events) for WriteTimeline. Off for timed runs: timing events cost a little.
  bool record_timeline = false;
  // Image normalization: (x / 255 - mean[c]) / std[c] (include/kiln/image.h;
  // ImageNet defaults). Unused for an engine built with an image input
  // (BuildConfig::image_input), which normalizes with its own.
  std::vector<float> mean = ImageNormalization().mean;
  std::vector<float> std = ImageNormalization().std;
  // Called (on the output thread) when a callback throws; null: printed to stderr.
  std::function<void(uint64_t sequence, const std::string& message)> on_callback_error;
};

struct PipelineResult {
  uint64_t sequence = 0;        // 0, 1, 2, ... in submission order
  std::vector<Tensor> outputs;  // Engine output order; views valid during the callback only (Clone to keep).
  std::string error;            // Non-empty: the batch failed (the pipeline failed); outputs empty.
  bool ok() const { return error.empty(); }
};
using PipelineCallback = std::function<void(const PipelineResult&)>;

struct PipelineStats {
  uint64_t submitted = 0;
  uint64_t delivered = 0;
  uint64_t callback_errors = 0;
  double submit_blocked_ms = 0;  // Time Submit spent waiting for a free slot.
};

class Pipeline {
 public:
  // An engine-backed pipeline (GPU). `engine` must outlive the pipeline.
  static std::unique_ptr<Pipeline> Create(const Engine& engine, const PipelineConfig& config,
                                          PipelineCallback callback);
  // The same scheduling on the CPU reference backend (Model::RunCpu); the
  // GPU-only switches are ignored. Dynamic input dims take their size from
  // `shapes` (name -> dims). `model` must outlive the pipeline.
  static std::unique_ptr<Pipeline> CreateCpu(const Model& model, const PipelineConfig& config,
                                             PipelineCallback callback,
                                             const std::map<std::string, std::vector<int64_t>>& shapes = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // One batch of ready tensors, one per input in binding order, of the input's
  // dtype and dims (host memory of any kind). Returns the batch's sequence number.
  uint64_t Submit(const std::vector<Tensor>& inputs);
  // One batch of images: uint8 [N, H, W, C] bytes for the single NCHW input
  // [N, C, H, W] (float32/float16/bfloat16), normalized with mean/std, or
  // for a uint8 [N, H, W, C] input (an engine with an image input).
  uint64_t SubmitImages(const uint8_t* nhwc, size_t bytes);
  // Waits until every submitted batch is delivered; throws if the pipeline failed.
  void Flush();

  const std::vector<TensorDesc>& inputs() const;
  const std::vector<TensorDesc>& outputs() const;
  PipelineStats stats() const;
  // Device bytes the pipeline holds: contexts (activation arenas, workspaces)
  // and its buffers (per batch in flight when buffers are not reused); engine
  // weights excluded.
  size_t DeviceMemoryBytes() const;
  // Writes the recorded timeline (record_timeline) as a Chrome trace JSON
  // (ui.perfetto.dev, chrome://tracing): rows for the submitting thread, each
  // lane's launch thread and copy-in/compute/copy-out streams, and the
  // delivery thread. Throws when nothing was recorded.
  void WriteTimeline(const std::string& path) const;

 private:
  Pipeline(std::unique_ptr<pipeline::Stages> stages, const PipelineConfig& config,
           PipelineCallback callback);
  std::unique_ptr<pipeline::Stages> stages_;
  std::unique_ptr<pipeline::Scheduler> scheduler_;
};

}  // namespace kiln
