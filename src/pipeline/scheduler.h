// The CUDA-free core of kiln::Pipeline: slots, in-order delivery,
// backpressure, callback error isolation and the failed state. The work of a
// batch is done by a Stages implementation (GPU: gpu_stages.cc; CPU reference:
// cpu_stages.cc), so the scheduling is tested on the CPU with the real CPU
// backend.
//
// A batch's life: Submit validates it (no slot yet), takes a free slot
// (blocking while none is free), Stage copies it into the slot on the caller's
// thread, a lane's launcher thread calls Launch (starts the work), and the
// delivery thread, in sequence order, calls Complete (waits for the work),
// runs the callback and frees the slot. Without async output there are no
// threads: Submit launches inline and, when every slot is busy, completes and
// delivers the oldest batch itself.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kiln/kiln.h"
#include "kiln/image.h"
#include "kiln/pipeline.h"
#include "kiln/shape_profile.h"
#include "kiln/tensor.h"
#include "profile/timeline.h"

namespace kiln::pipeline {

// One batch as handed to Submit: ready tensors or uint8 NHWC images.
struct BatchInput {
  const std::vector<Tensor>* tensors = nullptr;
  const uint8_t* images = nullptr;
  size_t image_bytes = 0;
  bool is_images() const { return tensors == nullptr; }
};

// What a backend does to a batch. Calls for different slots run concurrently;
// Launch for one lane always comes from the same thread.
class Stages {
 public:
  virtual ~Stages() = default;
  virtual const std::vector<TensorDesc>& inputs() const = 0;
  virtual const std::vector<TensorDesc>& outputs() const = 0;
  // Throws kiln::Error for an input the engine/model cannot take.
  virtual void Validate(const BatchInput& input) const = 0;
  // Copies a validated input into `slot` (caller's thread).
  virtual void Stage(int slot, uint64_t sequence, const BatchInput& input) = 0;
  // Starts the batch on lane `lane` (may return before the work is done).
  virtual void Launch(int slot, int lane, uint64_t sequence) = 0;
  // Waits until the slot's outputs are in host memory.
  virtual void Complete(int slot, uint64_t sequence) = 0;
  // The slot's outputs (valid until the slot is staged again).
  virtual std::vector<Tensor> Outputs(int slot) = 0;
  // Profiler ranges around the output callback (NVTX on the GPU).
  virtual void RangePush(const char* /*stage*/, uint64_t /*sequence*/) {}
  virtual void RangePop() {}
  virtual size_t DeviceMemoryBytes() const { return 0; }
  // The recorded timeline (PipelineConfig::record_timeline; GPU only).
  virtual std::vector<profile::TimelineSpan> Timeline() const { return {}; }
};

struct SchedulerOptions {
  int slots = 1;  // Batches in flight.
  int lanes = 1;  // Launcher threads (async) / round-robin lanes (sync).
  bool async_output = true;
  std::function<void(uint64_t, const std::string&)> on_callback_error;
};

class Scheduler {
 public:
  Scheduler(Stages& stages, const SchedulerOptions& options, PipelineCallback callback);
  ~Scheduler();  // Delivers everything in flight, then stops the threads.
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  uint64_t Submit(const BatchInput& input);
  void Flush();
  PipelineStats stats() const;

 private:
  enum class SlotState { kFree, kStaging, kQueued, kLaunched, kFailed };

  void LaunchLoop(int lane);
  void DeliverLoop();
  // Completes and delivers the batch `next_deliver_` (lock not held).
  void DeliverNext(uint64_t sequence, int slot, bool launched);
  void SetFailureLocked(const std::string& message);
  void ThrowIfFailedLocked() const;
  // Sync mode: delivers every batch in flight on this thread.
  void DrainInline();

  Stages& stages_;
  const SchedulerOptions options_;
  const PipelineCallback callback_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SlotState> slot_state_;
  std::deque<int> free_slots_;
  std::deque<uint64_t> launch_queue_;
  std::map<uint64_t, int> in_flight_;  // sequence -> slot
  uint64_t next_sequence_ = 0;
  uint64_t next_deliver_ = 0;
  std::string failure_;
  bool stopping_ = false;
  PipelineStats stats_;

  std::mutex sync_submit_mu_;  // Sync mode: one Submit/Flush at a time.
  std::vector<std::thread> launchers_;
  std::thread deliverer_;
};

// ---- Input checks and the image preprocessing reference, shared by backends ----

// The single input that uint8 NHWC images feed: a float NCHW input
// [N, C, H, W] the pipeline normalizes into, or a uint8 [N, H, W, C] one (an
// engine built with BuildConfig::image_input, which normalizes itself) the
// images are copied into as they are.
struct ImageGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0;
  DType dtype = DType::kUndefined;  // The input's: float32/float16/bfloat16, or uint8.
  size_t image_bytes() const { return static_cast<size_t>(n * h * w * c); }
  bool normalized_by_model() const { return dtype == DType::kUInt8; }
};
// Throws unless the model has one input of rank 4 and static dims that is
// float32/float16/bfloat16 [N, C, H, W] (then mean/std need C entries, std
// non-zero) or uint8 [N, H, W, C] (mean/std unused), with
// C <= kMaxImageChannels (include/kiln/image.h).
ImageGeometry ImageInputGeometry(const std::vector<TensorDesc>& inputs,
                                 const std::vector<float>& mean, const std::vector<float>& std);
void CheckImageBytes(const ImageGeometry& geometry, size_t bytes);
// Throws unless `tensors` match `inputs` one to one in dtype and dims. With
// optimization profiles, the inputs they name may take any dims a profile
// covers (the others keep their dims).
void CheckTensorInputs(const std::vector<TensorDesc>& inputs, const std::vector<Tensor>& tensors,
                       const std::vector<OptimizationProfile>& profiles = {});

// The CPU reference of the GPU preprocessing: uint8 [N,H,W,C] ->
// (x / 255 - mean[c]) / std[c] as geometry.dtype in [N,C,H,W] at `out`
// (a plain copy when the model normalizes itself).
void NormalizeImagesCpu(const uint8_t* nhwc, const ImageGeometry& geometry,
                        const std::vector<float>& mean, const std::vector<float>& std, void* out);

}  // namespace kiln::pipeline
