#include "pipeline/gpu_stages.h"

#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/normalize_image.h"
#include "kiln/error.h"
#include "pipeline/cpu_stages.h"
#include "pipeline/parallel_copy.h"

namespace kiln::pipeline {
namespace {

using cuda::DeviceBuffer;
using cuda::PinnedBuffer;

// An NVTX range named "<stage> #<sequence>" for the current scope, so an
// Nsight Systems timeline reads like the pipeline.
class ScopedRange {
 public:
  ScopedRange(const char* stage, uint64_t sequence) {
    const std::string name = StrCat(stage, " #", sequence);
    nvtxRangePushA(name.c_str());
  }
  ~ScopedRange() { nvtxRangePop(); }
  ScopedRange(const ScopedRange&) = delete;
  ScopedRange& operator=(const ScopedRange&) = delete;
};

struct Stream {
  cudaStream_t stream = nullptr;
  Stream() { KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~Stream() {
    if (stream) cudaStreamDestroy(stream);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

struct Event {
  cudaEvent_t event = nullptr;
  // Timing events (timelines) cost a little more to record.
  explicit Event(bool timing = false) {
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  ~Event() {
    if (event) cudaEventDestroy(event);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Host staging bytes: page-locked, or ordinary (pageable) for the baseline.
class HostBuffer {
 public:
  HostBuffer(size_t bytes, bool pinned) : bytes_(bytes) {
    if (pinned) {
      pinned_ = std::make_unique<PinnedBuffer>(bytes);
      ptr_ = pinned_->ptr;
    } else {
      pageable_.resize(bytes);
      ptr_ = pageable_.data();
    }
  }
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
  std::unique_ptr<PinnedBuffer> pinned_;
  std::vector<char> pageable_;
  void* ptr_ = nullptr;
};


class GpuStages : public Stages {
 public:
  GpuStages(const Engine& engine, const PipelineConfig& config)
      : engine_(engine),
        config_(config),
        dynamic_(!engine.profiles().empty()),
        copier_(StagingThreads(config.staging_threads)) {
    KILN_CHECK(config.contexts >= 1, "pipeline: contexts must be at least 1, got ", config.contexts);
    KILN_CHECK(config.staging_threads >= 0, "pipeline: staging_threads must be >= 0, got ",
               config.staging_threads);
    const int num_slots = EffectiveSlots(config);
    KILN_CHECK(num_slots >= 1, "pipeline: slots must be at least 1, got ", num_slots);
    for (const TensorDesc& d : engine.inputs()) input_bytes_.push_back(d.nbytes());
    for (const TensorDesc& d : engine.outputs()) output_bytes_.push_back(d.nbytes());
    if (dynamic_) SizeForProfiles();
    // Images are possible when the engine has one input of static dims: a
    // float NCHW one (normalized here, from the slot's raw image buffers) or
    // a uint8 NHWC one (the engine normalizes: images are its input tensor).
    try {
      KILN_CHECK(!dynamic_, "pipeline: images need a static-shape engine (this one has optimization "
                 "profiles; submit tensors)");
      geometry_ = ImageInputGeometry(engine.inputs(), config.mean, config.std);
      if (!geometry_.normalized_by_model())
        params_ = gpu::MakeNormalizeImageParams(config.mean, config.std, geometry_.c, "pipeline");
      image_error_.clear();
    } catch (const Error& e) {
      image_error_ = e.what();
    }
    const size_t raw_bytes = RawImageBytes();

    for (int i = 0; i < config.contexts; ++i) {
      auto lane = std::make_unique<Lane>();
      lane->context = engine.CreateContext();
      lane->streams.push_back(std::make_unique<Stream>());
      if (config.overlap) {
        lane->streams.push_back(std::make_unique<Stream>());
        lane->streams.push_back(std::make_unique<Stream>());
      }
      lane->copy_in = lane->streams.front()->stream;
      lane->compute = lane->streams[config.overlap ? 1 : 0]->stream;
      lane->copy_out = lane->streams.back()->stream;
      lane->name = StrCat("lane ", i);
      lane->launch_track = lane->name + ": launch thread";
      if (config.cuda_graph) {
        // Fixed binding pointers so the captured graph is replayed, never re-captured.
        for (size_t b : input_bytes_) lane->bind_in.push_back(std::make_unique<DeviceBuffer>(b));
        for (size_t b : output_bytes_) lane->bind_out.push_back(std::make_unique<DeviceBuffer>(b));
      }
      lanes_.push_back(std::move(lane));
    }
    for (int i = 0; i < num_slots; ++i) {
      auto slot = std::make_unique<Slot>(config.record_timeline);
      if (raw_bytes) slot->raw = std::make_unique<HostBuffer>(raw_bytes, config.pinned_staging);
      for (const TensorDesc& d : engine.inputs()) slot->shapes[d.name] = d.dims;
      for (const TensorDesc& d : engine.outputs()) slot->out_dims.push_back(d.dims);
      slot->in_used = input_bytes_;
      slot->out_used = output_bytes_;
      for (size_t b : input_bytes_) slot->in.push_back(std::make_unique<HostBuffer>(b, config.pinned_staging));
      for (size_t b : output_bytes_) slot->out.push_back(std::make_unique<HostBuffer>(b, config.pinned_staging));
      if (config.reuse_device_buffers) AllocateDevice(*slot);
      slots_.push_back(std::move(slot));
    }
    if (config.record_timeline) {
      // Device times are measured from this event, host times from the
      // moment it completed: one clock for both.
      origin_ = std::make_unique<Event>(true);
      KILN_CUDA_CHECK(cudaEventRecord(origin_->event, lanes_.front()->copy_in));
      KILN_CUDA_CHECK(cudaEventSynchronize(origin_->event));
      host_origin_ = std::chrono::steady_clock::now();
      spans_.reserve(4096);
    }
  }

  ~GpuStages() override {
    // Work may still run on the device (a failed pipeline): let it finish
    // before its buffers are freed. Errors are already reported.
    for (auto& lane : lanes_)
      for (auto& s : lane->streams) cudaStreamSynchronize(s->stream);
  }

  const std::vector<TensorDesc>& inputs() const override { return engine_.inputs(); }
  const std::vector<TensorDesc>& outputs() const override { return engine_.outputs(); }

  void Validate(const BatchInput& input) const override {
    if (input.is_images()) {
      KILN_CHECK(image_error_.empty(), image_error_);
      CheckImageBytes(geometry_, input.image_bytes);
      KILN_CHECK(input.images != nullptr, "pipeline: null image pointer");
    } else {
      CheckTensorInputs(engine_.inputs(), *input.tensors, engine_.profiles());
    }
  }

  void Stage(int slot_index, uint64_t sequence, const BatchInput& input) override {
    ScopedRange range("stage", sequence);
    HostSpan span(this, "host: submit", "stage", sequence);
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    std::vector<CopyJob>& jobs = slot.copy_jobs;  // Reused: no allocation once warm.
    jobs.clear();
    if (input.is_images() && geometry_.normalized_by_model()) {
      // The images are the engine's (uint8 NHWC) input tensor: staged like one.
      slot.images = false;
      slot.in_used[0] = geometry_.image_bytes();
      jobs.push_back({slot.in[0]->ptr(), input.images, geometry_.image_bytes()});
      copier_.Copy(jobs);
      return;
    }
    slot.images = input.is_images();
    if (slot.images) {
      jobs.push_back({slot.raw->ptr(), input.images, slot.raw->bytes()});
      copier_.Copy(jobs);
      return;
    }
    for (size_t i = 0; i < slot.in.size(); ++i) {
      const Tensor& t = (*input.tensors)[i];
      slot.in_used[i] = t.nbytes();
      if (dynamic_) slot.shapes[engine_.inputs()[i].name] = t.dims();  // Assigns in place.
      jobs.push_back({slot.in[i]->ptr(), t.raw_data(), t.nbytes()});
    }
    copier_.Copy(jobs);
  }

  void Launch(int slot_index, int lane_index, uint64_t sequence) override {
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    Lane& lane = *lanes_.at(static_cast<size_t>(lane_index));
    HostSpan span(this, lane.launch_track.c_str(), "launch", sequence);
    slot.lane = lane_index;
    if (!config_.reuse_device_buffers) {
      ScopedRange range("allocate", sequence);
      AllocateDevice(slot);  // The baseline: fresh device buffers for every batch.
    }
    {
      ScopedRange range("copy-in", sequence);
      if (origin_) KILN_CUDA_CHECK(cudaEventRecord(slot.copy_in_start.event, lane.copy_in));
      if (slot.images) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_raw->ptr, slot.raw->ptr(), slot.raw->bytes(),
                                        cudaMemcpyHostToDevice, lane.copy_in));
      } else {
        for (size_t i = 0; i < slot.in.size(); ++i)
          if (slot.in_used[i])
            KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_in[i]->ptr, slot.in[i]->ptr(), slot.in_used[i],
                                            cudaMemcpyHostToDevice, lane.copy_in));
      }
      KILN_CUDA_CHECK(cudaEventRecord(slot.uploaded.event, lane.copy_in));
    }
    {
      ScopedRange range("infer", sequence);
      // A shape switch may specialize a plan (device synchronization, memory
      // growth) and capture a new graph; neither may overlap another lane's
      // capture, so switches (and the enqueue after them) take turns.
      std::unique_lock<std::mutex> switch_lock(shape_switch_mu_, std::defer_lock);
      if (dynamic_ && (!lane.has_shapes || lane.shapes != slot.shapes)) switch_lock.lock();
      if (dynamic_) SelectShapes(slot, lane);
      KILN_CUDA_CHECK(cudaStreamWaitEvent(lane.compute, slot.uploaded.event, 0));
      if (origin_) KILN_CUDA_CHECK(cudaEventRecord(slot.compute_start.event, lane.compute));
      const bool graph = config_.cuda_graph;
      std::vector<const void*>& in_ptrs = lane.in_ptrs;
      std::vector<void*>& out_ptrs = lane.out_ptrs;
      in_ptrs.clear();
      out_ptrs.clear();
      for (size_t i = 0; i < input_bytes_.size(); ++i)
        in_ptrs.push_back(graph ? lane.bind_in[i]->ptr : slot.d_in[i]->ptr);
      for (size_t i = 0; i < output_bytes_.size(); ++i)
        out_ptrs.push_back(graph ? lane.bind_out[i]->ptr : slot.d_out[i]->ptr);
      if (slot.images) {
        gpu::LaunchNormalizeImages(static_cast<const uint8_t*>(slot.d_raw->ptr),
                                   const_cast<void*>(in_ptrs[0]), geometry_.dtype, geometry_.n,
                                   geometry_.c, geometry_.h, geometry_.w, params_, lane.compute);
      } else if (graph) {
        for (size_t i = 0; i < input_bytes_.size(); ++i)
          if (slot.in_used[i])
            KILN_CUDA_CHECK(cudaMemcpyAsync(lane.bind_in[i]->ptr, slot.d_in[i]->ptr, slot.in_used[i],
                                            cudaMemcpyDeviceToDevice, lane.compute));
      }
      if (graph) {
        lane.context->EnqueueGraph(in_ptrs, out_ptrs, lane.compute);
        for (size_t i = 0; i < output_bytes_.size(); ++i)
          if (slot.out_used[i])
            KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_out[i]->ptr, lane.bind_out[i]->ptr, slot.out_used[i],
                                            cudaMemcpyDeviceToDevice, lane.compute));
      } else {
        lane.context->Enqueue(in_ptrs, out_ptrs, lane.compute);
      }
      KILN_CUDA_CHECK(cudaEventRecord(slot.inferred.event, lane.compute));
    }
    {
      ScopedRange range("copy-out", sequence);
      KILN_CUDA_CHECK(cudaStreamWaitEvent(lane.copy_out, slot.inferred.event, 0));
      if (origin_) KILN_CUDA_CHECK(cudaEventRecord(slot.copy_out_start.event, lane.copy_out));
      for (size_t i = 0; i < slot.out.size(); ++i)
        if (slot.out_used[i])
          KILN_CUDA_CHECK(cudaMemcpyAsync(slot.out[i]->ptr(), slot.d_out[i]->ptr, slot.out_used[i],
                                          cudaMemcpyDeviceToHost, lane.copy_out));
      KILN_CUDA_CHECK(cudaEventRecord(slot.done.event, lane.copy_out));
    }
  }

  void Complete(int slot_index, uint64_t sequence) override {
    ScopedRange range("wait", sequence);
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    {
      HostSpan span(this, "host: delivery thread", "wait", sequence);
      KILN_CUDA_CHECK(cudaEventSynchronize(slot.done.event));
    }
    if (origin_) RecordDeviceSpans(slot, sequence);
    if (!config_.reuse_device_buffers) FreeDevice(slot);
  }

  std::vector<Tensor> Outputs(int slot_index) override {
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    std::vector<Tensor> outputs;
    for (size_t i = 0; i < slot.out.size(); ++i) {
      const TensorDesc& d = engine_.outputs()[i];
      // A view of the slot's staging: valid while the callback runs.
      outputs.push_back(
          Tensor::Borrow(d.dtype, slot.out_dims[i], std::shared_ptr<const void>(), slot.out[i]->ptr()));
    }
    return outputs;
  }

  void RangePush(const char* stage, uint64_t sequence) override {
    const std::string name = StrCat(stage, " #", sequence);
    nvtxRangePushA(name.c_str());
    if (origin_) {
      open_range_name_ = name;
      open_range_start_ = NowUs();
    }
  }
  void RangePop() override {
    nvtxRangePop();
    if (origin_) AddSpan({"host: delivery thread", open_range_name_, open_range_start_, NowUs() - open_range_start_});
  }

  std::vector<profile::TimelineSpan> Timeline() const override {
    std::lock_guard<std::mutex> lock(spans_mu_);
    return spans_;
  }

  size_t DeviceMemoryBytes() const override {
    size_t total = 0;
    for (const auto& lane : lanes_) {
      total += lane->context->DeviceMemoryBytes();
      for (const auto& b : lane->bind_in) total += b->bytes;
      for (const auto& b : lane->bind_out) total += b->bytes;
    }
    // Per slot, whether held for the pipeline's life or allocated per batch in flight.
    return total + slots_.size() * SlotDeviceBytes();
  }

 private:
  struct Lane {
    std::unique_ptr<ExecutionContext> context;
    std::vector<std::unique_ptr<Stream>> streams;
    cudaStream_t copy_in = nullptr, compute = nullptr, copy_out = nullptr;
    std::vector<std::unique_ptr<DeviceBuffer>> bind_in, bind_out;  // cuda_graph only
    std::string name, launch_track;  // Timeline rows.
    InputShapes shapes;  // The dims the context was last set to (dynamic engines).
    bool has_shapes = false;
    // The binding pointers of the batch being launched (reused: no allocation per batch).
    std::vector<const void*> in_ptrs;
    std::vector<void*> out_ptrs;
  };
  struct Slot {
    std::unique_ptr<HostBuffer> raw;  // uint8 images (image-shaped engines only)
    std::vector<std::unique_ptr<HostBuffer>> in, out;
    std::unique_ptr<DeviceBuffer> d_raw;
    std::vector<std::unique_ptr<DeviceBuffer>> d_in, d_out;
    explicit Slot(bool timing)
        : uploaded(timing), inferred(timing), done(timing), copy_in_start(timing), compute_start(timing),
          copy_out_start(timing) {}
    Event uploaded, inferred, done;
    Event copy_in_start, compute_start, copy_out_start;  // Timelines only.
    int lane = 0;
    bool images = false;
    // This batch's dims and bytes (the buffers hold the largest any profile allows).
    InputShapes shapes;
    std::vector<std::vector<int64_t>> out_dims;
    std::vector<size_t> in_used, out_used;
    std::vector<CopyJob> copy_jobs;
  };

  // Dynamic engines: buffers sized for the largest dims any profile allows.
  void SizeForProfiles() {
    auto context = engine_.CreateContext();
    for (const OptimizationProfile& profile : engine_.profiles()) {
      InputShapes max_shapes;
      for (const auto& [name, range] : profile.inputs) max_shapes[name] = range.max;
      context->SetInputShapes(max_shapes);
      for (size_t i = 0; i < input_bytes_.size(); ++i)
        input_bytes_[i] = std::max(input_bytes_[i], context->CurrentInputs()[i].nbytes());
      for (size_t i = 0; i < output_bytes_.size(); ++i)
        output_bytes_[i] = std::max(output_bytes_[i], context->CurrentOutputs()[i].nbytes());
    }
  }

  // Dynamic engines: the lane's context takes the slot's input dims (a shape
  // seen before allocates nothing) and the slot learns its output dims.
  void SelectShapes(Slot& slot, Lane& lane) {
    if (!lane.has_shapes || lane.shapes != slot.shapes) {
      lane.context->SetInputShapes(slot.shapes);
      lane.shapes = slot.shapes;  // Reuses the map's nodes: no allocation once warm.
      lane.has_shapes = true;
    }
    for (size_t i = 0; i < slot.out_dims.size(); ++i) {
      slot.out_dims[i] = lane.context->OutputDims(static_cast<int>(i));  // Assigns in place.
      slot.out_used[i] = ByteSize(engine_.outputs()[i].dtype, slot.out_dims[i]);
    }
  }

  // Bytes of a slot's raw image buffers (host and device): for engines the
  // pipeline normalizes for; none where images are the input tensor.
  size_t RawImageBytes() const {
    return image_error_.empty() && !geometry_.normalized_by_model() ? geometry_.image_bytes() : 0;
  }

  size_t SlotDeviceBytes() const {
    size_t total = RawImageBytes();
    for (size_t b : input_bytes_) total += b;
    for (size_t b : output_bytes_) total += b;
    return total;
  }

  void AllocateDevice(Slot& slot) const {
    slot.d_raw = std::make_unique<DeviceBuffer>(RawImageBytes());
    slot.d_in.clear();
    slot.d_out.clear();
    for (size_t b : input_bytes_) slot.d_in.push_back(std::make_unique<DeviceBuffer>(b));
    for (size_t b : output_bytes_) slot.d_out.push_back(std::make_unique<DeviceBuffer>(b));
  }
  static void FreeDevice(Slot& slot) {
    slot.d_raw.reset();
    slot.d_in.clear();
    slot.d_out.clear();
  }

  // ---- Timelines (config.record_timeline) ----
  double NowUs() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - host_origin_).count();
  }
  void AddSpan(profile::TimelineSpan span) {
    std::lock_guard<std::mutex> lock(spans_mu_);
    spans_.push_back(std::move(span));
  }
  // A host stage, timed from construction to destruction when recording.
  class HostSpan {
   public:
    // Builds nothing unless recording: this runs for every batch.
    HostSpan(GpuStages* stages, const char* track, const char* stage, uint64_t sequence)
        : stages_(stages->origin_ ? stages : nullptr) {
      if (!stages_) return;
      track_ = track;
      name_ = StrCat(stage, " #", sequence);
      start_ = stages_->NowUs();
    }
    ~HostSpan() {
      if (stages_) stages_->AddSpan({track_, name_, start_, stages_->NowUs() - start_});
    }
    HostSpan(const HostSpan&) = delete;
    HostSpan& operator=(const HostSpan&) = delete;

   private:
    GpuStages* stages_;
    std::string track_, name_;
    double start_ = 0;
  };
  // The batch's device stages, from its (completed) timing events.
  void RecordDeviceSpans(const Slot& slot, uint64_t sequence) {
    auto at_us = [&](const Event& e) {
      float ms = 0;
      KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, origin_->event, e.event));
      return 1e3 * static_cast<double>(ms);
    };
    const std::string& lane = lanes_.at(static_cast<size_t>(slot.lane))->name;
    const std::string seq = StrCat(" #", sequence);
    const double in0 = at_us(slot.copy_in_start), in1 = at_us(slot.uploaded);
    const double c0 = at_us(slot.compute_start), c1 = at_us(slot.inferred);
    const double out0 = at_us(slot.copy_out_start), out1 = at_us(slot.done);
    AddSpan({lane + ": copy-in stream", "copy-in" + seq, in0, in1 - in0});
    AddSpan({lane + ": compute stream", "infer" + seq, c0, c1 - c0});
    AddSpan({lane + ": copy-out stream", "copy-out" + seq, out0, out1 - out0});
  }

  const Engine& engine_;
  const PipelineConfig config_;
  const bool dynamic_;  // The engine has optimization profiles.
  ParallelCopier copier_;
  std::vector<size_t> input_bytes_, output_bytes_;
  ImageGeometry geometry_;
  std::string image_error_ = "pipeline: the engine takes no images";
  gpu::NormalizeImageParams params_;  // Float-input engines.
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::mutex shape_switch_mu_;  // Dynamic engines: one lane switches shapes at a time.
  std::unique_ptr<Event> origin_;  // Set when recording a timeline.
  std::chrono::steady_clock::time_point host_origin_;
  mutable std::mutex spans_mu_;
  std::vector<profile::TimelineSpan> spans_;
  std::string open_range_name_;  // The delivery thread's open output range.
  double open_range_start_ = 0;
};

}  // namespace

std::unique_ptr<Stages> MakeGpuStages(const Engine& engine, const PipelineConfig& config) {
  return std::make_unique<GpuStages>(engine, config);
}

}  // namespace kiln::pipeline
