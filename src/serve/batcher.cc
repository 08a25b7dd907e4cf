#include "serve/batcher.h"

#include <algorithm>
#include <cstring>
#include <exception>

#include "kiln/error.h"

namespace kiln::serve {

Tensor ConcatBatch(const std::vector<const Tensor*>& parts) {
  KILN_CHECK(!parts.empty(), "nothing to concatenate");
  const Tensor& first = *parts[0];
  KILN_CHECK(first.rank() >= 1, "cannot batch a scalar");
  std::vector<int64_t> dims = first.dims();
  dims[0] = 0;
  for (const Tensor* t : parts) {
    KILN_CHECK(t->dtype() == first.dtype() && t->rank() == first.rank() &&
                   std::equal(t->dims().begin() + 1, t->dims().end(), first.dims().begin() + 1),
               "cannot batch ", t->TypeString(), " with ", first.TypeString());
    dims[0] += t->dim(0);
  }
  Tensor out(first.dtype(), dims);
  auto* dst = static_cast<char*>(out.raw_data());
  for (const Tensor* t : parts) {
    if (t->nbytes()) std::memcpy(dst, t->raw_data(), t->nbytes());
    dst += t->nbytes();
  }
  return out;
}

Tensor SliceBatch(const Tensor& t, int64_t begin, int64_t count) {
  KILN_CHECK(t.rank() >= 1 && begin >= 0 && begin + count <= t.dim(0), "cannot take rows [",
             begin, ", ", begin + count, ") of ", t.TypeString());
  std::vector<int64_t> dims = t.dims();
  dims[0] = count;
  Tensor out(t.dtype(), dims);
  const size_t row = t.dim(0) ? t.nbytes() / static_cast<size_t>(t.dim(0)) : 0;
  if (out.nbytes())
    std::memcpy(out.raw_data(), static_cast<const char*>(t.raw_data()) + row * begin, out.nbytes());
  return out;
}

uint64_t DurationNs(std::chrono::steady_clock::duration d) {
  return static_cast<uint64_t>(std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));
}

void StatsBox::AddFailure(std::chrono::steady_clock::time_point received) {
  const uint64_t ns = DurationNs(std::chrono::steady_clock::now() - received);
  std::lock_guard<std::mutex> lock(mu);
  stats.failure += 1;
  stats.failure_ns += ns;
}

Batcher::Batcher(ModelConfig config, std::string version, std::shared_ptr<Backend> backend,
                 std::shared_ptr<StatsBox> stats, int default_max_queue_size)
    : config_(std::move(config)),
      version_(std::move(version)),
      backend_(std::move(backend)),
      stats_(std::move(stats)),
      batching_(config_.dynamic_batching && config_.max_batch_size > 0),
      max_queue_size_(config_.max_queue_size > 0 ? config_.max_queue_size
                                                 : std::max(1, default_max_queue_size)) {
  const int n = std::max(1, config_.instance_count);
  for (int i = 0; i < n; ++i) workers_.emplace_back([this, i] { Worker(i); });
}

Batcher::~Batcher() { Shutdown(); }

size_t Batcher::QueueSize() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void Batcher::Enqueue(InferRequest request, Callback done) {
  Pending p;
  p.enqueued = Clock::now();
  if (request.received == Clock::time_point{}) request.received = p.enqueued;
  const int64_t timeout_us = request.timeout_us > 0 ? request.timeout_us : config_.default_timeout_us;
  p.deadline = timeout_us > 0 ? p.enqueued + std::chrono::microseconds(timeout_us)
                              : Clock::time_point::max();
  if (config_.max_batch_size > 0 && !request.inputs.empty() &&
      request.inputs[0].second.rank() >= 1)
    p.batch = request.inputs[0].second.dim(0);
  p.request = std::move(request);
  p.done = std::move(done);
  std::string refusal;
  bool wake_former = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_former = forming_;
    if (stopping_) {
      refusal = "model '" + config_.name + "' is shutting down and accepts no new requests";
    } else if (queue_.size() >= static_cast<size_t>(max_queue_size_)) {
      refusal = "queue full: model '" + config_.name + "' already has " +
                std::to_string(queue_.size()) + " requests queued (max_queue_size " +
                std::to_string(max_queue_size_) + ")";
    } else {
      queue_.push_back(std::move(p));
    }
  }
  if (!refusal.empty()) {
    std::vector<Pending> refused;
    refused.push_back(std::move(p));
    FailAll(refused, StatusCode::kUnavailable, refusal);
    return;
  }
  if (wake_former)
    forming_cv_.notify_one();
  else
    idle_cv_.notify_one();
}

void Batcher::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  idle_cv_.notify_all();
  forming_cv_.notify_all();
  std::lock_guard<std::mutex> join_lock(join_mu_);
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

bool Batcher::Compatible(const Pending& a, const Pending& b) const {
  if (a.request.inputs.size() != b.request.inputs.size()) return false;
  for (const auto& [name, ta] : a.request.inputs) {
    auto it = std::find_if(b.request.inputs.begin(), b.request.inputs.end(),
                           [&](const auto& in) { return in.first == name; });
    if (it == b.request.inputs.end()) return false;
    const Tensor& tb = it->second;
    if (ta.dtype() != tb.dtype() || ta.rank() != tb.rank() || ta.rank() < 1) return false;
    if (!std::equal(ta.dims().begin() + 1, ta.dims().end(), tb.dims().begin() + 1)) return false;
  }
  return true;
}

std::vector<size_t> Batcher::Select(Clock::time_point now, Clock::time_point* wake) const {
  if (!batching_) return {0};
  const Pending& oldest = queue_.front();
  const int64_t limit = config_.max_batch_size;
  std::vector<size_t> chosen{0};
  std::vector<int64_t> totals{oldest.batch};  // Running total after each chosen entry.
  for (size_t i = 1; i < queue_.size() && totals.back() < limit; ++i) {
    if (totals.back() + queue_[i].batch > limit || !Compatible(oldest, queue_[i])) continue;
    chosen.push_back(i);
    totals.push_back(totals.back() + queue_[i].batch);
  }
  if (totals.back() >= limit || stopping_) return chosen;
  // The largest preferred batch size that a prefix of the candidates makes.
  const auto& preferred = config_.preferred_batch_sizes;
  for (size_t k = chosen.size(); k-- > 0;) {
    if (std::binary_search(preferred.begin(), preferred.end(), static_cast<int>(totals[k]))) {
      chosen.resize(k + 1);
      return chosen;
    }
  }
  const Clock::time_point due = oldest.enqueued + std::chrono::microseconds(config_.max_queue_delay_us);
  if (now >= due) return chosen;
  *wake = due;
  return {};
}

void Batcher::Worker(int instance) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    idle_cv_.wait(lock,
                  [&] { return (!queue_.empty() && !forming_) || (stopping_ && queue_.empty()); });
    if (queue_.empty()) return;  // Stopping and drained.
    forming_ = true;
    std::vector<Pending> batch;
    while (!queue_.empty()) {
      const Clock::time_point now = Clock::now();
      std::vector<Pending> expired;
      Clock::time_point earliest_deadline = Clock::time_point::max();
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->deadline <= now) {
          expired.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          earliest_deadline = std::min(earliest_deadline, it->deadline);
          ++it;
        }
      }
      if (!expired.empty()) {
        // Callbacks run without the lock (they may call back into the server).
        lock.unlock();
        FailAll(expired, StatusCode::kTimeout,
                "request timed out in the queue of model '" + config_.name + "'");
        lock.lock();
        continue;
      }
      Clock::time_point wake = Clock::time_point::max();
      std::vector<size_t> chosen = Select(now, &wake);
      if (!chosen.empty()) {
        for (size_t i : chosen) batch.push_back(std::move(queue_[i]));
        for (size_t k = chosen.size(); k-- > 0;)
          queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(chosen[k]));
        break;
      }
      forming_cv_.wait_until(lock, std::min(wake, earliest_deadline));
    }
    forming_ = false;
    // Another worker forms the next batch while this one runs; when stopping,
    // idle workers must also see a drained queue to exit.
    const bool wake_all = stopping_, wake_one = !queue_.empty();
    lock.unlock();
    if (wake_all)
      idle_cv_.notify_all();
    else if (wake_one)
      idle_cv_.notify_one();
    if (!batch.empty()) Execute(batch, instance);
    lock.lock();
  }
}

void Batcher::Finish(Pending& p, InferResponse response) {
  response.model = config_.name;
  response.version = version_;
  response.id = p.request.id;
  Callback done = std::move(p.done);
  if (!done) return;
  try {
    done(std::move(response));
  } catch (...) {
    // A frontend's callback must not take the worker down.
  }
}

void Batcher::FailAll(std::vector<Pending>& list, StatusCode code, const std::string& message) {
  for (Pending& p : list) {
    stats_->AddFailure(p.request.received);
    InferResponse r;
    r.status = {code, message};
    Finish(p, std::move(r));
  }
}

void Batcher::Execute(std::vector<Pending>& batch, int instance) {
  const Clock::time_point t0 = Clock::now();
  uint64_t queue_ns = 0;
  int64_t total = 0;
  for (const Pending& p : batch) {
    queue_ns += DurationNs(t0 - p.enqueued);
    total += p.batch;
  }
  std::vector<InferResponse> responses(batch.size());
  std::string error;
  Clock::time_point t1 = t0, t2 = t0;
  try {
    // The requests' input tensors, in batch order, for the backend to gather.
    BatchParts parts;
    for (const auto& [name, t] : batch[0].request.inputs) {
      std::vector<const Tensor*>& list = parts[name];
      for (const Pending& p : batch) {
        for (const auto& in : p.request.inputs) {
          if (in.first == name) list.push_back(&in.second);
        }
      }
    }
    Clock::time_point inputs_ready{};
    // The outputs may be views of the backend's staging for this instance,
    // valid until its next call: every response gets its own copy below.
    std::map<std::string, Tensor> outputs = backend_->RunBatch(parts, instance, &inputs_ready);
    t2 = Clock::now();
    t1 = inputs_ready == Clock::time_point{} ? t0 : std::clamp(inputs_ready, t0, t2);
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const InferRequest& req = batch[i].request;
      std::vector<std::string> names = req.requested_outputs;
      if (names.empty()) {
        for (const TensorIO& io : config_.outputs) names.push_back(io.name);
      }
      for (const std::string& name : names) {
        auto it = outputs.find(name);
        KILN_CHECK(it != outputs.end(), "the model produced no output '", name, "'");
        const Tensor& t = it->second;
        if (batch.size() == 1) {
          responses[i].outputs.emplace_back(name, t.Clone());
          continue;
        }
        KILN_CHECK(t.rank() >= 1 && t.dim(0) == total, "output '", name, "' is ", t.TypeString(),
                   ", whose first dim does not match the batch size ", total,
                   ", so it cannot be split per request");
        responses[i].outputs.emplace_back(name, SliceBatch(t, row, batch[i].batch));
      }
      row += batch[i].batch;
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  const Clock::time_point t3 = Clock::now();
  if (!error.empty()) {
    FailAll(batch, StatusCode::kInternal,
            "model '" + config_.name + "' failed to run a batch of " + std::to_string(total) +
                ": " + error);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(stats_->mu);
    ModelStats& s = stats_->stats;
    const uint64_t n = batch.size();
    s.success += n;
    s.executions += 1;
    s.inferences += static_cast<uint64_t>(total);
    s.queue_ns += queue_ns;
    // Like Triton, each request is charged its batch's compute time.
    const uint64_t input_ns = DurationNs(t1 - t0), infer_ns = DurationNs(t2 - t1),
                   output_ns = DurationNs(t3 - t2);
    s.compute_input_ns += n * input_ns;
    s.compute_infer_ns += n * infer_ns;
    s.compute_output_ns += n * output_ns;
    for (const Pending& p : batch) s.success_ns += DurationNs(t3 - p.request.received);
    s.batch_size_counts[static_cast<int>(total)] += 1;
    BatchStats& b = s.batch_stats[static_cast<int>(total)];
    b.executions += 1;
    b.compute_input_ns += input_ns;
    b.compute_infer_ns += infer_ns;
    b.compute_output_ns += output_ns;
    s.last_inference_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
  }
  for (size_t i = 0; i < batch.size(); ++i) Finish(batch[i], std::move(responses[i]));
}

}  // namespace kiln::serve
