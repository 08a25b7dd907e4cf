// GPU engine end to end: real models built into engines (FP32 with TF32 off,
// FP16) and compared with PyTorch's outputs from scripts/export_models.py;
// engine files round-trip and reject corruption; CUDA Graph replay and
// several contexts give the same results. Skips where no GPU is present.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "cuda/cuda_check.h"
#include "gpu_test_util.h"
#include "kiln/engine.h"
#include "onnx/importer.h"
#include "test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

fs::path ModelsDir() {
  const char* env = std::getenv("KILN_MODELS_DIR");
  return env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
}

struct DataSet {
  std::map<std::string, Tensor> inputs;
  std::vector<Tensor> outputs;
};

// The first test_data_set of an exported model, or nullopt (test skips).
std::optional<DataSet> LoadDataSet(const std::string& model) {
  fs::path dir = ModelsDir() / model / "test_data_set_0";
  if (!fs::exists(ModelsDir() / (model + ".onnx")) || !fs::exists(dir)) return std::nullopt;
  DataSet set;
  for (int i = 0; fs::exists(dir / ("input_" + std::to_string(i) + ".pb")); ++i) {
    std::string name;
    Tensor t = onnx_import::LoadTensorProtoFile((dir / ("input_" + std::to_string(i) + ".pb")).string(), &name);
    set.inputs[name] = t;
  }
  for (int i = 0; fs::exists(dir / ("output_" + std::to_string(i) + ".pb")); ++i)
    set.outputs.push_back(
        onnx_import::LoadTensorProtoFile((dir / ("output_" + std::to_string(i) + ".pb")).string()));
  return set;
}

std::vector<int64_t> ArgmaxPerRow(const Tensor& t) {
  std::vector<int64_t> r;
  if (t.rank() != 2) return r;
  std::vector<float> v = t.ToFloatVector();
  for (int64_t i = 0; i < t.dim(0); ++i) {
    const float* row = v.data() + i * t.dim(1);
    r.push_back(std::max_element(row, row + t.dim(1)) - row);
  }
  return r;
}

BuildConfig ConfigFor(const DataSet& set, Precision precision) {
  BuildConfig config;
  config.precision = precision;
  for (const auto& [name, t] : set.inputs) config.shapes[name] = t.dims();
  config.log = [](const std::string& line) { std::cout << "    [build] " << line << "\n"; };
  return config;
}

void ExpectClose(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected,
                 double max_relative_error, bool classifier) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(actual[i].dims(), expected[i].dims()) << "output " << i;
    ASSERT_EQ(actual[i].dtype(), expected[i].dtype()) << "output " << i;
    std::vector<float> a = actual[i].ToFloatVector();
    for (size_t k = 0; k < a.size(); ++k) ASSERT_TRUE(std::isfinite(a[k])) << "output " << i << " element " << k;
    double err = testing::MaxRelativeError(actual[i], expected[i]);
    std::cout << "    output " << i << " " << expected[i].TypeString() << ": max|a-b|/max|b| = " << err << "\n";
    EXPECT_LE(err, max_relative_error) << "output " << i;
    if (classifier && i == 0) EXPECT_EQ(ArgmaxPerRow(actual[i]), ArgmaxPerRow(expected[i])) << "top-1 differs";
  }
}

struct ModelCase {
  const char* name;
  bool classifier;
};

class GpuModelTest : public ::testing::TestWithParam<std::tuple<ModelCase, Precision>> {};

TEST_P(GpuModelTest, MatchesPyTorch) {
  KILN_REQUIRE_GPU();
  auto [model, precision] = GetParam();
  std::optional<DataSet> set = LoadDataSet(model.name);
  if (!set) GTEST_SKIP() << "export the models first: /usr/bin/python3 scripts/export_models.py --out models";
  std::unique_ptr<Engine> engine =
      Engine::Build((ModelsDir() / (std::string(model.name) + ".onnx")).string(), ConfigFor(*set, precision));
  std::cout << "    " << model.name << " " << PrecisionName(precision) << ": " << engine->info().layers.size()
            << " layers, " << engine->info().kernel_launches << " launches, build "
            << engine->info().build_seconds << " s\n";
  auto context = engine->CreateContext();
  std::vector<Tensor> out = context->Run(set->inputs);
  double tolerance = precision == Precision::kFP32 ? 1e-4 : 1e-2;
  ExpectClose(out, set->outputs, tolerance, model.classifier);
}

INSTANTIATE_TEST_SUITE_P(
    Models, GpuModelTest,
    ::testing::Combine(::testing::Values(ModelCase{"resnet18", true}, ModelCase{"resnet50", true},
                                         ModelCase{"mobilenet_v2", true}, ModelCase{"bert", false}),
                       ::testing::Values(Precision::kFP32, Precision::kFP16)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" + PrecisionName(std::get<1>(info.param));
    });

class GpuEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::DeviceAvailable(&why)) GTEST_SKIP() << "no GPU: " << why;
    set_ = LoadDataSet("resnet18");
    if (!set_) GTEST_SKIP() << "export the models first (scripts/export_models.py)";
    engine_ = Engine::Build((ModelsDir() / "resnet18.onnx").string(), ConfigFor(*set_, Precision::kFP16));
  }
  std::optional<DataSet> set_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(GpuEngineTest, SaveLoadRoundTripGivesIdenticalOutputs) {
  fs::path path = fs::temp_directory_path() / "kiln_engine_test.kiln";
  engine_->Save(path.string());
  std::unique_ptr<Engine> loaded = Engine::Load(path.string());
  std::vector<Tensor> a = engine_->CreateContext()->Run(set_->inputs);
  std::vector<Tensor> b = loaded->CreateContext()->Run(set_->inputs);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].nbytes(), b[i].nbytes());
    EXPECT_EQ(0, std::memcmp(a[i].raw_data(), b[i].raw_data(), a[i].nbytes()));
  }
  EXPECT_EQ(loaded->info().layers.size(), engine_->info().layers.size());
  fs::remove(path);
}

TEST_F(GpuEngineTest, CorruptOrTruncatedFilesFailClearly) {
  fs::path path = fs::temp_directory_path() / "kiln_engine_corrupt.kiln";
  engine_->Save(path.string());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  };
  auto expect_error = [&](const std::string& data, const std::string& needle) {
    write(data);
    try {
      Engine::Load(path.string());
      ADD_FAILURE() << "loading should fail with '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  expect_error(flipped, "checksum");
  expect_error(bytes.substr(0, bytes.size() - 100), "truncated");
  expect_error(bytes.substr(0, 10), "truncated");
  expect_error("not an engine at all", "not a kiln engine");
  std::string version = bytes;
  version[8] = 99;
  expect_error(version, "format version");
  fs::remove(path);
}

TEST_F(GpuEngineTest, CudaGraphReplayAndSeveralContextsMatchEnqueue) {
  std::vector<Tensor> reference = engine_->CreateContext()->Run(set_->inputs);
  const TensorDesc& in = engine_->inputs()[0];
  const TensorDesc& out = engine_->outputs()[0];
  const Tensor& x = set_->inputs.at(in.name);
  size_t out_bytes = Tensor(out.dtype, out.dims).nbytes();
  void *d_in = nullptr, *d_out = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&d_in, x.nbytes()));
  KILN_CUDA_CHECK(cudaMalloc(&d_out, out_bytes));
  KILN_CUDA_CHECK(cudaMemcpy(d_in, x.raw_data(), x.nbytes(), cudaMemcpyHostToDevice));
  cudaStream_t stream;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto ctx1 = engine_->CreateContext();
  auto ctx2 = engine_->CreateContext();
  for (auto* ctx : {ctx1.get(), ctx2.get()}) {
    for (int rep = 0; rep < 3; ++rep) {
      KILN_CUDA_CHECK(cudaMemsetAsync(d_out, 0xFF, out_bytes, stream));
      ctx->EnqueueGraph({d_in}, {d_out}, stream);
      KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
      Tensor got(out.dtype, out.dims);
      KILN_CUDA_CHECK(cudaMemcpy(got.raw_data(), d_out, out_bytes, cudaMemcpyDeviceToHost));
      EXPECT_EQ(0, std::memcmp(got.raw_data(), reference[0].raw_data(), out_bytes)) << "replay " << rep;
    }
    EXPECT_GT(ctx->GraphKernelNodes(), 0);
    std::cout << "    graph kernel nodes: " << ctx->GraphKernelNodes() << "\n";
  }
  cudaStreamDestroy(stream);
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST_F(GpuEngineTest, WrongInputsFailClearly) {
  auto ctx = engine_->CreateContext();
  std::map<std::string, Tensor> wrong = set_->inputs;
  wrong.begin()->second = testing::RandomTensor({1, 3, 8, 8});
  EXPECT_THROW(ctx->Run(wrong), Error);
  EXPECT_THROW(ctx->Run({}), Error);
  std::map<std::string, Tensor> extra = set_->inputs;
  extra["nope"] = testing::RandomTensor({1});
  EXPECT_THROW(ctx->Run(extra), Error);
}

}  // namespace
}  // namespace kiln
