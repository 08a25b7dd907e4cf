// Engines with optimization profiles (dynamic shapes): a small dynamic-batch
// CNN (and ResNet-18 when exported) built with two profiles, batch 1..4 (opt
// 2) and 8..32 (opt 16). Every covered batch matches the CPU backend, batches
// outside both profiles fail clearly, files round-trip, CUDA Graph replay
// after switching shapes matches plain Enqueue, and switching between seen
// shapes allocates no device memory. Skips where no GPU is present.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>

#include "cuda/cuda_check.h"
#include "gpu_test_util.h"
#include "kiln/engine.h"
#include "onnx.pb.h"
#include "test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

void AddInitializer(::onnx::GraphProto* graph, const std::string& name, const Tensor& t) {
  ::onnx::TensorProto* p = graph->add_initializer();
  p->set_name(name);
  p->set_data_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : t.dims()) p->add_dims(d);
  for (float v : t.ToFloatVector()) p->add_float_data(v);
}

::onnx::NodeProto* AddNode(::onnx::GraphProto* graph, const std::string& op, const std::string& name,
                           std::vector<std::string> inputs, const std::string& output) {
  ::onnx::NodeProto* n = graph->add_node();
  n->set_op_type(op);
  n->set_name(name);
  for (const std::string& i : inputs) n->add_input(i);
  n->add_output(output);
  return n;
}

// x[batch,3,8,8] -> Conv(3->8, 3x3, pad 1) -> Relu -> Conv(8->8, 3x3) ->
// GlobalAveragePool -> Flatten -> Gemm(8->5) -> Softmax -> y[batch,5].
void WriteDynamicBatchCnn(const std::string& path) {
  ::onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("dynamic_batch_cnn");
  AddInitializer(graph, "w1", testing::RandomTensor({8, 3, 3, 3}, -0.5f, 0.5f, 11));
  AddInitializer(graph, "b1", testing::RandomTensor({8}, -0.1f, 0.1f, 12));
  AddInitializer(graph, "w2", testing::RandomTensor({8, 8, 3, 3}, -0.3f, 0.3f, 13));
  AddInitializer(graph, "b2", testing::RandomTensor({8}, -0.1f, 0.1f, 14));
  AddInitializer(graph, "wf", testing::RandomTensor({5, 8}, -1.f, 1.f, 15));
  AddInitializer(graph, "bf", testing::RandomTensor({5}, -0.1f, 0.1f, 16));
  auto ints = [](::onnx::NodeProto* n, const char* name, std::vector<int64_t> v) {
    ::onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  };
  ::onnx::NodeProto* c1 = AddNode(graph, "Conv", "conv1", {"x", "w1", "b1"}, "c1");
  ints(c1, "pads", {1, 1, 1, 1});
  AddNode(graph, "Relu", "relu1", {"c1"}, "r1");
  ::onnx::NodeProto* c2 = AddNode(graph, "Conv", "conv2", {"r1", "w2", "b2"}, "c2");
  ints(c2, "pads", {1, 1, 1, 1});
  AddNode(graph, "GlobalAveragePool", "pool", {"c2"}, "p");
  AddNode(graph, "Flatten", "flatten", {"p"}, "f");
  ::onnx::NodeProto* gemm = AddNode(graph, "Gemm", "fc", {"f", "wf", "bf"}, "g");
  ::onnx::AttributeProto* trans_b = gemm->add_attribute();
  trans_b->set_name("transB");
  trans_b->set_type(::onnx::AttributeProto::INT);
  trans_b->set_i(1);
  AddNode(graph, "Softmax", "softmax", {"g"}, "y");
  auto declare = [](::onnx::ValueInfoProto* info, const char* name, std::vector<int64_t> dims) {
    info->set_name(name);
    auto* tt = info->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(::onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("batch");
    for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  };
  declare(graph->add_input(), "x", {3, 8, 8});
  declare(graph->add_output(), "y", {5});
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << model.SerializeAsString();
  ASSERT_TRUE(out.good());
}

std::vector<OptimizationProfile> TwoBatchProfiles(const std::string& input, std::vector<int64_t> rest) {
  auto dims = [&](int64_t batch) {
    std::vector<int64_t> d = {batch};
    d.insert(d.end(), rest.begin(), rest.end());
    return d;
  };
  OptimizationProfile small, large;
  small.inputs[input] = {dims(1), dims(2), dims(4)};
  large.inputs[input] = {dims(8), dims(16), dims(32)};
  return {small, large};
}

void ExpectErrorContaining(const std::function<void()>& f, std::initializer_list<const char*> needles) {
  try {
    f();
    ADD_FAILURE() << "expected a kiln::Error";
  } catch (const Error& e) {
    for (const char* needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "'" << needle << "' not in: " << e.what();
  }
}

void ExpectAllFinite(const Tensor& t, const std::string& what) {
  std::vector<float> v = t.ToFloatVector();
  for (size_t k = 0; k < v.size(); ++k) ASSERT_TRUE(std::isfinite(v[k])) << what << " element " << k;
}

// Device buffers sized for the largest batch, reused for every shape.
struct DeviceIo {
  void* in = nullptr;
  void* out = nullptr;
  void* out2 = nullptr;
  size_t in_bytes = 0, out_bytes = 0;
  DeviceIo(size_t in_b, size_t out_b) : in_bytes(in_b), out_bytes(out_b) {
    KILN_CUDA_CHECK(cudaMalloc(&in, in_b));
    KILN_CUDA_CHECK(cudaMalloc(&out, out_b));
    KILN_CUDA_CHECK(cudaMalloc(&out2, out_b));
    KILN_CUDA_CHECK(cudaMemset(in, 0, in_b));
  }
  ~DeviceIo() {
    cudaFree(in);
    cudaFree(out);
    cudaFree(out2);
  }
};

Tensor Download(const void* device, DType dtype, const std::vector<int64_t>& dims) {
  Tensor t(dtype, dims);
  KILN_CUDA_CHECK(cudaMemcpy(t.raw_data(), device, t.nbytes(), cudaMemcpyDeviceToHost));
  return t;
}

class ProfilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KILN_REQUIRE_GPU();
    model_path_ = (fs::temp_directory_path() / "kiln_profiles_cnn.onnx").string();
    WriteDynamicBatchCnn(model_path_);
    model_ = Model::Load(model_path_);
    BuildConfig config;
    config.profiles = TwoBatchProfiles("x", {3, 8, 8});
    config.log = [](const std::string& line) { std::cout << "    [build] " << line << "\n"; };
    engine_ = Engine::Build(model_path_, config);
  }
  void TearDown() override {
    if (!model_path_.empty()) fs::remove(model_path_);
  }
  Tensor Input(int64_t batch) const {
    return testing::RandomTensor({batch, 3, 8, 8}, -1.f, 1.f, static_cast<uint32_t>(100 + batch));
  }
  std::string model_path_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(ProfilesTest, EveryCoveredBatchMatchesTheCpuBackend) {
  ASSERT_EQ(engine_->profiles().size(), 2u);
  EXPECT_EQ(engine_->info().num_profiles, 2);
  // opt/min/max of both profiles: 1, 2, 4, 8, 16, 32.
  EXPECT_EQ(engine_->info().num_plans, 6);
  EXPECT_LT(engine_->info().weight_bytes, engine_->info().weight_bytes_unshared);
  auto context = engine_->CreateContext();
  for (int64_t batch : {1, 3, 4, 8, 13, 32}) {
    Tensor x = Input(batch);
    std::vector<Tensor> got = context->Run({{"x", x}});  // Run poisons outputs with NaN first.
    std::vector<Tensor> want = model_->RunCpu({{"x", x}});
    ASSERT_EQ(got.size(), 1u);
    ASSERT_EQ(got[0].dims(), (std::vector<int64_t>{batch, 5})) << "batch " << batch;
    EXPECT_EQ(context->OutputDims(0), (std::vector<int64_t>{batch, 5}));
    EXPECT_EQ(context->ProfileIndex(), batch <= 4 ? 0 : 1) << "batch " << batch;
    ExpectAllFinite(got[0], "batch " + std::to_string(batch));
    double err = testing::MaxRelativeError(got[0], want[0]);
    std::cout << "    batch " << batch << ": max relative error " << err << "\n";
    EXPECT_LE(err, 1e-4) << "batch " << batch;
  }
}

TEST_F(ProfilesTest, ShapesOutsideEveryProfileFailClearly) {
  auto context = engine_->CreateContext();
  ExpectErrorContaining([&] { context->SetInputShapes({{"x", {5, 3, 8, 8}}}); },
                        {"'x' 5x3x8x8", "no optimization profile", "1x3x8x8..4x3x8x8",
                         "8x3x8x8..32x3x8x8"});
  ExpectErrorContaining([&] { context->Run({{"x", Input(64)}}); }, {"'x' 64x3x8x8", "outside 8..32"});
  ExpectErrorContaining([&] { context->SetInputShapes({{"x", {2, 3, 8, 9}}}); }, {"dim 3 is 9"});
  ExpectErrorContaining([&] { context->SetInputShapes({{"nope", {2}}}); }, {"no input named 'nope'"});
  // The context still works after the errors.
  std::vector<Tensor> got = context->Run({{"x", Input(2)}});
  EXPECT_LE(testing::MaxRelativeError(got[0], model_->RunCpu({{"x", Input(2)}})[0]), 1e-4);
}

TEST_F(ProfilesTest, SaveLoadRoundTripGivesIdenticalOutputs) {
  fs::path path = fs::temp_directory_path() / "kiln_profiles_test.kiln";
  engine_->Save(path.string());
  {
    std::ifstream in(path, std::ios::binary);
    char header[12] = {};
    in.read(header, sizeof(header));
    uint32_t version = 0;
    std::memcpy(&version, header + 8, sizeof(version));
    EXPECT_EQ(version, 2u) << "engines with profiles use format version 2";
  }
  std::unique_ptr<Engine> loaded = Engine::Load(path.string());
  ASSERT_EQ(loaded->profiles().size(), 2u);
  EXPECT_EQ(loaded->info().num_plans, engine_->info().num_plans);
  auto a = engine_->CreateContext();
  auto b = loaded->CreateContext();
  for (int64_t batch : {3, 16, 1, 32}) {
    std::vector<Tensor> x = a->Run({{"x", Input(batch)}});
    std::vector<Tensor> y = b->Run({{"x", Input(batch)}});
    ASSERT_EQ(x[0].nbytes(), y[0].nbytes());
    EXPECT_EQ(0, std::memcmp(x[0].raw_data(), y[0].raw_data(), x[0].nbytes())) << "batch " << batch;
  }
  fs::remove(path);
}

TEST_F(ProfilesTest, GraphReplayAfterSwitchingShapesMatchesEnqueue) {
  auto context = engine_->CreateContext();
  const size_t max_in = Input(32).nbytes(), max_out = 32 * 5 * sizeof(float);
  DeviceIo io(max_in, max_out);
  cudaStream_t stream;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int64_t batch : {2, 16, 2, 13, 16, 3, 2, 13}) {
    Tensor x = Input(batch);
    KILN_CUDA_CHECK(cudaMemcpy(io.in, x.raw_data(), x.nbytes(), cudaMemcpyHostToDevice));
    context->SetInputShapes({{"x", x.dims()}});
    KILN_CUDA_CHECK(cudaMemsetAsync(io.out, 0xFF, max_out, stream));
    KILN_CUDA_CHECK(cudaMemsetAsync(io.out2, 0xFF, max_out, stream));
    context->Enqueue({io.in}, {io.out}, stream);
    context->EnqueueGraph({io.in}, {io.out2}, stream);
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    EXPECT_GT(context->GraphKernelNodes(), 0);
    Tensor plain = Download(io.out, DType::kFloat32, {batch, 5});
    Tensor graph = Download(io.out2, DType::kFloat32, {batch, 5});
    ExpectAllFinite(graph, "graph replay, batch " + std::to_string(batch));
    EXPECT_EQ(0, std::memcmp(plain.raw_data(), graph.raw_data(), plain.nbytes())) << "batch " << batch;
    EXPECT_LE(testing::MaxRelativeError(graph, model_->RunCpu({{"x", x}})[0]), 1e-4) << "batch " << batch;
  }
  cudaStreamDestroy(stream);
}

TEST_F(ProfilesTest, SwitchingBetweenSeenShapesAllocatesNoDeviceMemory) {
  auto context = engine_->CreateContext();
  const size_t initial = context->DeviceMemoryBytes();
  EXPECT_GT(initial, 0u);
  DeviceIo io(Input(32).nbytes(), 32 * 5 * sizeof(float));
  cudaStream_t stream;
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::vector<int64_t> batches = {1, 32, 4, 8, 2, 16, 3, 13};
  auto pass = [&] {
    for (int64_t batch : batches) {
      context->SetInputShapes({{"x", {batch, 3, 8, 8}}});
      context->Enqueue({io.in}, {io.out}, stream);
      context->EnqueueGraph({io.in}, {io.out2}, stream);
    }
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  };
  pass();  // First use: batches 3 and 13 are specialized; graphs are captured.
  const size_t after_first = context->DeviceMemoryBytes();
  std::cout << "    context device memory: " << initial << " bytes, after every shape " << after_first << "\n";
  size_t free_before = 0, free_after = 0, total = 0;
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  pass();
  pass();
  KILN_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  EXPECT_EQ(context->DeviceMemoryBytes(), after_first);
  EXPECT_EQ(free_after, free_before) << "device memory was allocated while switching between seen shapes";
  // The prebuilt plans (profiles' min/opt/max) all fit the arena sized at creation.
  auto fresh = engine_->CreateContext();
  for (int64_t batch : {1, 2, 4, 8, 16, 32}) fresh->SetInputShapes({{"x", {batch, 3, 8, 8}}});
  EXPECT_EQ(fresh->DeviceMemoryBytes(), initial);
  cudaStreamDestroy(stream);
}

TEST_F(ProfilesTest, StaticEnginesKeepTheirShape) {
  BuildConfig config;
  config.shapes["x"] = {4, 3, 8, 8};
  std::unique_ptr<Engine> engine = Engine::Build(model_path_, config);
  EXPECT_TRUE(engine->profiles().empty());
  auto context = engine->CreateContext();
  EXPECT_EQ(context->ProfileIndex(), -1);
  context->SetInputShapes({{"x", {4, 3, 8, 8}}});
  ExpectErrorContaining([&] { context->SetInputShapes({{"x", {2, 3, 8, 8}}}); },
                        {"input 'x'", "static shapes", "4x3x8x8", "2x3x8x8"});
  std::vector<Tensor> got = context->Run({{"x", Input(4)}});
  EXPECT_LE(testing::MaxRelativeError(got[0], model_->RunCpu({{"x", Input(4)}})[0]), 1e-4);
}

TEST(ProfilesBuildTest, BadProfilesFailClearly) {
  KILN_REQUIRE_GPU();
  std::string path = (fs::temp_directory_path() / "kiln_profiles_bad.onnx").string();
  WriteDynamicBatchCnn(path);
  BuildConfig config;
  config.profiles = TwoBatchProfiles("nope", {3, 8, 8});
  ExpectErrorContaining([&] { Engine::Build(path, config); }, {"nope"});
  config.profiles = TwoBatchProfiles("x", {3, 8, 8});
  config.shapes["x"] = {2, 3, 8, 8};
  ExpectErrorContaining([&] { Engine::Build(path, config); }, {"input 'x'", "--shapes", "profile"});
  fs::remove(path);
}

TEST(ProfilesModelTest, ResNet18MatchesTheCpuBackend) {
  KILN_REQUIRE_GPU();
  const char* env = std::getenv("KILN_MODELS_DIR");
  fs::path dir = env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
  fs::path model_path = dir / "resnet18.onnx";
  if (!fs::exists(model_path)) GTEST_SKIP() << "export the models first (scripts/export_models.py)";
  std::unique_ptr<Model> model = Model::Load(model_path.string());
  const std::string input = model->inputs().at(0).name;
  BuildConfig config;
  config.profiles = TwoBatchProfiles(input, {3, 224, 224});
  config.log = [](const std::string& line) { std::cout << "    [build] " << line << "\n"; };
  std::unique_ptr<Engine> engine = Engine::Build(model_path.string(), config);
  std::cout << "    weights " << engine->info().weight_bytes << " bytes shared ("
            << engine->info().weight_bytes_unshared << " unshared), " << engine->info().num_plans
            << " plans, build " << engine->info().build_seconds << " s\n";
  auto context = engine->CreateContext();
  for (int64_t batch : {1, 3, 13}) {
    Tensor x = testing::RandomTensor({batch, 3, 224, 224}, -1.f, 1.f, static_cast<uint32_t>(batch));
    std::vector<Tensor> got = context->Run({{input, x}});
    std::vector<Tensor> want = model->RunCpu({{input, x}});
    ExpectAllFinite(got[0], "resnet18 batch " + std::to_string(batch));
    double err = testing::MaxRelativeError(got[0], want[0]);
    std::cout << "    resnet18 batch " << batch << ": max relative error " << err << "\n";
    EXPECT_LE(err, 1e-3) << "batch " << batch;
  }
  ExpectErrorContaining([&] { context->Run({{input, testing::RandomTensor({5, 3, 224, 224})}}); },
                        {"5x3x224x224", "no optimization profile"});
}

}  // namespace
}  // namespace kiln
