// The engine-backed pipeline on the GPU (skips without one): for every
// optimization-ladder config, distinct random batches come back in order with
// the outputs ExecutionContext::Run gives for the same inputs; the uint8
// preprocessing kernel matches the CPU reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>

#include <nlohmann/json.hpp>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/normalize_image.h"
#include "gpu_test_util.h"
#include "kiln/engine.h"
#include "kiln/pipeline.h"
#include "pipeline/ladder.h"
#include "pipeline/pipeline_test_model.h"
#include "pipeline/scheduler.h"
#include "test_util.h"

namespace kiln::pipeline {
namespace {

namespace fs = std::filesystem;

fs::path ModelsDir() {
  const char* env = std::getenv("KILN_MODELS_DIR");
  return env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
}

struct Collected {
  std::mutex mu;
  std::vector<uint64_t> sequences;
  std::vector<std::vector<Tensor>> outputs;
  std::vector<std::string> errors;
};

PipelineCallback Collect(Collected& c) {
  return [&c](const PipelineResult& r) {
    std::vector<Tensor> copies;
    for (const Tensor& t : r.outputs) copies.push_back(t.Clone());
    std::lock_guard<std::mutex> lock(c.mu);
    c.sequences.push_back(r.sequence);
    c.outputs.push_back(std::move(copies));
    c.errors.push_back(r.error);
  };
}

// Runs `batches` through a pipeline with `config` and expects, in order, the
// reference outputs (within rtol of the reference's scale; the engine is the
// same, so normally bit-identical).
void ExpectPipelineMatches(const Engine& engine, const PipelineConfig& config,
                           const std::vector<Tensor>& batches, const std::vector<std::vector<Tensor>>& expected,
                           bool images, const std::vector<std::vector<uint8_t>>& image_batches = {},
                           double rtol = 1e-5) {
  Collected c;
  {
    auto pipeline = Pipeline::Create(engine, config, Collect(c));
    const size_t count = images ? image_batches.size() : batches.size();
    for (size_t i = 0; i < count; ++i) {
      uint64_t seq = images ? pipeline->SubmitImages(image_batches[i].data(), image_batches[i].size())
                            : pipeline->Submit({batches[i]});
      EXPECT_EQ(seq, i);
    }
    pipeline->Flush();
    EXPECT_GT(pipeline->DeviceMemoryBytes(), 0u);
  }
  ASSERT_EQ(c.sequences.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(c.sequences[i], i);
    ASSERT_TRUE(c.errors[i].empty()) << c.errors[i];
    ASSERT_EQ(c.outputs[i].size(), expected[i].size());
    for (size_t k = 0; k < expected[i].size(); ++k) {
      ASSERT_EQ(c.outputs[i][k].dims(), expected[i][k].dims());
      for (float v : c.outputs[i][k].ToFloatVector()) ASSERT_TRUE(std::isfinite(v)) << "batch " << i;
      EXPECT_LE(testing::MaxRelativeError(c.outputs[i][k], expected[i][k]), rtol)
          << "batch " << i << " output " << k;
    }
  }
}

std::string Describe(const PipelineConfig& c) {
  return StrCat("slots ", c.slots, " reuse ", c.reuse_device_buffers, " pinned ", c.pinned_staging,
                " overlap ", c.overlap, " async ", c.async_output, " graph ", c.cuda_graph, " contexts ",
                c.contexts);
}

std::vector<PipelineConfig> LadderConfigs() {
  std::vector<PipelineConfig> configs;
  for (const LadderStep& s : OptimizationLadder(3, 2))
    if (!s.skipped) configs.push_back(s.config);
  // Corners the ladder does not visit.
  PipelineConfig graph_without_reuse = configs.back();
  graph_without_reuse.reuse_device_buffers = false;
  graph_without_reuse.pinned_staging = false;
  configs.push_back(graph_without_reuse);
  PipelineConfig one_slot_three_contexts = configs[6];
  one_slot_three_contexts.slots = 1;
  one_slot_three_contexts.contexts = 3;
  configs.push_back(one_slot_three_contexts);
  return configs;
}

class PipelineGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / "kiln_pipeline_gpu_test";
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(PipelineGpuTest, EveryLadderConfigMatchesExecutionContextRun) {
  KILN_REQUIRE_GPU();
  const int64_t batch = 8;
  const std::string path = (dir_ / "small.onnx").string();
  testing::WritePipelineTestModel(path, batch);
  BuildConfig build;
  build.precision = Precision::kFP32;
  auto engine = Engine::Build(path, build);
  auto context = engine->CreateContext();
  std::vector<Tensor> batches;
  std::vector<std::vector<Tensor>> expected;
  for (int i = 0; i < 10; ++i) {
    batches.push_back(testing::RandomTensor({batch, 3, 4, 4}, -1.f, 1.f, 1000 + i));
    expected.push_back(context->Run({{"x", batches.back()}}));
  }
  for (const PipelineConfig& config : LadderConfigs()) {
    SCOPED_TRACE(Describe(config));
    ExpectPipelineMatches(*engine, config, batches, expected, false);
  }
}

// An engine with optimization profiles takes each batch at its own size
// (ladder step 9): outputs equal ExecutionContext::Run at that size, in
// order, for graph and non-graph configs; uncovered sizes and images are
// rejected by Submit.
TEST_F(PipelineGpuTest, ProfilesTakeMixedBatchSizes) {
  KILN_REQUIRE_GPU();
  const std::string path = (dir_ / "dynamic.onnx").string();
  testing::WritePipelineTestModel(path, -1);
  BuildConfig build;
  build.precision = Precision::kFP32;
  build.profiles.resize(2);
  build.profiles[0].inputs["x"] = {{1, 3, 4, 4}, {2, 3, 4, 4}, {4, 3, 4, 4}};
  build.profiles[1].inputs["x"] = {{1, 3, 4, 4}, {8, 3, 4, 4}, {8, 3, 4, 4}};
  auto engine = Engine::Build(path, build);
  auto context = engine->CreateContext();
  std::vector<Tensor> batches;
  std::vector<std::vector<Tensor>> expected;
  int seed = 300;
  for (int64_t n : {1, 3, 8, 4, 6, 2, 8, 1, 5, 7}) {
    batches.push_back(testing::RandomTensor({n, 3, 4, 4}, -1.f, 1.f, seed++));
    expected.push_back(context->Run({{"x", batches.back()}}));
    ASSERT_EQ(expected.back().at(0).dims(), (std::vector<int64_t>{n, 5}));
  }
  std::vector<PipelineConfig> configs = LadderConfigs();
  configs.erase(configs.begin(), configs.begin() + 4);  // FP32 steps 1-4 add nothing new here.
  PipelineConfig baseline;  // Per-batch device buffers sized for the largest profile.
  baseline.reuse_device_buffers = false;
  baseline.overlap = false;
  configs.push_back(baseline);
  for (const PipelineConfig& config : configs) {
    SCOPED_TRACE(Describe(config));
    ExpectPipelineMatches(*engine, config, batches, expected, false);
  }
  auto pipeline = Pipeline::Create(*engine, PipelineConfig{}, nullptr);
  EXPECT_THROW(pipeline->Submit({testing::RandomTensor({9, 3, 4, 4})}), Error);  // No profile covers 9.
  EXPECT_THROW(pipeline->Submit({testing::RandomTensor({2, 3, 4, 5})}), Error);
  std::vector<uint8_t> image(2 * 4 * 4 * 3, 7);
  EXPECT_THROW(pipeline->SubmitImages(image.data(), image.size()), Error);
  pipeline->Submit({batches[1]});
  pipeline->Flush();
  EXPECT_EQ(pipeline->stats().delivered, 1u);
}

// A recorded timeline has, per batch, its host stages and its device copy-in,
// infer and copy-out spans, in stream order, inside the run's wall time.
TEST_F(PipelineGpuTest, TimelineRecordsEveryStageOfEveryBatch) {
  KILN_REQUIRE_GPU();
  const std::string path = (dir_ / "small.onnx").string();
  testing::WritePipelineTestModel(path, 8);
  auto engine = Engine::Build(path, BuildConfig{});
  PipelineConfig config;
  config.record_timeline = true;
  config.cuda_graph = true;
  config.contexts = 2;
  const int batches = 6;
  {
    auto untimed = Pipeline::Create(*engine, PipelineConfig{}, nullptr);
    EXPECT_THROW(untimed->WriteTimeline((dir_ / "none.json").string()), Error);
  }
  auto pipeline = Pipeline::Create(*engine, config, nullptr);
  for (int i = 0; i < batches; ++i) pipeline->Submit({testing::RandomTensor({8, 3, 4, 4}, -1.f, 1.f, 70 + i)});
  pipeline->Flush();
  const std::string trace = (dir_ / "trace.json").string();
  pipeline->WriteTimeline(trace);
  std::ifstream in(trace);
  const nlohmann::json j = nlohmann::json::parse(in);
  std::map<std::string, std::vector<std::pair<double, double>>> by_name;  // "copy-in" -> [start, end]
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] != "X") continue;
    const std::string name = e["name"].get<std::string>();
    const double ts = e["ts"].get<double>(), dur = e["dur"].get<double>();
    EXPECT_GE(dur, 0) << name;
    EXPECT_GE(ts, -1) << name;
    by_name[name].push_back({ts, ts + dur});
  }
  for (int i = 0; i < batches; ++i) {
    const std::string seq = " #" + std::to_string(i);
    for (const char* stage : {"stage", "launch", "wait", "output", "copy-in", "infer", "copy-out"})
      EXPECT_EQ(by_name[stage + seq].size(), 1u) << stage << seq;
    if (by_name["copy-in" + seq].empty() || by_name["infer" + seq].empty() || by_name["copy-out" + seq].empty())
      continue;
    // Stream order (events: microsecond resolution).
    EXPECT_LE(by_name["copy-in" + seq][0].second, by_name["infer" + seq][0].first + 2);
    EXPECT_LE(by_name["infer" + seq][0].second, by_name["copy-out" + seq][0].first + 2);
  }
}

TEST_F(PipelineGpuTest, ImagesArePreprocessedOnTheGpu) {
  KILN_REQUIRE_GPU();
  const int64_t batch = 4;
  const std::string path = (dir_ / "small.onnx").string();
  testing::WritePipelineTestModel(path, batch);
  auto engine = Engine::Build(path, BuildConfig{});
  auto context = engine->CreateContext();
  ImageGeometry g = ImageInputGeometry(engine->inputs(), PipelineConfig{}.mean, PipelineConfig{}.std);
  std::mt19937 rng(5);
  std::vector<std::vector<uint8_t>> images;
  std::vector<std::vector<Tensor>> expected;
  for (int i = 0; i < 7; ++i) {
    images.emplace_back(g.image_bytes());
    for (uint8_t& b : images.back()) b = static_cast<uint8_t>(rng() & 0xff);
    Tensor x(DType::kFloat32, engine->inputs()[0].dims);
    NormalizeImagesCpu(images.back().data(), g, PipelineConfig{}.mean, PipelineConfig{}.std, x.raw_data());
    expected.push_back(context->Run({{"x", x}}));
  }
  for (const PipelineConfig& config : LadderConfigs()) {
    SCOPED_TRACE(Describe(config));
    ExpectPipelineMatches(*engine, config, {}, expected, true, images, 1e-5);
  }
  // A wrong byte count is rejected up front.
  auto pipeline = Pipeline::Create(*engine, PipelineConfig{}, nullptr);
  EXPECT_THROW(pipeline->SubmitImages(images[0].data(), images[0].size() - 3), Error);
  EXPECT_THROW(pipeline->Submit({testing::RandomTensor({batch, 3, 4, 3})}), Error);
  pipeline->SubmitImages(images[0].data(), images[0].size());
  pipeline->Flush();
  EXPECT_EQ(pipeline->stats().delivered, 1u);
}

// An engine built with an image input (BuildConfig::image_input: a uint8
// [N,H,W,C] binding, normalized inside the engine) takes SubmitImages'
// bytes as its input tensor, for every ladder config: the results equal the
// float engine's on the CPU-normalized images (the same float values feed
// the convolution; FP32 here, so only accumulation order may differ).
TEST_F(PipelineGpuTest, ImagesFeedAnImageInputEngineAsTheyAre) {
  KILN_REQUIRE_GPU();
  const int64_t batch = 4;
  const std::string path = (dir_ / "small.onnx").string();
  testing::WritePipelineTestModel(path, batch);
  auto float_engine = Engine::Build(path, BuildConfig{});
  BuildConfig build;
  build.image_input.name = "x";
  build.image_input.mean = {0.3f, 0.5f, 0.4f};  // Not the pipeline's: the engine's own are used.
  build.image_input.std = {0.2f, 0.25f, 0.3f};
  auto engine = Engine::Build(path, build);
  ASSERT_EQ(engine->inputs().size(), 1u);
  EXPECT_EQ(engine->inputs()[0].name, "x");
  EXPECT_EQ(engine->inputs()[0].dtype, DType::kUInt8);
  const std::vector<int64_t> nchw = float_engine->inputs()[0].dims;
  EXPECT_EQ(engine->inputs()[0].dims, (std::vector<int64_t>{nchw[0], nchw[2], nchw[3], nchw[1]}));
  const ImageGeometry g = ImageInputGeometry(engine->inputs(), {}, {});
  EXPECT_TRUE(g.normalized_by_model());
  const ImageGeometry float_g = ImageInputGeometry(float_engine->inputs(), build.image_input.mean,
                                                   build.image_input.std);
  auto float_context = float_engine->CreateContext();
  std::mt19937 rng(9);
  std::vector<std::vector<uint8_t>> images;
  std::vector<std::vector<Tensor>> expected;
  for (int i = 0; i < 7; ++i) {
    images.emplace_back(g.image_bytes());
    for (uint8_t& b : images.back()) b = static_cast<uint8_t>(rng() & 0xff);
    Tensor x(DType::kFloat32, nchw);
    NormalizeImagesCpu(images.back().data(), float_g, build.image_input.mean, build.image_input.std,
                       x.raw_data());
    expected.push_back(float_context->Run({{"x", x}}));
  }
  for (const PipelineConfig& config : LadderConfigs()) {
    SCOPED_TRACE(Describe(config));
    ExpectPipelineMatches(*engine, config, {}, expected, true, images, 1e-5);
  }
  // The pipeline holds no raw image buffers for such an engine, and checks the byte count.
  auto pipeline = Pipeline::Create(*engine, PipelineConfig{}, nullptr);
  EXPECT_THROW(pipeline->SubmitImages(images[0].data(), images[0].size() + 1), Error);
  pipeline->SubmitImages(images[0].data(), images[0].size());
  pipeline->Flush();
  EXPECT_EQ(pipeline->stats().delivered, 1u);
}

// The kernel alone vs NormalizeImagesCpu, for every output dtype, a few
// channel counts and a size past one grid-stride pass (65535 x 256 pixels).
TEST(PipelineGpuKernel, NormalizeImagesMatchesTheCpuReference) {
  KILN_REQUIRE_GPU();
  struct Case {
    int64_t n, c, h, w;
  };
  std::mt19937 rng(11);
  for (Case s : {Case{3, 3, 7, 5}, Case{2, 1, 9, 13}, Case{1, 4, 3, 3}, Case{1, 3, 4100, 4100}}) {
    for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      SCOPED_TRACE(StrCat(DTypeName(dtype), " n", s.n, " c", s.c, " h", s.h, " w", s.w));
      ImageGeometry g{s.n, s.c, s.h, s.w, dtype};
      std::vector<float> mean, stdv;
      for (int64_t ch = 0; ch < s.c; ++ch) {
        mean.push_back(0.1f + 0.2f * static_cast<float>(ch));
        stdv.push_back(0.15f + 0.05f * static_cast<float>(ch));
      }
      const gpu::NormalizeImageParams params = gpu::MakeNormalizeImageParams(mean, stdv, s.c, "test");
      std::vector<uint8_t> images(g.image_bytes());
      for (uint8_t& b : images) b = static_cast<uint8_t>(rng() & 0xff);
      Tensor want(dtype, {s.n, s.c, s.h, s.w});
      NormalizeImagesCpu(images.data(), g, mean, stdv, want.raw_data());
      cuda::DeviceBuffer d_images(images.size()), d_out(want.nbytes());
      KILN_CUDA_CHECK(cudaMemcpy(d_images.ptr, images.data(), images.size(), cudaMemcpyHostToDevice));
      KILN_CUDA_CHECK(cudaMemset(d_out.ptr, 0xff, want.nbytes()));  // NaN in every dtype
      gpu::LaunchNormalizeImages(static_cast<const uint8_t*>(d_images.ptr), d_out.ptr, dtype, s.n, s.c, s.h,
                                 s.w, params, nullptr);
      KILN_CUDA_CHECK(cudaDeviceSynchronize());
      Tensor got(dtype, want.dims());
      KILN_CUDA_CHECK(cudaMemcpy(got.raw_data(), d_out.ptr, got.nbytes(), cudaMemcpyDeviceToHost));
      // Same IEEE float expression on both sides: identical before rounding to the dtype.
      int64_t mismatches = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        const double a = got.GetAsDouble(i), b = want.GetAsDouble(i);
        if (!(std::fabs(a - b) <= 1e-6 * std::max(1.0, std::fabs(b)))) {
          if (mismatches++ < 5) ADD_FAILURE() << "element " << i << ": gpu " << a << " cpu " << b;
        }
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
}

TEST_F(PipelineGpuTest, ResNet18EveryLadderConfigMatchesExecutionContextRun) {
  KILN_REQUIRE_GPU();
  const fs::path model = ModelsDir() / "resnet18.onnx";
  if (!fs::exists(model)) GTEST_SKIP() << model << " not found (scripts/export_models.py)";
  const int64_t batch = 4;
  BuildConfig build;
  build.shapes[Model::Load(model.string())->inputs().at(0).name] = {batch, 3, 224, 224};
  build.timing_cache_path = (dir_ / "timing.cache").string();
  for (bool fp16 : {false, true}) {
    SCOPED_TRACE(fp16 ? "fp16" : "fp32");
    build.precision = fp16 ? Precision::kFP16 : Precision::kFP32;
    auto engine = Engine::Build(model.string(), build);
    auto context = engine->CreateContext();
    const TensorDesc& in = engine->inputs().at(0);
    std::vector<Tensor> batches;
    std::vector<std::vector<Tensor>> expected;
    for (int i = 0; i < 5; ++i) {
      batches.push_back(testing::RandomTensor(in.dims, -2.f, 2.f, 50 + i));
      expected.push_back(context->Run({{in.name, batches.back()}}));
    }
    for (const PipelineConfig& config : LadderConfigs()) {
      SCOPED_TRACE(Describe(config));
      // Same engine, same kernels: equal up to nondeterministic reductions.
      ExpectPipelineMatches(*engine, config, batches, expected, false, {}, fp16 ? 2e-3 : 1e-5);
    }
  }
}

}  // namespace
}  // namespace kiln::pipeline
