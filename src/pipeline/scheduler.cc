#include "pipeline/scheduler.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <iostream>

#include "kiln/error.h"

namespace kiln::pipeline {

Scheduler::Scheduler(Stages& stages, const SchedulerOptions& options, PipelineCallback callback)
    : stages_(stages), options_(options), callback_(std::move(callback)) {
  KILN_CHECK(options.slots >= 1, "pipeline: slots must be at least 1, got ", options.slots);
  KILN_CHECK(options.lanes >= 1, "pipeline: contexts must be at least 1, got ", options.lanes);
  slot_state_.assign(static_cast<size_t>(options.slots), SlotState::kFree);
  for (int s = 0; s < options.slots; ++s) free_slots_.push_back(s);
  if (options.async_output) {
    for (int lane = 0; lane < options.lanes; ++lane)
      launchers_.emplace_back([this, lane] { LaunchLoop(lane); });
    deliverer_ = std::thread([this] { DeliverLoop(); });
  }
}

Scheduler::~Scheduler() {
  if (options_.async_output) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return next_deliver_ == next_sequence_; });
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : launchers_) t.join();
    deliverer_.join();
  } else {
    std::lock_guard<std::mutex> sync(sync_submit_mu_);
    DrainInline();
  }
}

void Scheduler::SetFailureLocked(const std::string& message) {
  if (failure_.empty()) failure_ = message;
}

void Scheduler::ThrowIfFailedLocked() const {
  if (!failure_.empty()) Fail("pipeline failed: ", failure_);
}

uint64_t Scheduler::Submit(const BatchInput& input) {
  stages_.Validate(input);  // A bad input consumes no slot.
  std::unique_lock<std::mutex> sync;
  if (!options_.async_output) sync = std::unique_lock<std::mutex>(sync_submit_mu_);

  int slot = -1;
  uint64_t sequence = 0;
  {
    std::unique_lock<std::mutex> lock(mu_);
    ThrowIfFailedLocked();
    if (free_slots_.empty()) {
      const auto start = std::chrono::steady_clock::now();
      if (options_.async_output) {
        cv_.wait(lock, [&] { return !free_slots_.empty() || !failure_.empty(); });
      } else {
        // No delivery thread: this caller completes the oldest batch itself.
        while (free_slots_.empty() && failure_.empty()) {
          const uint64_t oldest = next_deliver_;
          const int oldest_slot = in_flight_.at(oldest);
          const bool launched = slot_state_[static_cast<size_t>(oldest_slot)] == SlotState::kLaunched;
          lock.unlock();
          DeliverNext(oldest, oldest_slot, launched);
          lock.lock();
        }
        if (!failure_.empty()) {
          lock.unlock();
          DrainInline();
          lock.lock();
        }
      }
      stats_.submit_blocked_ms +=
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      ThrowIfFailedLocked();
    }
    slot = free_slots_.front();
    free_slots_.pop_front();
    sequence = next_sequence_++;
    in_flight_[sequence] = slot;
    slot_state_[static_cast<size_t>(slot)] = SlotState::kStaging;
    ++stats_.submitted;
  }

  // A failure here (staging or, in sync mode, launching) is a pipeline failure:
  // the batch is delivered with the error and Submit throws.
  auto fail = [&](const std::exception& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      SetFailureLocked(StrCat("batch ", sequence, ": ", e.what()));
      slot_state_[static_cast<size_t>(slot)] = SlotState::kFailed;
    }
    cv_.notify_all();
    if (!options_.async_output) DrainInline();
    std::lock_guard<std::mutex> lock(mu_);
    ThrowIfFailedLocked();
  };
  try {
    stages_.Stage(slot, sequence, input);
  } catch (const std::exception& e) {
    fail(e);
    throw;  // Not reached: fail() throws the pipeline's failure.
  }
  if (options_.async_output) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot_state_[static_cast<size_t>(slot)] = SlotState::kQueued;
      launch_queue_.push_back(sequence);
    }
    cv_.notify_all();
    return sequence;
  }
  try {
    stages_.Launch(slot, static_cast<int>(sequence % static_cast<uint64_t>(options_.lanes)), sequence);
  } catch (const std::exception& e) {
    fail(e);
    throw;  // Not reached: fail() throws the pipeline's failure.
  }
  std::lock_guard<std::mutex> lock(mu_);
  slot_state_[static_cast<size_t>(slot)] = SlotState::kLaunched;
  return sequence;
}

void Scheduler::Flush() {
  if (options_.async_output) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return next_deliver_ == next_sequence_; });
    ThrowIfFailedLocked();
    return;
  }
  std::lock_guard<std::mutex> sync(sync_submit_mu_);
  DrainInline();
  std::lock_guard<std::mutex> lock(mu_);
  ThrowIfFailedLocked();
}

PipelineStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::DrainInline() {
  for (;;) {
    uint64_t sequence;
    int slot;
    bool launched;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = in_flight_.find(next_deliver_);
      if (it == in_flight_.end()) return;
      sequence = it->first;
      slot = it->second;
      launched = slot_state_[static_cast<size_t>(slot)] == SlotState::kLaunched;
    }
    DeliverNext(sequence, slot, launched);
  }
}

void Scheduler::LaunchLoop(int lane) {
  for (;;) {
    uint64_t sequence;
    int slot;
    bool failed;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !launch_queue_.empty() || stopping_; });
      if (launch_queue_.empty()) return;  // Stopping with nothing left.
      sequence = launch_queue_.front();
      launch_queue_.pop_front();
      slot = in_flight_.at(sequence);
      failed = !failure_.empty();
    }
    SlotState state = SlotState::kFailed;
    if (!failed) {
      try {
        stages_.Launch(slot, lane, sequence);
        state = SlotState::kLaunched;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu_);
        SetFailureLocked(StrCat("batch ", sequence, ": ", e.what()));
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot_state_[static_cast<size_t>(slot)] = state;
    }
    cv_.notify_all();
  }
}

void Scheduler::DeliverLoop() {
  for (;;) {
    uint64_t sequence;
    int slot;
    bool launched;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        auto it = in_flight_.find(next_deliver_);
        if (it != in_flight_.end()) {
          SlotState s = slot_state_[static_cast<size_t>(it->second)];
          return s == SlotState::kLaunched || s == SlotState::kFailed;
        }
        return stopping_;
      });
      auto it = in_flight_.find(next_deliver_);
      if (it == in_flight_.end()) return;  // Stopping with nothing in flight.
      sequence = it->first;
      slot = it->second;
      launched = slot_state_[static_cast<size_t>(slot)] == SlotState::kLaunched;
    }
    DeliverNext(sequence, slot, launched);
  }
}

void Scheduler::DeliverNext(uint64_t sequence, int slot, bool launched) {
  std::string error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error = failure_;
  }
  if (error.empty() && launched) {
    try {
      stages_.Complete(slot, sequence);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      SetFailureLocked(StrCat("batch ", sequence, ": ", e.what()));
    }
    std::lock_guard<std::mutex> lock(mu_);
    error = failure_;  // Once failed, no batch still in flight is trusted.
  }
  PipelineResult result;
  result.sequence = sequence;
  result.error = error;
  std::string callback_error;
  stages_.RangePush("output", sequence);
  try {
    if (error.empty()) result.outputs = stages_.Outputs(slot);
    if (callback_) callback_(result);
  } catch (const std::exception& e) {
    callback_error = e.what();
    if (callback_error.empty()) callback_error = "exception without a message";
  } catch (...) {
    callback_error = "unknown exception";
  }
  stages_.RangePop();
  result.outputs.clear();
  if (!callback_error.empty()) {
    const std::string message = StrCat("pipeline: callback for batch ", sequence, " threw: ", callback_error);
    if (options_.on_callback_error) {
      try {
        options_.on_callback_error(sequence, message);
      } catch (...) {
      }
    } else {
      std::cerr << "kiln: " << message << "\n";
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!callback_error.empty()) ++stats_.callback_errors;
    slot_state_[static_cast<size_t>(slot)] = SlotState::kFree;
    free_slots_.push_back(slot);
    in_flight_.erase(sequence);
    ++next_deliver_;
    ++stats_.delivered;
  }
  cv_.notify_all();
}

// ---- Input checks and the preprocessing reference ----

ImageGeometry ImageInputGeometry(const std::vector<TensorDesc>& inputs, const std::vector<float>& mean,
                                 const std::vector<float>& std) {
  KILN_CHECK(inputs.size() == 1, "pipeline: images need a model with one input, this one has ",
             inputs.size());
  const TensorDesc& d = inputs[0];
  const bool uint8_images = d.dtype == DType::kUInt8;
  KILN_CHECK(d.dims.size() == 4, "pipeline: images need a rank-4 input (float NCHW, or uint8 NHWC for an "
             "engine built with an image input), input '", d.name, "' is ", d.ShapeString());
  KILN_CHECK(uint8_images || d.dtype == DType::kFloat32 || d.dtype == DType::kFloat16 ||
                 d.dtype == DType::kBFloat16,
             "pipeline: images need a float32/float16/bfloat16 NCHW input or a uint8 NHWC one, input '",
             d.name, "' is ", DTypeName(d.dtype));
  for (int64_t x : d.dims)
    KILN_CHECK(x > 0, "pipeline: input '", d.name, "' has dynamic dims ", d.ShapeString());
  ImageGeometry g = uint8_images ? ImageGeometry{d.dims[0], d.dims[3], d.dims[1], d.dims[2], d.dtype}
                                 : ImageGeometry{d.dims[0], d.dims[1], d.dims[2], d.dims[3], d.dtype};
  KILN_CHECK(g.c <= kMaxImageChannels, "pipeline: input '", d.name, "' ", d.ShapeString(), " has ",
             g.c, " channels; images support at most ", kMaxImageChannels);
  if (uint8_images) return g;  // The engine normalizes with its own mean/std.
  KILN_CHECK(static_cast<int64_t>(mean.size()) == g.c && static_cast<int64_t>(std.size()) == g.c,
             "pipeline: mean and std need ", g.c, " values (one per channel), got ", mean.size(),
             " and ", std.size());
  for (float s : std) KILN_CHECK(s != 0.f, "pipeline: std has a zero entry");
  return g;
}

void CheckImageBytes(const ImageGeometry& g, size_t bytes) {
  KILN_CHECK(bytes == g.image_bytes(), "pipeline: images [N,H,W,C] = [", g.n, ",", g.h, ",", g.w, ",",
             g.c, "] are ", g.image_bytes(), " uint8 bytes, got ", bytes);
}

void CheckTensorInputs(const std::vector<TensorDesc>& inputs, const std::vector<Tensor>& tensors,
                       const std::vector<OptimizationProfile>& profiles) {
  KILN_CHECK(tensors.size() == inputs.size(), "pipeline: the model takes ", inputs.size(),
             " inputs, got ", tensors.size());
  InputShapes shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorDesc& d = inputs[i];
    const Tensor& t = tensors[i];
    KILN_CHECK(t.defined(), "pipeline: input ", i, " ('", d.name, "') is undefined");
    KILN_CHECK(t.dtype() == d.dtype, "pipeline: input '", d.name, "' must be ", DTypeName(d.dtype),
               ", got ", DTypeName(t.dtype()));
    if (!profiles.empty() && profiles.front().inputs.count(d.name)) {
      shapes[d.name] = t.dims();
      continue;
    }
    KILN_CHECK(t.dims() == d.dims, "pipeline: input '", d.name, "' must have dims ",
               DimsToString(d.dims), ", got ", DimsToString(t.dims()));
  }
  if (!profiles.empty()) SelectProfile(profiles, shapes);  // Throws naming the input and the ranges.
}

void NormalizeImagesCpu(const uint8_t* nhwc, const ImageGeometry& g, const std::vector<float>& mean,
                        const std::vector<float>& std, void* out) {
  if (g.normalized_by_model()) {
    std::memcpy(out, nhwc, g.image_bytes());
    return;
  }
  const int64_t plane = g.h * g.w;
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t c = 0; c < g.c; ++c)
      for (int64_t p = 0; p < plane; ++p) {
        const float x = static_cast<float>(nhwc[(n * plane + p) * g.c + c]);
        const float v = (x / 255.f - mean[static_cast<size_t>(c)]) / std[static_cast<size_t>(c)];
        const int64_t o = (n * g.c + c) * plane + p;
        if (g.dtype == DType::kFloat32) {
          static_cast<float*>(out)[o] = v;
        } else if (g.dtype == DType::kFloat16) {
          static_cast<uint16_t*>(out)[o] = FloatToHalf(v);
        } else {
          static_cast<uint16_t*>(out)[o] = FloatToBFloat16(v);
        }
      }
}

}  // namespace kiln::pipeline
