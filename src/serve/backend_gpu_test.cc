// The GPU serve backend (pinned staging, fixed bindings, CUDA Graph replay)
// against the CPU reference on the pipeline tests' small conv model with a
// symbolic batch dim (one engine per batch size bucket is built from it).
#ifdef KILN_HAVE_CUDA
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "kiln/error.h"
#include "kiln/kiln.h"
#include "pipeline/pipeline_test_model.h"
#include "serve/backend.h"
#include "serve/batcher.h"
#include "serve/serve_test_util.h"
#include "serve/shared_memory.h"
#include "test_util.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;

// x float32[batch, 3, 4, 4] -> y float32[batch, 5] with `batch` symbolic.
std::string WriteBatchedModel() {
  const std::string path = (fs::path(::testing::TempDir()) / "kiln_backend_gpu.onnx").string();
  testing::WritePipelineTestModel(path, -1);
  return path;
}

class GpuBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KILN_REQUIRE_GPU();
    path_ = WriteBatchedModel();
    model_ = Model::Load(path_);
    config_.name = "conv";
    config_.max_batch_size = 8;
    config_.preferred_batch_sizes = {1, 4};
    config_.dynamic_batching = true;
    config_.inputs = {{"x", DType::kFloat32, {3, 4, 4}}};
    config_.outputs = {{"y", DType::kFloat32, {5}}};
    config_.instance_kind = "gpu";
    config_.instance_count = 2;
    config_.precision = "fp32";
  }

  // The CPU reference on the concatenated parts.
  Tensor Reference(const std::vector<const Tensor*>& parts) const {
    std::vector<Tensor> out = model_->RunCpu({{"x", ConcatBatch(parts)}});
    KILN_CHECK(out.size() == 1, "the model has one output");
    return out[0];
  }

  std::string path_;
  std::shared_ptr<const Model> model_;
  ModelConfig config_;
};

constexpr double kTolerance = 1e-4;  // FP32 engines (TF32 off) against the CPU.

TEST_F(GpuBackendTest, RunBatchGathersPadsAndMatchesTheCpu) {
  std::string note;
  std::unique_ptr<Backend> backend = CreateBackend(config_, path_, model_, &note);
  ASSERT_EQ(backend->Kind(), "gpu") << note;
  // Rows per part: 1 (bucket 1), 3 (padded to 4), 4, 7 (padded to 8).
  const std::vector<std::vector<int64_t>> layouts = {{1}, {1, 2}, {4}, {3, 1, 3}};
  uint32_t seed = 100;
  // Rounds 0 and 1 reuse instance 0's staging with new data; round 2 runs on
  // instance 1.
  for (int round = 0; round < 3; ++round) {
    const int instance = round == 2 ? 1 : 0;
    for (const std::vector<int64_t>& rows : layouts) {
      std::vector<Tensor> tensors;
      for (int64_t r : rows) tensors.push_back(testing::RandomTensor({r, 3, 4, 4}, -1, 1, ++seed));
      std::vector<const Tensor*> parts;
      for (const Tensor& t : tensors) parts.push_back(&t);
      const Tensor expected = Reference(parts);
      std::map<std::string, Tensor> out = backend->RunBatch({{"x", parts}}, instance);
      ASSERT_EQ(out.size(), 1u);
      ASSERT_EQ(out.count("y"), 1u);
      const Tensor& y = out.at("y");
      ASSERT_EQ(y.dims(), expected.dims()) << "round " << round << ", " << parts.size() << " parts";
      // Staging starts zeroed and the inputs change every call: a row not
      // written by this batch would not match.
      EXPECT_LT(testing::MaxRelativeError(y, expected), kTolerance)
          << "round " << round << ", " << expected.dim(0) << " rows";
    }
  }
}

// Parts in a registered (page-locked) shared memory region go to the device
// straight from it, the others through the staging; a batch mixing both, in
// every order, matches the CPU, and so do later batches that reuse the rows.
TEST_F(GpuBackendTest, PinnedSharedMemoryPartsMatchTheCpu) {
  std::unique_ptr<Backend> backend = CreateBackend(config_, path_, model_, nullptr);
  ASSERT_EQ(backend->Kind(), "gpu");
  const size_t row_bytes = 3 * 4 * 4 * sizeof(float);
  const std::string key = "/kiln_backend_gpu_test_" + std::to_string(getpid());
  testing::ClientRegion client(key, 8 * row_bytes);
  std::shared_ptr<SharedMemoryRegion> region;
  const Status mapped = SharedMemoryRegion::Map("in", key, 0, 8 * row_bytes, &region);
  ASSERT_TRUE(mapped.ok()) << mapped.message;
  EXPECT_TRUE(region->pinned()) << "cudaHostRegister refused the mapping: parts are staged";
  // Which of the parts live in the region, by batch: p = pinned, s = staged.
  const std::vector<std::string> layouts = {"p", "ps", "sp", "pps", "spsp", "ssp", "pspsppss"};
  uint32_t seed = 500;
  for (int round = 0; round < 2; ++round) {
    for (const std::string& layout : layouts) {
      std::vector<Tensor> tensors;
      size_t region_offset = 0;
      for (char kind : layout) {
        const Tensor random = testing::RandomTensor({1, 3, 4, 4}, -1, 1, ++seed);
        if (kind == 's') {
          tensors.push_back(random);
          continue;
        }
        client.Write(region_offset, random);
        tensors.push_back(Tensor::Borrow(DType::kFloat32, {1, 3, 4, 4}, region,
                                         region->data() + region_offset));
        region_offset += row_bytes;
      }
      std::vector<const Tensor*> parts;
      for (const Tensor& t : tensors) parts.push_back(&t);
      const Tensor expected = Reference(parts);
      std::map<std::string, Tensor> out = backend->RunBatch({{"x", parts}}, round);
      EXPECT_LT(testing::MaxRelativeError(out.at("y"), expected), kTolerance)
          << "round " << round << ", parts " << layout;
    }
  }
}

// Run returns owned tensors: a later batch on the same instance (which
// rewrites the staging) leaves them as they were.
TEST_F(GpuBackendTest, RunOutputsOutliveTheNextBatch) {
  std::unique_ptr<Backend> backend = CreateBackend(config_, path_, model_, nullptr);
  ASSERT_EQ(backend->Kind(), "gpu");
  const Tensor first = testing::RandomTensor({3, 3, 4, 4}, -1, 1, 7);
  const Tensor second = testing::RandomTensor({3, 3, 4, 4}, -1, 1, 8);
  std::map<std::string, Tensor> kept = backend->Run({{"x", first}}, 0);
  std::map<std::string, Tensor> later = backend->RunBatch({{"x", {&second}}}, 0);
  EXPECT_LT(testing::MaxRelativeError(kept.at("y"), Reference({&first})), kTolerance);
  EXPECT_LT(testing::MaxRelativeError(later.at("y"), Reference({&second})), kTolerance);
}

// Bad batches fail with kiln::Error before touching the device, and the
// backend keeps serving.
TEST_F(GpuBackendTest, BadBatchesFailAndTheBackendStaysUsable) {
  std::unique_ptr<Backend> backend = CreateBackend(config_, path_, model_, nullptr);
  ASSERT_EQ(backend->Kind(), "gpu");
  const Tensor five = testing::RandomTensor({5, 3, 4, 4}, -1, 1, 21);
  const Tensor four = testing::RandomTensor({4, 3, 4, 4}, -1, 1, 22);
  const Tensor wrong_dims = testing::RandomTensor({1, 3, 4, 5}, -1, 1, 23);
  EXPECT_THROW(backend->RunBatch({{"x", {&five, &four}}}, 0), Error);  // 9 rows > 8.
  EXPECT_THROW(backend->RunBatch({{"x", {&four, &wrong_dims}}}, 0), Error);
  EXPECT_THROW(backend->RunBatch({{"nope", {&four}}}, 0), Error);
  EXPECT_THROW(backend->RunBatch({{"x", {&four}}}, 2), Error);  // Instances 0 and 1 only.
  std::map<std::string, Tensor> out = backend->RunBatch({{"x", {&five}}}, 1);
  EXPECT_LT(testing::MaxRelativeError(out.at("y"), Reference({&five})), kTolerance);
}

// End to end through the dynamic batcher: two instances, requests of 1-3
// rows batched as they come; each response matches the CPU on its own rows.
TEST_F(GpuBackendTest, BatcherResponsesMatchTheCpu) {
  config_.max_queue_delay_us = 2000;
  std::shared_ptr<Backend> backend = CreateBackend(config_, path_, model_, nullptr);
  ASSERT_EQ(backend->Kind(), "gpu");
  auto stats = std::make_shared<StatsBox>();
  std::vector<Tensor> inputs;
  std::vector<std::future<InferResponse>> futures;
  {
    Batcher batcher(config_, "1", backend, stats, 1000);
    for (int i = 0; i < 48; ++i) {
      const uint32_t seed = 300 + static_cast<uint32_t>(i);
      inputs.push_back(testing::RandomTensor({1 + i % 3, 3, 4, 4}, -1, 1, seed));
      InferRequest r;
      r.model = "conv";
      r.inputs.emplace_back("x", inputs.back());
      auto promise = std::make_shared<std::promise<InferResponse>>();
      futures.push_back(promise->get_future());
      batcher.Enqueue(std::move(r),
                      [promise](InferResponse resp) { promise->set_value(std::move(resp)); });
    }
  }
  for (size_t i = 0; i < futures.size(); ++i) {
    InferResponse r = futures[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    ASSERT_EQ(r.outputs.size(), 1u);
    EXPECT_LT(testing::MaxRelativeError(r.outputs[0].second, Reference({&inputs[i]})), kTolerance)
        << "request " << i;
  }
  std::lock_guard<std::mutex> lock(stats->mu);
  EXPECT_EQ(stats->stats.success, 48u);
  EXPECT_EQ(stats->stats.failure, 0u);
}

}  // namespace
}  // namespace kiln::serve
#endif  // KILN_HAVE_CUDA
