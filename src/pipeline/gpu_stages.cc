#include "pipeline/gpu_stages.h"

#include <nvtx3/nvToolsExt.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "kiln/error.h"
#include "pipeline/cpu_stages.h"
#include "pipeline/preprocess.h"

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
  Event() { KILN_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming)); }
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

size_t BindingBytes(const TensorDesc& d) { return Tensor(d.dtype, d.dims).nbytes(); }

class GpuStages : public Stages {
 public:
  GpuStages(const Engine& engine, const PipelineConfig& config) : engine_(engine), config_(config) {
    KILN_CHECK(config.contexts >= 1, "pipeline: contexts must be at least 1, got ", config.contexts);
    const int num_slots = EffectiveSlots(config);
    KILN_CHECK(num_slots >= 1, "pipeline: slots must be at least 1, got ", num_slots);
    for (const TensorDesc& d : engine.inputs()) input_bytes_.push_back(BindingBytes(d));
    for (const TensorDesc& d : engine.outputs()) output_bytes_.push_back(BindingBytes(d));
    // Images are possible when the engine has one NCHW float input.
    try {
      geometry_ = ImageInputGeometry(engine.inputs(), config.mean, config.std);
      image_error_.clear();
      for (int64_t ch = 0; ch < geometry_.c; ++ch) {
        params_.mean[ch] = config.mean[static_cast<size_t>(ch)];
        params_.std[ch] = config.std[static_cast<size_t>(ch)];
      }
    } catch (const Error& e) {
      image_error_ = e.what();
    }
    const size_t raw_bytes = image_error_.empty() ? geometry_.image_bytes() : 0;

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
      if (config.cuda_graph) {
        // Fixed binding pointers so the captured graph is replayed, never re-captured.
        for (size_t b : input_bytes_) lane->bind_in.push_back(std::make_unique<DeviceBuffer>(b));
        for (size_t b : output_bytes_) lane->bind_out.push_back(std::make_unique<DeviceBuffer>(b));
      }
      lanes_.push_back(std::move(lane));
    }
    for (int i = 0; i < num_slots; ++i) {
      auto slot = std::make_unique<Slot>();
      if (raw_bytes) slot->raw = std::make_unique<HostBuffer>(raw_bytes, config.pinned_staging);
      for (size_t b : input_bytes_) slot->in.push_back(std::make_unique<HostBuffer>(b, config.pinned_staging));
      for (size_t b : output_bytes_) slot->out.push_back(std::make_unique<HostBuffer>(b, config.pinned_staging));
      if (config.reuse_device_buffers) AllocateDevice(*slot);
      slots_.push_back(std::move(slot));
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
      CheckTensorInputs(engine_.inputs(), *input.tensors);
    }
  }

  void Stage(int slot_index, uint64_t sequence, const BatchInput& input) override {
    ScopedRange range("stage", sequence);
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    slot.images = input.is_images();
    if (slot.images) {
      std::memcpy(slot.raw->ptr(), input.images, slot.raw->bytes());
      return;
    }
    for (size_t i = 0; i < slot.in.size(); ++i)
      std::memcpy(slot.in[i]->ptr(), (*input.tensors)[i].raw_data(), slot.in[i]->bytes());
  }

  void Launch(int slot_index, int lane_index, uint64_t sequence) override {
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    Lane& lane = *lanes_.at(static_cast<size_t>(lane_index));
    if (!config_.reuse_device_buffers) {
      ScopedRange range("allocate", sequence);
      AllocateDevice(slot);  // The baseline: fresh device buffers for every batch.
    }
    {
      ScopedRange range("copy-in", sequence);
      if (slot.images) {
        KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_raw->ptr, slot.raw->ptr(), slot.raw->bytes(),
                                        cudaMemcpyHostToDevice, lane.copy_in));
      } else {
        for (size_t i = 0; i < slot.in.size(); ++i)
          KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_in[i]->ptr, slot.in[i]->ptr(), slot.in[i]->bytes(),
                                          cudaMemcpyHostToDevice, lane.copy_in));
      }
      KILN_CUDA_CHECK(cudaEventRecord(slot.uploaded.event, lane.copy_in));
    }
    {
      ScopedRange range("infer", sequence);
      KILN_CUDA_CHECK(cudaStreamWaitEvent(lane.compute, slot.uploaded.event, 0));
      const bool graph = config_.cuda_graph;
      std::vector<const void*> in_ptrs;
      std::vector<void*> out_ptrs;
      for (size_t i = 0; i < input_bytes_.size(); ++i)
        in_ptrs.push_back(graph ? lane.bind_in[i]->ptr : slot.d_in[i]->ptr);
      for (size_t i = 0; i < output_bytes_.size(); ++i)
        out_ptrs.push_back(graph ? lane.bind_out[i]->ptr : slot.d_out[i]->ptr);
      if (slot.images) {
        LaunchNormalizeImages(static_cast<const uint8_t*>(slot.d_raw->ptr), const_cast<void*>(in_ptrs[0]),
                              geometry_.dtype, geometry_.n, geometry_.c, geometry_.h, geometry_.w,
                              params_, lane.compute);
      } else if (graph) {
        for (size_t i = 0; i < input_bytes_.size(); ++i)
          if (input_bytes_[i])
            KILN_CUDA_CHECK(cudaMemcpyAsync(lane.bind_in[i]->ptr, slot.d_in[i]->ptr, input_bytes_[i],
                                            cudaMemcpyDeviceToDevice, lane.compute));
      }
      if (graph) {
        lane.context->EnqueueGraph(in_ptrs, out_ptrs, lane.compute);
        for (size_t i = 0; i < output_bytes_.size(); ++i)
          if (output_bytes_[i])
            KILN_CUDA_CHECK(cudaMemcpyAsync(slot.d_out[i]->ptr, lane.bind_out[i]->ptr, output_bytes_[i],
                                            cudaMemcpyDeviceToDevice, lane.compute));
      } else {
        lane.context->Enqueue(in_ptrs, out_ptrs, lane.compute);
      }
      KILN_CUDA_CHECK(cudaEventRecord(slot.inferred.event, lane.compute));
    }
    {
      ScopedRange range("copy-out", sequence);
      KILN_CUDA_CHECK(cudaStreamWaitEvent(lane.copy_out, slot.inferred.event, 0));
      for (size_t i = 0; i < slot.out.size(); ++i)
        KILN_CUDA_CHECK(cudaMemcpyAsync(slot.out[i]->ptr(), slot.d_out[i]->ptr, slot.out[i]->bytes(),
                                        cudaMemcpyDeviceToHost, lane.copy_out));
      KILN_CUDA_CHECK(cudaEventRecord(slot.done.event, lane.copy_out));
    }
  }

  void Complete(int slot_index, uint64_t sequence) override {
    ScopedRange range("wait", sequence);
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    KILN_CUDA_CHECK(cudaEventSynchronize(slot.done.event));
    if (!config_.reuse_device_buffers) FreeDevice(slot);
  }

  std::vector<Tensor> Outputs(int slot_index) override {
    Slot& slot = *slots_.at(static_cast<size_t>(slot_index));
    std::vector<Tensor> outputs;
    for (size_t i = 0; i < slot.out.size(); ++i) {
      const TensorDesc& d = engine_.outputs()[i];
      // A view of the slot's staging: valid while the callback runs.
      outputs.push_back(Tensor::Borrow(d.dtype, d.dims, std::shared_ptr<const void>(), slot.out[i]->ptr()));
    }
    return outputs;
  }

  void RangePush(const char* stage, uint64_t sequence) override {
    const std::string name = StrCat(stage, " #", sequence);
    nvtxRangePushA(name.c_str());
  }
  void RangePop() override { nvtxRangePop(); }

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
  };
  struct Slot {
    std::unique_ptr<HostBuffer> raw;  // uint8 images (image-shaped engines only)
    std::vector<std::unique_ptr<HostBuffer>> in, out;
    std::unique_ptr<DeviceBuffer> d_raw;
    std::vector<std::unique_ptr<DeviceBuffer>> d_in, d_out;
    Event uploaded, inferred, done;
    bool images = false;
  };

  size_t SlotDeviceBytes() const {
    size_t total = image_error_.empty() ? geometry_.image_bytes() : 0;
    for (size_t b : input_bytes_) total += b;
    for (size_t b : output_bytes_) total += b;
    return total;
  }

  void AllocateDevice(Slot& slot) const {
    slot.d_raw = std::make_unique<DeviceBuffer>(image_error_.empty() ? geometry_.image_bytes() : 0);
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

  const Engine& engine_;
  const PipelineConfig config_;
  std::vector<size_t> input_bytes_, output_bytes_;
  ImageGeometry geometry_;
  std::string image_error_ = "pipeline: the engine takes no images";
  NormalizeParams params_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace

std::unique_ptr<Stages> MakeGpuStages(const Engine& engine, const PipelineConfig& config) {
  return std::make_unique<GpuStages>(engine, config);
}

}  // namespace kiln::pipeline
