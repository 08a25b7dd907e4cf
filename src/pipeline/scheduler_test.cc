// The pipeline's scheduling core on the CPU backend (runs without a GPU):
// in-order delivery under random per-batch delays, backpressure, callback
// error isolation, bad inputs, the failed state, Flush and destruction with
// work in flight. Every batch runs the real Model::RunCpu.
#include "pipeline/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "kiln/pipeline.h"
#include "pipeline/cpu_stages.h"
#include "pipeline/pipeline_test_model.h"
#include "test_util.h"

namespace kiln::pipeline {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kBatch = 2;

// The real CPU stages, with a per-batch delay in Launch (so lanes finish out
// of order) and an optional injected failure standing in for a device error.
class DelayedStages : public Stages {
 public:
  explicit DelayedStages(Stages& inner) : inner_(inner) {}
  const std::vector<TensorDesc>& inputs() const override { return inner_.inputs(); }
  const std::vector<TensorDesc>& outputs() const override { return inner_.outputs(); }
  void Validate(const BatchInput& input) const override { inner_.Validate(input); }
  void Stage(int slot, uint64_t sequence, const BatchInput& input) override {
    inner_.Stage(slot, sequence, input);
  }
  void Launch(int slot, int lane, uint64_t sequence) override {
    // Pseudo-random 0..6 ms, different per batch.
    std::this_thread::sleep_for(std::chrono::milliseconds((sequence * 7919 + 13) % 7));
    if (static_cast<int64_t>(sequence) == fail_at) Fail("simulated device error in batch ", sequence);
    inner_.Launch(slot, lane, sequence);
    std::lock_guard<std::mutex> lock(mu);
    lanes_used.insert(lane);
  }
  void Complete(int slot, uint64_t sequence) override { inner_.Complete(slot, sequence); }
  std::vector<Tensor> Outputs(int slot) override { return inner_.Outputs(slot); }

  int64_t fail_at = -1;
  std::mutex mu;
  std::set<int> lanes_used;

 private:
  Stages& inner_;
};

// What a callback saw.
struct Delivery {
  uint64_t sequence;
  std::vector<Tensor> outputs;  // Clones.
  std::string error;
  std::thread::id thread;
};

class PipelineCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kiln_pipeline_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    const std::string path = (dir_ / "model.onnx").string();
    testing::WritePipelineTestModel(path, kBatch);
    model_ = Model::Load(path);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Distinct random batches and their reference outputs (RunCpu directly).
  void MakeBatches(int count) {
    for (int i = 0; i < count; ++i) {
      batches_.push_back({testing::RandomTensor({kBatch, 3, 4, 4}, -1.f, 1.f, 100 + i)});
      expected_.push_back(model_->RunCpu({{"x", batches_.back()[0]}}));
    }
  }

  PipelineCallback Recorder() {
    return [this](const PipelineResult& r) {
      Delivery d{r.sequence, {}, r.error, std::this_thread::get_id()};
      for (const Tensor& t : r.outputs) d.outputs.push_back(t.Clone());
      std::lock_guard<std::mutex> lock(mu_);
      deliveries_.push_back(std::move(d));
    };
  }

  // Every batch delivered once, in order, with the reference outputs.
  void ExpectAllDeliveredInOrder(size_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_EQ(deliveries_.size(), count);
    for (size_t i = 0; i < count; ++i) {
      const Delivery& d = deliveries_[i];
      ASSERT_EQ(d.sequence, i) << "delivery " << i;
      ASSERT_TRUE(d.error.empty()) << "batch " << i << ": " << d.error;
      ASSERT_EQ(d.outputs.size(), 1u);
      const Tensor& want = expected_[i % expected_.size()][0];
      ASSERT_EQ(d.outputs[0].dims(), want.dims());
      EXPECT_EQ(testing::MaxAbsoluteError(d.outputs[0], want), 0.0) << "batch " << i;
    }
  }

  fs::path dir_;
  std::unique_ptr<Model> model_;
  std::vector<std::vector<Tensor>> batches_;
  std::vector<std::vector<Tensor>> expected_;
  std::mutex mu_;
  std::vector<Delivery> deliveries_;
};

BatchInput Tensors(const std::vector<Tensor>& t) {
  BatchInput in;
  in.tensors = &t;
  return in;
}

TEST_F(PipelineCoreTest, DeliversInOrderUnderRandomDelaysAcrossLanes) {
  MakeBatches(24);
  for (bool async : {true, false}) {
    SCOPED_TRACE(async ? "async output" : "sync output");
    deliveries_.clear();
    PipelineConfig config;
    config.slots = 4;
    CpuStages cpu(*model_, config, {});
    DelayedStages stages(cpu);
    SchedulerOptions options;
    options.slots = 4;
    options.lanes = 3;
    options.async_output = async;
    {
      Scheduler scheduler(stages, options, Recorder());
      for (size_t i = 0; i < batches_.size(); ++i)
        EXPECT_EQ(scheduler.Submit(Tensors(batches_[i])), i);
      scheduler.Flush();
      EXPECT_EQ(scheduler.stats().delivered, batches_.size());
    }
    ExpectAllDeliveredInOrder(batches_.size());
    EXPECT_EQ(stages.lanes_used.size(), 3u) << "every lane should have run batches";
    const std::thread::id caller = std::this_thread::get_id();
    for (const Delivery& d : deliveries_)
      EXPECT_EQ(d.thread == caller, !async) << "callbacks run on the caller only without async output";
  }
}

TEST_F(PipelineCoreTest, SubmitBlocksWhenEverySlotIsBusy) {
  MakeBatches(3);
  PipelineConfig config;
  config.slots = 2;
  CpuStages stages(*model_, config, {});
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> callbacks{0};
  SchedulerOptions options;
  options.slots = 2;
  Scheduler scheduler(stages, options, [&](const PipelineResult& r) {
    if (r.sequence == 0) released.wait();  // Holds slot 0; slot 1 waits behind it.
    ++callbacks;
  });
  const auto t0 = std::chrono::steady_clock::now();
  scheduler.Submit(Tensors(batches_[0]));
  scheduler.Submit(Tensors(batches_[1]));
  const double first_two_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(first_two_ms, 1000.0) << "free slots must not block";
  std::atomic<bool> third_returned{false};
  std::thread submitter([&] {
    scheduler.Submit(Tensors(batches_[2]));
    third_returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(third_returned) << "Submit must block while both slots are in use";
  EXPECT_EQ(callbacks.load(), 0);
  release.set_value();
  submitter.join();
  EXPECT_TRUE(third_returned);
  scheduler.Flush();
  EXPECT_EQ(callbacks.load(), 3);
  PipelineStats stats = scheduler.stats();
  EXPECT_GE(stats.submit_blocked_ms, 150.0) << "the blocked time is measured";
  EXPECT_EQ(stats.submitted, 3u);
}

TEST_F(PipelineCoreTest, ThrowingCallbackFailsOnlyItsResult) {
  MakeBatches(8);
  std::vector<std::pair<uint64_t, std::string>> reported;
  PipelineConfig config;
  config.slots = 3;
  config.contexts = 2;
  config.on_callback_error = [&](uint64_t seq, const std::string& message) {
    reported.emplace_back(seq, message);
  };
  PipelineCallback record = Recorder();
  auto pipeline = Pipeline::CreateCpu(*model_, config, [&](const PipelineResult& r) {
    record(r);
    if (r.sequence == 3) throw Error("post-processing exploded");
  });
  for (const auto& b : batches_) pipeline->Submit(b);
  EXPECT_NO_THROW(pipeline->Flush());
  ExpectAllDeliveredInOrder(batches_.size());
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0].first, 3u);
  EXPECT_NE(reported[0].second.find("post-processing exploded"), std::string::npos) << reported[0].second;
  EXPECT_NE(reported[0].second.find("batch 3"), std::string::npos) << reported[0].second;
  EXPECT_EQ(pipeline->stats().callback_errors, 1u);
  // The pipeline goes on.
  pipeline->Submit(batches_[0]);
  pipeline->Flush();
  EXPECT_EQ(pipeline->stats().delivered, batches_.size() + 1);
}

TEST_F(PipelineCoreTest, BadInputIsRejectedWithoutUsingASlot) {
  MakeBatches(4);
  PipelineConfig config;
  config.slots = 1;  // A leaked slot would deadlock the next Submit.
  config.overlap = true;
  auto pipeline = Pipeline::CreateCpu(*model_, config, Recorder());
  pipeline->Submit(batches_[0]);
  auto expect_rejected = [&](const std::vector<Tensor>& bad, const std::string& part) {
    try {
      pipeline->Submit(bad);
      ADD_FAILURE() << "accepted a bad input (" << part << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_rejected({testing::RandomTensor({kBatch, 3, 4, 5})}, "dims [2,3,4,4]");
  expect_rejected({batches_[1][0].CastTo(DType::kFloat16)}, "must be float32");
  expect_rejected({}, "takes 1 inputs");
  expect_rejected({Tensor()}, "undefined");
  std::vector<uint8_t> images(kBatch * 4 * 4 * 3 - 1);
  try {
    pipeline->SubmitImages(images.data(), images.size());
    ADD_FAILURE() << "accepted images of the wrong size";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("are 96 uint8 bytes"), std::string::npos) << e.what();
  }
  for (size_t i = 1; i < batches_.size(); ++i) EXPECT_EQ(pipeline->Submit(batches_[i]), i);
  pipeline->Flush();
  ExpectAllDeliveredInOrder(batches_.size());
  EXPECT_EQ(pipeline->stats().submitted, batches_.size());
}

TEST_F(PipelineCoreTest, DeviceErrorFailsThePipeline) {
  MakeBatches(12);
  for (bool async : {true, false}) {
    SCOPED_TRACE(async ? "async output" : "sync output");
    deliveries_.clear();
    PipelineConfig config;
    config.slots = 3;
    CpuStages cpu(*model_, config, {});
    DelayedStages stages(cpu);
    stages.fail_at = 5;
    SchedulerOptions options;
    options.slots = 3;
    options.lanes = 2;
    options.async_output = async;
    size_t accepted = 0;
    {
      Scheduler scheduler(stages, options, Recorder());
      for (const auto& b : batches_) {
        try {
          scheduler.Submit(Tensors(b));
          ++accepted;
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("simulated device error in batch 5"), std::string::npos)
              << e.what();
        }
      }
      // Async: batch 5 is accepted and fails on its lane; sync: Submit(5) launches it and throws.
      EXPECT_GE(accepted, async ? 6u : 5u);
      EXPECT_LT(accepted, batches_.size()) << "Submit must throw once the pipeline failed";
      try {
        scheduler.Flush();
        ADD_FAILURE() << "Flush of a failed pipeline returned";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("pipeline failed: batch 5: simulated device error"),
                  std::string::npos)
            << e.what();
      }
      EXPECT_THROW(scheduler.Submit(Tensors(batches_[0])), Error);
    }
    // Every batch given a sequence number is delivered once, in order; from the
    // failed one on, with the error.
    ASSERT_EQ(deliveries_.size(), accepted + (async ? 0 : 1));
    bool failed = false;
    for (size_t i = 0; i < deliveries_.size(); ++i) {
      EXPECT_EQ(deliveries_[i].sequence, i);
      if (i == 5) {
        EXPECT_FALSE(deliveries_[i].error.empty());
      }
      if (!deliveries_[i].error.empty()) failed = true;
      if (failed) {
        EXPECT_NE(deliveries_[i].error.find("simulated device error"), std::string::npos) << i;
        EXPECT_TRUE(deliveries_[i].outputs.empty());
      } else {
        EXPECT_EQ(testing::MaxAbsoluteError(deliveries_[i].outputs.at(0), expected_[i][0]), 0.0);
      }
    }
    EXPECT_TRUE(failed);
  }
}

TEST_F(PipelineCoreTest, FlushAndDestructionDrainWorkInFlight) {
  MakeBatches(6);
  PipelineConfig config;
  config.slots = 6;
  CpuStages cpu(*model_, config, {});
  DelayedStages stages(cpu);
  SchedulerOptions options;
  options.slots = 6;
  options.lanes = 2;
  {
    Scheduler scheduler(stages, options, Recorder());
    for (const auto& b : batches_) scheduler.Submit(Tensors(b));
    scheduler.Flush();
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(deliveries_.size(), batches_.size()) << "Flush returned before every delivery";
  }
  deliveries_.clear();
  {
    Scheduler scheduler(stages, options, Recorder());
    for (const auto& b : batches_) scheduler.Submit(Tensors(b));
    // Destroyed with (most of) the batches still in flight.
  }
  ExpectAllDeliveredInOrder(batches_.size());
}

TEST_F(PipelineCoreTest, CpuPipelineNormalizesImages) {
  // uint8 NHWC images through CreateCpu equal RunCpu on hand-normalized NCHW floats.
  PipelineConfig config;
  config.mean = {0.5f, 0.25f, 0.125f};
  config.std = {0.5f, 2.f, 0.25f};
  std::vector<uint8_t> images(kBatch * 4 * 4 * 3);
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  Tensor x(DType::kFloat32, {kBatch, 3, 4, 4});
  for (int64_t n = 0; n < kBatch; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 16; ++p)
        x.data<float>()[(n * 3 + c) * 16 + p] =
            (images[static_cast<size_t>((n * 16 + p) * 3 + c)] / 255.f - config.mean[c]) / config.std[c];
  expected_.push_back(model_->RunCpu({{"x", x}}));
  auto pipeline = Pipeline::CreateCpu(*model_, config, Recorder());
  pipeline->SubmitImages(images.data(), images.size());
  pipeline->Flush();
  ExpectAllDeliveredInOrder(1);

  config.mean = {0.5f};
  try {
    auto bad = Pipeline::CreateCpu(*model_, config, Recorder());
    bad->SubmitImages(images.data(), images.size());
    ADD_FAILURE() << "accepted 1 mean for 3 channels";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mean and std need 3 values"), std::string::npos) << e.what();
  }
}

TEST(PipelineImages, NormalizeImagesCpuMatchesTheFormulaForEveryDType) {
  ImageGeometry g{1, 2, 1, 3, DType::kFloat32};
  const std::vector<uint8_t> images = {0, 255, 10, 20, 128, 64};  // [1,1,3,2] NHWC
  const std::vector<float> mean = {0.485f, 0.456f}, stdv = {0.229f, 0.224f};
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    g.dtype = dtype;
    Tensor out(dtype, {1, 2, 1, 3});
    NormalizeImagesCpu(images.data(), g, mean, stdv, out.raw_data());
    for (int c = 0; c < 2; ++c)
      for (int p = 0; p < 3; ++p) {
        const double want = (images[static_cast<size_t>(p * 2 + c)] / 255.0 - mean[c]) / stdv[c];
        const double tol = dtype == DType::kFloat32 ? 1e-5 : dtype == DType::kFloat16 ? 2e-3 : 2e-2;
        EXPECT_NEAR(out.GetAsDouble(c * 3 + p), want, tol * std::max(1.0, std::fabs(want)))
            << DTypeName(dtype) << " c " << c << " p " << p;
      }
  }
}

}  // namespace
}  // namespace kiln::pipeline
