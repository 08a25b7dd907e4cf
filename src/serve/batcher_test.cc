// The dynamic batcher on a real CPU backend (Y = X * 2 + 1). A gate in
// front of the backend holds the worker busy so that queue contents are
// known when batches form.
#include "serve/batcher.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "onnx.pb.h"
#include "test_util.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;

// Writes Y = X * 2 + 1 (X[batch, n]) to `path`.
void WriteAffineModel(const std::string& path) {
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  auto* mul = graph->add_node();
  mul->set_op_type("Mul");
  mul->add_input("X");
  mul->add_input("two");
  mul->add_output("t");
  auto* add = graph->add_node();
  add->set_op_type("Add");
  add->add_input("t");
  add->add_input("one");
  add->add_output("Y");
  for (auto [name, v] : {std::pair{"two", 2.f}, {"one", 1.f}}) {
    ::onnx::TensorProto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(::onnx::TensorProto::FLOAT);
    t->add_float_data(v);
  }
  for (auto [info, name] : {std::pair{graph->add_input(), "X"}, {graph->add_output(), "Y"}}) {
    info->set_name(name);
    auto* tt = info->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(::onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("batch");
    tt->mutable_shape()->add_dim()->set_dim_param("n");
  }
  std::ofstream out(path, std::ios::binary);
  out << model.SerializeAsString();
}

// The real backend behind a gate that the test opens.
class GatedBackend : public Backend {
 public:
  explicit GatedBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                    int instance) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++started_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    }
    return inner_->Run(inputs, instance);
  }
  std::string Kind() const override { return "cpu"; }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitStarted(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return started_ >= n; });
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int started_ = 0;
};

// The real backend, returning its outputs as the GPU backend does: views of
// one staging buffer that every call first poisons with NaN, so a response
// that kept a view instead of a copy would read a later call's bytes.
class StagingViewBackend : public Backend {
 public:
  explicit StagingViewBackend(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                    int instance) override {
    std::fill(staging_.begin(), staging_.end(), std::nanf(""));
    std::map<std::string, Tensor> views;
    size_t offset = 0;
    for (const auto& [name, t] : inner_->Run(inputs, instance)) {
      KILN_CHECK(t.dtype() == DType::kFloat32 &&
                     offset + static_cast<size_t>(t.numel()) <= staging_.size(),
                 "StagingViewBackend: output '", name, "' ", t.TypeString(), " does not fit");
      std::memcpy(staging_.data() + offset, t.raw_data(), t.nbytes());
      views[name] = Tensor::Borrow(t.dtype(), t.dims(), nullptr, staging_.data() + offset);
      offset += static_cast<size_t>(t.numel());
    }
    return views;
  }
  std::string Kind() const override { return "cpu"; }

 private:
  std::shared_ptr<Backend> inner_;
  std::vector<float> staging_ = std::vector<float>(1024);
};

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::path(::testing::TempDir()) / "kiln_batcher_affine.onnx").string();
    WriteAffineModel(path_);
    model_ = Model::Load(path_);
    config_.name = "affine";
    config_.max_batch_size = 8;
    config_.dynamic_batching = true;
    config_.inputs = {{"X", DType::kFloat32, {-1}}};
    config_.outputs = {{"Y", DType::kFloat32, {-1}}};
    config_.instance_kind = "cpu";
  }
  std::shared_ptr<GatedBackend> MakeBackend() {
    return std::make_shared<GatedBackend>(CreateBackend(config_, path_, model_, nullptr));
  }
  std::future<InferResponse> Submit(Batcher& b, int64_t rows, float start = 0,
                                    int64_t timeout_us = 0) {
    InferRequest r;
    r.model = "affine";
    std::vector<float> values(static_cast<size_t>(rows * 2));
    for (size_t i = 0; i < values.size(); ++i) values[i] = start + static_cast<float>(i);
    r.inputs.emplace_back("X", Tensor::FromFloats({rows, 2}, values));
    r.timeout_us = timeout_us;
    auto promise = std::make_shared<std::promise<InferResponse>>();
    auto f = promise->get_future();
    b.Enqueue(std::move(r), [promise](InferResponse resp) { promise->set_value(std::move(resp)); });
    return f;
  }

  std::string path_;
  std::shared_ptr<const Model> model_;
  ModelConfig config_;
};

TEST(BatchTensors, ConcatAndSliceRoundTrip) {
  Tensor a = Tensor::FromFloats({1, 2}, {1, 2});
  Tensor b = Tensor::FromFloats({2, 2}, {3, 4, 5, 6});
  Tensor ab = ConcatBatch({&a, &b});
  EXPECT_EQ(ab.dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ab.ToFloatVector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(SliceBatch(ab, 1, 2).ToFloatVector(), b.ToFloatVector());
  Tensor c = Tensor::FromFloats({1, 3}, {1, 2, 3});
  EXPECT_THROW(ConcatBatch({&a, &c}), Error);
  EXPECT_THROW(SliceBatch(ab, 2, 2), Error);
}

// Backend::RunBatch's default gathers the parts with ConcatBatch and runs
// them: the same answer as Run on the concatenation, and Y = X * 2 + 1.
TEST_F(BatcherTest, RunBatchDefaultEqualsRunOnConcatenation) {
  std::unique_ptr<Backend> backend = CreateBackend(config_, path_, model_, nullptr);
  ASSERT_EQ(backend->Kind(), "cpu");
  const Tensor a = testing::RandomTensor({1, 3}, -2, 2, 11);
  const Tensor b = testing::RandomTensor({3, 3}, -2, 2, 12);
  const Tensor c = testing::RandomTensor({2, 3}, -2, 2, 13);
  const Tensor abc = ConcatBatch({&a, &b, &c});
  for (const std::vector<const Tensor*>& list :
       {std::vector<const Tensor*>{&a, &b, &c}, std::vector<const Tensor*>{&abc}}) {
    const auto before = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point ready{};
    std::map<std::string, Tensor> batched = backend->RunBatch({{"X", list}}, 0, &ready);
    EXPECT_GE(ready, before);
    std::map<std::string, Tensor> reference = backend->Run({{"X", abc}}, 0);
    ASSERT_EQ(batched.size(), 1u);
    ASSERT_EQ(batched.count("Y"), 1u);
    const Tensor& y = batched.at("Y");
    EXPECT_EQ(y.dims(), (std::vector<int64_t>{6, 3}));
    EXPECT_EQ(y.ToFloatVector(), reference.at("Y").ToFloatVector());
    const std::vector<float> x = abc.ToFloatVector();
    const std::vector<float> got = y.ToFloatVector();
    for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(got[i], x[i] * 2 + 1) << i;
  }
  // Parts that do not line up fail as ConcatBatch does.
  const Tensor wide = testing::RandomTensor({1, 4}, -2, 2, 14);
  EXPECT_THROW(backend->RunBatch({{"X", {&a, &wide}}}, 0), Error);
}

// Responses own their outputs: a backend whose outputs are views of staging
// that later calls overwrite (as the GPU backend's are) still answers every
// request right, lone requests and batched ones.
TEST_F(BatcherTest, ResponsesCopyOutputsBeforeTheNextBatch) {
  config_.preferred_batch_sizes = {1, 4};  // A lone row ships at once.
  config_.max_queue_delay_us = 10'000'000;
  auto gate = MakeBackend();
  auto backend = std::make_shared<StagingViewBackend>(gate);
  auto stats = std::make_shared<StatsBox>();
  std::vector<std::future<InferResponse>> futures;
  std::vector<float> starts;
  {
    Batcher batcher(config_, "1", backend, stats, 100);
    futures.push_back(Submit(batcher, 1, 100));  // Runs alone, held by the gate.
    starts.push_back(100);
    gate->WaitStarted(1);
    for (int i = 0; i < 5; ++i) {
      futures.push_back(Submit(batcher, 1, static_cast<float>(10 * i)));
      starts.push_back(static_cast<float>(10 * i));
    }
    gate->Open();  // Then a batch of 4, then the last alone.
    gate->WaitStarted(3);
  }
  for (size_t i = 0; i < futures.size(); ++i) {
    InferResponse r = futures[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    ASSERT_EQ(r.outputs.size(), 1u);
    std::vector<float> y = r.outputs[0].second.ToFloatVector();
    ASSERT_EQ(y.size(), 2u);
    for (size_t k = 0; k < y.size(); ++k)
      EXPECT_FLOAT_EQ(y[k], (starts[i] + static_cast<float>(k)) * 2 + 1) << "request " << i;
  }
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.batch_size_counts, (std::map<int, uint64_t>{{1, 2}, {4, 1}}));
}

TEST_F(BatcherTest, PreferredBatchSizeShipsFirst) {
  config_.preferred_batch_sizes = {4};
  config_.max_queue_delay_us = 10'000'000;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  std::vector<std::shared_future<InferResponse>> futures;
  {
    Batcher batcher(config_, "1", backend, stats, 100);
    futures.push_back(Submit(batcher, 4, 100).share());  // Preferred at once: runs, held by the gate.
    backend->WaitStarted(1);
    for (int i = 0; i < 6; ++i)
      futures.push_back(Submit(batcher, 1, static_cast<float>(10 * i)).share());
    EXPECT_EQ(batcher.QueueSize(), 6u);
    backend->Open();
    // The gate opened: a preferred batch of 4 runs, 2 stay for the delay.
    backend->WaitStarted(2);
    for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(futures[i].get().status.ok());
    EXPECT_EQ(batcher.QueueSize(), 2u);
  }  // Shutdown runs the last 2 without waiting out the delay.
  for (size_t i = 0; i < futures.size(); ++i) {
    const InferResponse& r = futures[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    const float start = i == 0 ? 100.f : static_cast<float>(10 * (i - 1));
    std::vector<float> y = r.outputs[0].second.ToFloatVector();
    for (size_t k = 0; k < y.size(); ++k) EXPECT_FLOAT_EQ(y[k], (start + static_cast<float>(k)) * 2 + 1);
  }
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.batch_size_counts, (std::map<int, uint64_t>{{2, 1}, {4, 2}}));
  EXPECT_EQ(stats->stats.executions, 3u);
  EXPECT_EQ(stats->stats.inferences, 10u);
}

// Durations are real: the gate holds the first batch inside the backend for
// a known time while later requests wait in the queue.
TEST_F(BatcherTest, StatsMeasureQueueAndComputeDurations) {
  config_.preferred_batch_sizes = {2, 4};
  config_.max_queue_delay_us = 10'000'000;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  constexpr auto kHold = std::chrono::milliseconds(30);
  std::vector<std::future<InferResponse>> futures;
  const auto start = Batcher::Clock::now();
  {
    Batcher batcher(config_, "1", backend, stats, 100);
    futures.push_back(Submit(batcher, 2));  // Preferred at once: held inside the backend.
    backend->WaitStarted(1);
    for (int i = 0; i < 4; ++i) futures.push_back(Submit(batcher, 1, static_cast<float>(i)));
    std::this_thread::sleep_for(kHold);
    backend->Open();
    for (auto& f : futures) ASSERT_TRUE(f.get().status.ok());
  }
  const uint64_t wall_ns = DurationNs(Batcher::Clock::now() - start);
  std::lock_guard<std::mutex> lock(stats->mu);
  const ModelStats& s = stats->stats;
  EXPECT_EQ(s.success, 5u);
  EXPECT_EQ(s.failure, 0u);
  ASSERT_EQ(s.batch_stats.size(), 2u);
  const BatchStats& two = s.batch_stats.at(2);
  const BatchStats& four = s.batch_stats.at(4);
  EXPECT_EQ(two.executions, 1u);
  EXPECT_EQ(four.executions, 1u);
  const uint64_t hold_ns = DurationNs(kHold);
  EXPECT_GE(two.compute_infer_ns, hold_ns);  // The gate is inside Run.
  EXPECT_GT(four.compute_infer_ns, 0u);
  EXPECT_GT(four.compute_input_ns, 0u);  // Four requests concatenated.
  EXPECT_GT(four.compute_output_ns, 0u);
  // Each request is charged its batch's compute time.
  EXPECT_EQ(s.compute_infer_ns, two.compute_infer_ns + 4 * four.compute_infer_ns);
  EXPECT_EQ(s.compute_input_ns, two.compute_input_ns + 4 * four.compute_input_ns);
  EXPECT_EQ(s.compute_output_ns, two.compute_output_ns + 4 * four.compute_output_ns);
  EXPECT_GE(s.queue_ns, 4 * hold_ns);  // The four waited behind the gate.
  // The parts fit inside the request durations, which fit inside the wall time.
  EXPECT_LE(s.queue_ns + s.compute_input_ns + s.compute_infer_ns + s.compute_output_ns,
            s.success_ns);
  EXPECT_LE(s.success_ns, 5 * wall_ns);
}

TEST_F(BatcherTest, FailuresCountTheirDuration) {
  config_.dynamic_batching = false;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  Batcher batcher(config_, "1", backend, stats, 100);
  auto running = Submit(batcher, 1);
  backend->WaitStarted(1);
  auto expiring = Submit(batcher, 1, 0, 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  backend->Open();
  EXPECT_TRUE(running.get().status.ok());
  EXPECT_EQ(expiring.get().status.code, StatusCode::kTimeout);
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.failure, 1u);
  EXPECT_GE(stats->stats.failure_ns, 1'000'000u);  // At least its 1 ms timeout.
  EXPECT_EQ(stats->stats.success, 1u);
}

TEST_F(BatcherTest, MaxBatchSizeCapsTheBatch) {
  config_.max_batch_size = 4;
  config_.max_queue_delay_us = 10'000'000;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  std::vector<std::future<InferResponse>> futures;
  {
    Batcher batcher(config_, "1", backend, stats, 100);
    futures.push_back(Submit(batcher, 4));  // Full at once.
    backend->WaitStarted(1);
    futures.push_back(Submit(batcher, 3));
    futures.push_back(Submit(batcher, 2));  // 3 + 2 > 4: waits for the next batch.
    futures.push_back(Submit(batcher, 1));  // 3 + 1 = 4: joins the first.
    backend->Open();
    backend->WaitStarted(2);
  }
  for (auto& f : futures) EXPECT_TRUE(f.get().status.ok());
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.batch_size_counts, (std::map<int, uint64_t>{{2, 1}, {4, 2}}));
}

TEST_F(BatcherTest, QueueFullIsRefusedAtOnce) {
  config_.dynamic_batching = false;
  config_.max_queue_size = 2;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  Batcher batcher(config_, "1", backend, stats, 100);
  auto running = Submit(batcher, 1);
  backend->WaitStarted(1);
  auto a = Submit(batcher, 1), b = Submit(batcher, 1);
  auto refused = Submit(batcher, 1);
  ASSERT_EQ(refused.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  InferResponse r = refused.get();
  EXPECT_EQ(r.status.code, StatusCode::kUnavailable);
  EXPECT_NE(r.status.message.find("queue full"), std::string::npos) << r.status.message;
  EXPECT_EQ(r.model, "affine");
  backend->Open();
  for (auto* f : {&running, &a, &b}) EXPECT_TRUE(f->get().status.ok());
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.failure, 1u);
  EXPECT_EQ(stats->stats.executions, 3u);  // Without dynamic batching each runs alone.
}

TEST_F(BatcherTest, ExpiredRequestsTimeOutAndOthersRun) {
  config_.dynamic_batching = false;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  Batcher batcher(config_, "1", backend, stats, 100);
  auto running = Submit(batcher, 1);
  backend->WaitStarted(1);
  auto expiring = Submit(batcher, 1, 0, 1000);
  auto patient = Submit(batcher, 1, 0, 60'000'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  backend->Open();
  EXPECT_TRUE(running.get().status.ok());
  InferResponse r = expiring.get();
  EXPECT_EQ(r.status.code, StatusCode::kTimeout);
  EXPECT_TRUE(patient.get().status.ok());
}

TEST_F(BatcherTest, SeveralInstancesRunConcurrently) {
  config_.dynamic_batching = false;
  config_.instance_count = 3;
  auto backend = MakeBackend();
  auto stats = std::make_shared<StatsBox>();
  Batcher batcher(config_, "1", backend, stats, 100);
  std::vector<std::future<InferResponse>> futures;
  for (int i = 0; i < 3; ++i) futures.push_back(Submit(batcher, 1));
  backend->WaitStarted(3);  // All three are inside the backend at once.
  backend->Open();
  for (auto& f : futures) EXPECT_TRUE(f.get().status.ok());
}

}  // namespace
}  // namespace kiln::serve
