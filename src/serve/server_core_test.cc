// ServerCore against real ONNX models written into a temporary model
// repository: loading and validation, batching, errors, stats, shutdown.
#include "serve/server_core.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "kiln/kiln.h"
#include "onnx.pb.h"
#include "serve/model_repository.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void Declare(::onnx::ValueInfoProto* info, const std::string& name,
             const std::vector<std::string>& dims) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(::onnx::TensorProto::FLOAT);
  for (const std::string& d : dims) {
    auto* dim = tensor_type->mutable_shape()->add_dim();
    if (d.find_first_not_of("0123456789") == std::string::npos) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

void AddInitializer(::onnx::GraphProto* graph, const std::string& name,
                    const std::vector<int64_t>& dims, const std::vector<float>& values) {
  ::onnx::TensorProto* t = graph->add_initializer();
  t->set_name(name);
  t->set_data_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
}

// Y = X * 2 + 1 with X[batch, n] (both dims dynamic).
std::string AffineModel() {
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("affine");
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
  AddInitializer(graph, "two", {}, {2.f});
  AddInitializer(graph, "one", {}, {1.f});
  Declare(graph->add_input(), "X", {"batch", "n"});
  Declare(graph->add_output(), "Y", {"batch", "n"});
  return model.SerializeAsString();
}

// Y = X[batch,3] @ W[3,2] + B[n] (B is an input, so a wrong n fails at run time).
std::string MatMulModel() {
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("matmul");
  auto* mm = graph->add_node();
  mm->set_op_type("MatMul");
  mm->add_input("X");
  mm->add_input("W");
  mm->add_output("t");
  auto* add = graph->add_node();
  add->set_op_type("Add");
  add->add_input("t");
  add->add_input("B");
  add->add_output("Y");
  AddInitializer(graph, "W", {3, 2}, {1.f, -1.f, 0.5f, 2.f, -3.f, 0.25f});
  Declare(graph->add_input(), "X", {"batch", "3"});
  Declare(graph->add_input(), "B", {"batch", "n"});
  Declare(graph->add_output(), "Y", {"batch", "2"});
  return model.SerializeAsString();
}

Tensor Floats(std::vector<int64_t> dims, float start) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = start + 0.5f * static_cast<float>(i);
  return Tensor::FromFloats(std::move(dims), values);
}

InferRequest Request(const std::string& model, Tensor x) {
  InferRequest r;
  r.model = model;
  r.inputs.emplace_back("X", std::move(x));
  return r;
}

void ExpectContains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in:\n" << text;
}

class ServerCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    repo_ = fs::path(::testing::TempDir()) / (std::string("kiln_serve_") + info->name());
    fs::remove_all(repo_);
    fs::create_directories(repo_);
  }
  void TearDown() override { fs::remove_all(repo_); }

  void AddModel(const std::string& name, const std::string& onnx, const std::string& config,
                const std::string& version = "1") {
    WriteFile(repo_ / name / version / "model.onnx", onnx);
    if (!config.empty()) WriteFile(repo_ / name / "config.json", config);
  }
  // The affine model with batching: max batch 8, dims [-1].
  void AddAffine(const std::string& name, const std::string& batching) {
    AddModel(name, AffineModel(),
             R"({"name": ")" + name + R"(", "platform": "onnxruntime_onnx", "max_batch_size": 8,
                 "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
                 "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}])" +
                 (batching.empty() ? "" : ", " + batching) + "}");
  }
  ServerOptions Options() const {
    ServerOptions o;
    o.model_repository = repo_.string();
    return o;
  }

  fs::path repo_;
};

TEST_F(ServerCoreTest, LoadsModelsAndRunsARequest) {
  AddAffine("affine", "");
  ServerCore core(Options());
  EXPECT_TRUE(core.Live());
  EXPECT_TRUE(core.Ready());
  EXPECT_TRUE(core.ModelReady("affine"));
  EXPECT_TRUE(core.ModelReady("affine", "1"));
  EXPECT_FALSE(core.ModelReady("affine", "2"));
  InferResponse r = core.Infer(Request("affine", Floats({2, 3}, 0.f)));
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.model, "affine");
  EXPECT_EQ(r.version, "1");
  ASSERT_EQ(r.outputs.size(), 1u);
  EXPECT_EQ(r.outputs[0].first, "Y");
  EXPECT_EQ(r.outputs[0].second.dims(), (std::vector<int64_t>{2, 3}));
  std::vector<float> y = r.outputs[0].second.ToFloatVector();
  for (size_t i = 0; i < y.size(); ++i) EXPECT_FLOAT_EQ(y[i], 0.5f * static_cast<float>(i) * 2 + 1);
  std::optional<ModelConfig> config = core.Config("affine");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->max_batch_size, 8);
  ExpectContains(config->raw_json, "\"max_batch_size\":8");
}

TEST_F(ServerCoreTest, DerivesAConfigAndPicksTheHighestVersion) {
  AddModel("derived", AffineModel(), "", "1");
  AddModel("derived", AffineModel(), "", "3");
  WriteFile(repo_ / "derived" / "2" / "README", "no model here");
  ServerCore core(Options());
  ASSERT_TRUE(core.ModelReady("derived"));
  std::optional<ModelConfig> config = core.Config("derived");
  ASSERT_TRUE(config);
  EXPECT_EQ(config->max_batch_size, 0);
  ASSERT_EQ(config->inputs.size(), 1u);
  EXPECT_EQ(config->inputs[0].name, "X");
  EXPECT_EQ(config->inputs[0].dims, (std::vector<int64_t>{-1, -1}));
  InferResponse r = core.Infer(Request("derived", Floats({1, 2}, 1.f)));
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.version, "3");
}

TEST_F(ServerCoreTest, BadModelsAreUnavailableWithTheReasonOthersLoad) {
  AddAffine("good", "");
  AddModel("garbage", "this is not an onnx file", "");
  AddModel("wrong_input", AffineModel(),
           R"({"max_batch_size": 4, "input": [{"name": "Z", "data_type": "TYPE_FP32", "dims": [3]}]})");
  AddModel("wrong_type", AffineModel(),
           R"({"max_batch_size": 4, "input": [{"name": "X", "data_type": "TYPE_INT64", "dims": [3]}]})");
  AddModel("bad_json", AffineModel(), R"({"max_batch_size": )");
  WriteFile(repo_ / "no_file" / "config.json", "{}");
  ServerCore core(Options());
  EXPECT_TRUE(core.ModelReady("good"));
  std::map<std::string, ServerCore::RepositoryEntry> index;
  for (const auto& e : core.Index()) index[e.name] = e;
  ASSERT_EQ(index.size(), 6u);
  EXPECT_EQ(index["good"].state, "READY");
  for (const char* name : {"garbage", "wrong_input", "wrong_type", "bad_json", "no_file"}) {
    EXPECT_EQ(index[name].state, "UNAVAILABLE") << name;
    ExpectContains(index[name].reason, std::string("model '") + name + "'");
  }
  ExpectContains(index["wrong_input"].reason, "input 'Z'");
  ExpectContains(index["wrong_type"].reason, "TYPE_INT64");
  ExpectContains(index["bad_json"].reason, "not valid JSON");
  ExpectContains(index["no_file"].reason, "model.onnx");
  InferResponse r = core.Infer(Request("garbage", Floats({1, 3}, 0.f)));
  EXPECT_EQ(r.status.code, StatusCode::kUnavailable);
  ExpectContains(r.status.message, "not ready");
}

TEST_F(ServerCoreTest, RejectsBadRequestsNamingTheInput) {
  AddAffine("m", "");
  AddModel("mm", MatMulModel(),
           R"({"max_batch_size": 4, "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [3]},
                                               {"name": "B", "data_type": "TYPE_FP32", "dims": [-1]}]})");
  ServerCore core(Options());
  auto expect = [&](InferRequest r, StatusCode code, const std::string& part) {
    InferResponse resp = core.Infer(std::move(r));
    EXPECT_EQ(resp.status.code, code) << resp.status.message;
    ExpectContains(resp.status.message, part);
  };
  expect(Request("nope", Floats({1, 3}, 0)), StatusCode::kNotFound, "unknown model 'nope'");
  InferRequest versioned = Request("m", Floats({1, 3}, 0));
  versioned.version = "7";
  expect(versioned, StatusCode::kNotFound, "version '7'");
  InferRequest wrong_name;
  wrong_name.model = "m";
  wrong_name.inputs.emplace_back("Q", Floats({1, 3}, 0));
  expect(wrong_name, StatusCode::kBadRequest, "unexpected input 'Q'");
  expect(Request("m", Tensor::FromInt64s({1, 3}, {1, 2, 3})), StatusCode::kBadRequest,
         "input 'X' has datatype INT64");
  expect(Request("m", Floats({3}, 0)), StatusCode::kBadRequest, "input 'X' has shape [3]");
  expect(Request("m", Floats({9, 3}, 0)), StatusCode::kBadRequest, "max_batch_size 8");
  expect(Request("m", Floats({0, 3}, 0)), StatusCode::kBadRequest, "batch size 0");
  InferRequest no_inputs;
  no_inputs.model = "m";
  expect(no_inputs, StatusCode::kBadRequest, "no inputs");
  InferRequest twice = Request("m", Floats({1, 3}, 0));
  twice.inputs.emplace_back("X", Floats({1, 3}, 0));
  expect(twice, StatusCode::kBadRequest, "given twice");
  InferRequest bad_output = Request("m", Floats({1, 3}, 0));
  bad_output.requested_outputs = {"Z"};
  expect(bad_output, StatusCode::kBadRequest, "no output 'Z'");
  expect(Request("mm", Floats({1, 4}, 0)), StatusCode::kBadRequest, "input 'X' has shape [1,4]");
  InferRequest missing = Request("mm", Floats({1, 3}, 0));
  expect(missing, StatusCode::kBadRequest, "needs input 'B'");
  InferRequest mixed = Request("mm", Floats({2, 3}, 0));
  mixed.inputs.emplace_back("B", Floats({1, 2}, 0));
  expect(mixed, StatusCode::kBadRequest, "batch size");
  // The server keeps serving, and counted the failures.
  InferResponse ok = core.Infer(Request("m", Floats({1, 3}, 0)));
  EXPECT_TRUE(ok.status.ok()) << ok.status.message;
  EXPECT_GE(core.Stats("m")->failure, 8u);
}

TEST_F(ServerCoreTest, BackendErrorsFailTheBatchAndTheWorkerSurvives) {
  AddModel("mm", MatMulModel(),
           R"({"max_batch_size": 4, "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [3]},
                                               {"name": "B", "data_type": "TYPE_FP32", "dims": [-1]}]})");
  ServerCore core(Options());
  InferRequest bad = Request("mm", Floats({1, 3}, 0));
  bad.inputs.emplace_back("B", Floats({1, 5}, 0));  // [1,2] + [1,5] cannot broadcast.
  InferResponse r = core.Infer(bad);
  EXPECT_EQ(r.status.code, StatusCode::kInternal);
  ExpectContains(r.status.message, "model 'mm'");
  InferRequest good = Request("mm", Floats({1, 3}, 0));
  good.inputs.emplace_back("B", Floats({1, 2}, 0));
  r = core.Infer(good);
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  EXPECT_EQ(r.outputs[0].second.dims(), (std::vector<int64_t>{1, 2}));
}

TEST_F(ServerCoreTest, MergesConcurrentRequestsAndSplitsOutputsCorrectly) {
  AddModel("mm", MatMulModel(),
           R"({"max_batch_size": 8,
               "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [3]},
                         {"name": "B", "data_type": "TYPE_FP32", "dims": [2]}],
               "dynamic_batching": {"preferred_batch_size": [6],
                                    "max_queue_delay_microseconds": 5000000}})");
  ServerCore core(Options());
  auto model = Model::Load((repo_ / "mm" / "1" / "model.onnx").string());
  // Batch sizes 1, 2 and 3 add up to the preferred 6: one execution.
  std::vector<InferRequest> requests;
  for (int i = 0; i < 3; ++i) {
    InferRequest r = Request("mm", Floats({i + 1, 3}, static_cast<float>(10 * i)));
    r.inputs.emplace_back("B", Floats({i + 1, 2}, static_cast<float>(-i)));
    r.id = "req" + std::to_string(i);
    requests.push_back(r);
  }
  std::vector<std::future<InferResponse>> futures;
  for (const InferRequest& r : requests)
    futures.push_back(std::async(std::launch::async, [&core, r] { return core.Infer(r); }));
  for (int i = 0; i < 3; ++i) {
    InferResponse resp = futures[static_cast<size_t>(i)].get();
    ASSERT_TRUE(resp.status.ok()) << resp.status.message;
    EXPECT_EQ(resp.id, "req" + std::to_string(i));
    std::map<std::string, Tensor> alone;
    for (const auto& [name, t] : requests[static_cast<size_t>(i)].inputs) alone[name] = t;
    std::vector<Tensor> expected = model->RunCpu(alone);
    ASSERT_EQ(resp.outputs.size(), 1u);
    EXPECT_EQ(resp.outputs[0].second.dims(), expected[0].dims());
    EXPECT_EQ(resp.outputs[0].second.ToFloatVector(), expected[0].ToFloatVector());
  }
  ModelStats s = *core.Stats("mm");
  EXPECT_EQ(s.success, 3u);
  EXPECT_EQ(s.executions, 1u);
  EXPECT_EQ(s.inferences, 6u);
  EXPECT_EQ(s.batch_size_counts[6], 1u);
}

TEST_F(ServerCoreTest, DifferentShapesAreNotBatchedTogether) {
  AddAffine("m", R"("dynamic_batching": {"preferred_batch_size": [2],
                                         "max_queue_delay_microseconds": 300000})");
  ServerCore core(Options());
  std::vector<std::future<InferResponse>> futures;
  for (int64_t n : {3, 4, 3, 4}) {
    futures.push_back(std::async(std::launch::async, [&core, n] {
      return core.Infer(Request("m", Floats({1, n}, 1.f)));
    }));
  }
  for (auto& f : futures) {
    InferResponse r = f.get();
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    std::vector<float> y = r.outputs[0].second.ToFloatVector();
    for (size_t i = 0; i < y.size(); ++i) EXPECT_FLOAT_EQ(y[i], (1.f + 0.5f * static_cast<float>(i)) * 2 + 1);
  }
  ModelStats s = *core.Stats("m");
  EXPECT_EQ(s.success, 4u);
  EXPECT_EQ(s.inferences, 4u);
  // Batches only ever hold one width: two batches of 2 (or smaller ones
  // when the requests trickle in after the delay), never one of 3 or 4.
  EXPECT_GE(s.executions, 2u);
  EXPECT_EQ(s.batch_size_counts.count(3) + s.batch_size_counts.count(4), 0u);
}

TEST_F(ServerCoreTest, QueueFullIsRejectedAndShutdownDrains) {
  AddAffine("m", R"("dynamic_batching": {"max_queue_delay_microseconds": 30000000,
                                         "default_queue_policy": {"max_queue_size": 2}})");
  std::vector<std::future<InferResponse>> queued;
  {
    ServerCore core(Options());
    // Nothing fills a batch of 8 and the delay is 30 s: both requests wait.
    for (int i = 0; i < 2; ++i) {
      auto promise = std::make_shared<std::promise<InferResponse>>();
      queued.push_back(promise->get_future());
      core.InferAsync(Request("m", Floats({1, 3}, static_cast<float>(i))),
                      [promise](InferResponse r) { promise->set_value(std::move(r)); });
    }
    InferResponse full = core.Infer(Request("m", Floats({1, 3}, 0)));
    EXPECT_EQ(full.status.code, StatusCode::kUnavailable);
    ExpectContains(full.status.message, "queue full");
    ExpectContains(core.MetricsText(), "nv_inference_pending_request_count{model=\"m\",version=\"1\"} 2");
    core.BeginShutdown();
    EXPECT_FALSE(core.Ready());
    InferResponse refused = core.Infer(Request("m", Floats({1, 3}, 0)));
    EXPECT_EQ(refused.status.code, StatusCode::kUnavailable);
    ExpectContains(refused.status.message, "shutting down");
    EXPECT_EQ(queued[0].wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  }  // The destructor runs the queued requests instead of waiting 30 s.
  for (auto& f : queued) {
    InferResponse r = f.get();
    EXPECT_TRUE(r.status.ok()) << r.status.message;
  }
}

TEST_F(ServerCoreTest, RequestsTimeOutInTheQueue) {
  AddAffine("m", R"("dynamic_batching": {"max_queue_delay_microseconds": 2000000,
                                         "default_queue_policy": {"default_timeout_microseconds": 50000}})");
  ServerCore core(Options());
  const auto start = std::chrono::steady_clock::now();
  InferResponse r = core.Infer(Request("m", Floats({1, 3}, 0)));
  EXPECT_EQ(r.status.code, StatusCode::kTimeout) << r.status.message;
  ExpectContains(r.status.message, "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  // A request's own timeout overrides the default.
  InferRequest own = Request("m", Floats({1, 3}, 0));
  own.timeout_us = 10000;
  EXPECT_EQ(core.Infer(own).status.code, StatusCode::kTimeout);
  EXPECT_EQ(core.Stats("m")->failure, 2u);
}

TEST_F(ServerCoreTest, UnloadAndLoadAtRunTime) {
  AddAffine("m", "");
  ServerCore core(Options());
  ASSERT_TRUE(core.ModelReady("m"));
  ASSERT_TRUE(core.Unload("m").ok());
  EXPECT_FALSE(core.ModelReady("m"));
  EXPECT_FALSE(core.Config("m"));
  EXPECT_TRUE(core.LoadedModels().empty());
  InferResponse r = core.Infer(Request("m", Floats({1, 3}, 0)));
  EXPECT_EQ(r.status.code, StatusCode::kUnavailable);
  ExpectContains(r.status.message, "unloaded");
  auto index = core.Index();
  ASSERT_EQ(index.size(), 1u);
  EXPECT_EQ(index[0].state, "UNAVAILABLE");
  ASSERT_TRUE(core.Load("m").ok());
  EXPECT_TRUE(core.Infer(Request("m", Floats({1, 3}, 0))).status.ok());
  // A folder added while running is listed, then loads on request.
  AddAffine("late", "");
  bool listed = false;
  for (const auto& e : core.Index()) listed |= e.name == "late" && e.state == "UNAVAILABLE";
  EXPECT_TRUE(listed);
  ASSERT_TRUE(core.Load("late").ok());
  EXPECT_EQ(core.LoadedModels(), (std::vector<std::string>{"late", "m"}));
  Status missing = core.Load("absent");
  EXPECT_EQ(missing.code, StatusCode::kNotFound);
  ExpectContains(missing.message, "absent");
  EXPECT_EQ(core.Load("../x").code, StatusCode::kBadRequest);
  EXPECT_EQ(core.Unload("absent").code, StatusCode::kNotFound);
  // A broken reload reports why.
  WriteFile(repo_ / "m" / "config.json", R"({"max_batch_size": "many"})");
  Status broken = core.Load("m");
  EXPECT_EQ(broken.code, StatusCode::kBadRequest);
  ExpectContains(broken.message, "max_batch_size must be an integer");
  EXPECT_FALSE(core.ModelReady("m"));
}

TEST_F(ServerCoreTest, MetricsTextHasTheCounters) {
  AddAffine("m", "");
  ServerCore core(Options());
  ASSERT_TRUE(core.Infer(Request("m", Floats({2, 3}, 0))).status.ok());
  EXPECT_FALSE(core.Infer(Request("m", Floats({2}, 0))).status.ok());
  const std::string text = core.MetricsText();
  for (const char* part :
       {"# HELP nv_inference_request_success", "# TYPE nv_inference_request_success counter",
        "nv_inference_request_success{model=\"m\",version=\"1\"} 1",
        "nv_inference_request_failure{model=\"m\",version=\"1\"} 1",
        "nv_inference_count{model=\"m\",version=\"1\"} 2",
        "nv_inference_exec_count{model=\"m\",version=\"1\"} 1",
        "nv_inference_queue_duration_us{model=\"m\",version=\"1\"}",
        "nv_inference_compute_input_duration_us{model=\"m\",version=\"1\"}",
        "nv_inference_compute_infer_duration_us{model=\"m\",version=\"1\"}",
        "nv_inference_compute_output_duration_us{model=\"m\",version=\"1\"}",
        "# TYPE kiln_batch_size histogram",
        "kiln_batch_size_bucket{model=\"m\",version=\"1\",le=\"1\"} 0",
        "kiln_batch_size_bucket{model=\"m\",version=\"1\",le=\"2\"} 1",
        "kiln_batch_size_bucket{model=\"m\",version=\"1\",le=\"+Inf\"} 1",
        "kiln_batch_size_sum{model=\"m\",version=\"1\"} 2",
        "kiln_batch_size_count{model=\"m\",version=\"1\"} 1",
        "# TYPE kiln_process_resident_bytes gauge", "kiln_process_resident_bytes "}) {
    ExpectContains(text, part);
  }
  ModelStats s = *core.Stats("m");
  EXPECT_GT(s.last_inference_ms, 0u);
}

TEST_F(ServerCoreTest, MissingRepositoryIsAClearError) {
  ServerOptions o;
  o.model_repository = (repo_ / "nowhere").string();
  try {
    ServerCore core(o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    ExpectContains(e.what(), "is not a directory");
  }
}

TEST(ServeDatatypes, KServeNamesRoundTrip) {
  for (DType t : {DType::kBool, DType::kUInt8, DType::kInt32, DType::kInt64, DType::kFloat16,
                  DType::kFloat32, DType::kFloat64, DType::kBFloat16}) {
    EXPECT_EQ(DTypeFromKServe(KServeDatatype(t)), t);
  }
  EXPECT_THROW(DTypeFromKServe("FP8"), Error);
  EXPECT_THROW(DTypeFromKServe("BYTES"), Error);
  EXPECT_EQ(DTypeFromConfig("TYPE_FP32"), DType::kFloat32);
  EXPECT_THROW(DTypeFromConfig("FP32"), Error);
}

TEST(ServeConfig, ParsesTritonFields) {
  ModelConfig c = ParseModelConfig(R"({
    "name": "m", "platform": "onnxruntime_onnx", "max_batch_size": "16",
    "input": [{"name": "x", "data_type": "TYPE_FP16", "dims": ["3", 224, -1]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1000]}],
    "dynamic_batching": {"preferred_batch_size": [8, 4, 8], "max_queue_delay_microseconds": 100,
                         "default_queue_policy": {"max_queue_size": 5,
                                                  "default_timeout_microseconds": "2000"}},
    "instance_group": [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}],
    "parameters": {"precision": {"string_value": "fp16"}}})",
                                   "m");
  EXPECT_EQ(c.max_batch_size, 16);
  EXPECT_EQ(c.inputs[0].dtype, DType::kFloat16);
  EXPECT_EQ(c.inputs[0].dims, (std::vector<int64_t>{3, 224, -1}));
  EXPECT_TRUE(c.dynamic_batching);
  EXPECT_EQ(c.preferred_batch_sizes, (std::vector<int>{4, 8}));
  EXPECT_EQ(c.max_queue_delay_us, 100);
  EXPECT_EQ(c.max_queue_size, 5);
  EXPECT_EQ(c.default_timeout_us, 2000);
  EXPECT_EQ(c.instance_count, 2);
  EXPECT_EQ(c.instance_kind, "gpu");
  EXPECT_EQ(c.gpus, (std::vector<int>{0}));
  EXPECT_EQ(c.precision, "fp16");
  EXPECT_THROW(ParseModelConfig(R"({"name": "other"})", "m"), Error);
  EXPECT_THROW(ParseModelConfig(R"({"max_batch_size": 2,
                 "dynamic_batching": {"preferred_batch_size": [4]}})", "m"), Error);
  EXPECT_THROW(ParseModelConfig(R"({"instance_group": [{"kind": "KIND_TPU"}]})", "m"), Error);
  EXPECT_THROW(ParseModelConfig(R"({"parameters": {"precision": "fp8"}})", "m"), Error);
  EXPECT_THROW(ParseModelConfig(R"([1, 2])", "m"), Error);
}

}  // namespace
}  // namespace kiln::serve
