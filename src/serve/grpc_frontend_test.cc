// The gRPC frontend against a real ServerCore over loopback, through the
// stubs generated from third_party/kserve/grpc_service.proto.
#include "serve/grpc_frontend.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc_service.grpc.pb.h"
#include "grpc_service.pb.h"
#include "kiln/error.h"
#include "onnx.pb.h"
#include "serve/server_core.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;
namespace pb = ::inference;

constexpr int kIn = 16, kOut = 8;

float Weight(int i, int j) { return std::sin(0.37f * static_cast<float>(i * kOut + j + 1)); }
float Bias(int j) { return 0.1f * static_cast<float>(j) - 0.3f; }

void AddFloatInitializer(::onnx::GraphProto* graph, const std::string& name,
                         const std::vector<int64_t>& dims, const std::vector<float>& values) {
  ::onnx::TensorProto* t = graph->add_initializer();
  t->set_name(name);
  t->set_data_type(::onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
}

void AddValueInfo(::google::protobuf::RepeatedPtrField<::onnx::ValueInfoProto>* list,
                  const std::string& name, int64_t dim) {
  ::onnx::ValueInfoProto* v = list->Add();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(::onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  tt->mutable_shape()->add_dim()->set_dim_value(dim);
}

// Y = Relu(X @ W + B) [batch, 8], Z = X * 2 [batch, 16]; X is FP32 [batch, 16].
std::string DenseModel() {
  ::onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("grpc_frontend_test");
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("dense");
  auto node = [&](const char* op, std::vector<std::string> in, const char* out) {
    ::onnx::NodeProto* n = graph->add_node();
    n->set_op_type(op);
    n->set_name(std::string(op) + "_" + out);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("MatMul", {"X", "W"}, "XW");
  node("Add", {"XW", "B"}, "XWB");
  node("Relu", {"XWB"}, "Y");
  node("Mul", {"X", "two"}, "Z");
  std::vector<float> w, b;
  for (int i = 0; i < kIn; ++i)
    for (int j = 0; j < kOut; ++j) w.push_back(Weight(i, j));
  for (int j = 0; j < kOut; ++j) b.push_back(Bias(j));
  AddFloatInitializer(graph, "W", {kIn, kOut}, w);
  AddFloatInitializer(graph, "B", {kOut}, b);
  AddFloatInitializer(graph, "two", {}, {2.f});
  AddValueInfo(graph->mutable_input(), "X", kIn);
  AddValueInfo(graph->mutable_output(), "Y", kOut);
  AddValueInfo(graph->mutable_output(), "Z", kIn);
  return model.SerializeAsString();
}

std::vector<float> ReferenceY(const std::vector<float>& x, int batch) {
  std::vector<float> y(static_cast<size_t>(batch) * kOut);
  for (int n = 0; n < batch; ++n)
    for (int j = 0; j < kOut; ++j) {
      float acc = Bias(j);
      for (int i = 0; i < kIn; ++i) acc += x[n * kIn + i] * Weight(i, j);
      y[n * kOut + j] = std::max(acc, 0.f);
    }
  return y;
}

std::vector<float> InputX(int batch, int seed) {
  std::vector<float> x(static_cast<size_t>(batch) * kIn);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.11f * static_cast<float>(i + seed));
  return x;
}

std::vector<float> AsFloats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void WriteDense(const fs::path& repo, const std::string& name) {
  WriteFile(repo / name / "1" / "model.onnx", DenseModel());
  WriteFile(repo / name / "config.json", R"({
    "name": ")" + name + R"(",
    "max_batch_size": 8,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [8]},
               {"name": "Z", "data_type": "TYPE_FP32", "dims": [16]}],
    "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 2000},
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}]
  })");
}

class GrpcFrontendTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new fs::path(fs::temp_directory_path() /
                         ("kiln_grpc_frontend_test_" + std::to_string(getpid())));
    fs::remove_all(*repo_);
    WriteDense(*repo_, "dense");
    WriteDense(*repo_, "dense_spare");
    ServerOptions options;
    options.model_repository = repo_->string();
    options.max_request_bytes = 1 << 20;
    core_ = new ServerCore(options);
    frontend_ = new GrpcFrontend(*core_, 0);
    frontend_->Start();
  }
  static void TearDownTestSuite() {
    delete frontend_;
    delete core_;
    fs::remove_all(*repo_);
    delete repo_;
  }

  void SetUp() override {
    ASSERT_GT(frontend_->port(), 0);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(frontend_->port()),
                                       grpc::InsecureChannelCredentials());
    stub_ = pb::GRPCInferenceService::NewStub(channel);
  }

  static pb::ModelInferRequest DenseRequest(const std::vector<float>& x, int batch,
                                            const std::string& model = "dense") {
    pb::ModelInferRequest r;
    r.set_model_name(model);
    r.set_id("req-1");
    auto* in = r.add_inputs();
    in->set_name("X");
    in->set_datatype("FP32");
    in->add_shape(batch);
    in->add_shape(kIn);
    r.add_raw_input_contents(std::string(reinterpret_cast<const char*>(x.data()),
                                         x.size() * sizeof(float)));
    return r;
  }

  grpc::Status Infer(const pb::ModelInferRequest& request, pb::ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->ModelInfer(&context, request, response);
  }

  void ExpectDense(const pb::ModelInferResponse& r, const std::vector<float>& x, int batch) {
    ASSERT_EQ(r.outputs_size(), 2);
    ASSERT_EQ(r.raw_output_contents_size(), 2);
    for (int i = 0; i < 2; ++i) {
      const auto& o = r.outputs(i);
      EXPECT_EQ(o.datatype(), "FP32");
      const std::vector<float> got = AsFloats(r.raw_output_contents(i));
      if (o.name() == "Y") {
        EXPECT_EQ(std::vector<int64_t>(o.shape().begin(), o.shape().end()),
                  (std::vector<int64_t>{batch, kOut}));
        const std::vector<float> want = ReferenceY(x, batch);
        ASSERT_EQ(got.size(), want.size());
        for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 1e-4f) << k;
      } else {
        EXPECT_EQ(o.name(), "Z");
        ASSERT_EQ(got.size(), x.size());
        for (size_t k = 0; k < x.size(); ++k) EXPECT_FLOAT_EQ(got[k], 2 * x[k]);
      }
    }
  }

  void ExpectServing() {
    grpc::ClientContext context;
    pb::ServerLiveResponse live;
    ASSERT_TRUE(stub_->ServerLive(&context, {}, &live).ok());
    EXPECT_TRUE(live.live());
    pb::ModelInferResponse r;
    const std::vector<float> x = InputX(1, 99);
    ASSERT_TRUE(Infer(DenseRequest(x, 1), &r).ok());
    ExpectDense(r, x, 1);
  }

  static fs::path* repo_;
  static ServerCore* core_;
  static GrpcFrontend* frontend_;
  std::unique_ptr<pb::GRPCInferenceService::Stub> stub_;
};

fs::path* GrpcFrontendTest::repo_ = nullptr;
ServerCore* GrpcFrontendTest::core_ = nullptr;
GrpcFrontend* GrpcFrontendTest::frontend_ = nullptr;

TEST_F(GrpcFrontendTest, HealthAndMetadata) {
  {
    grpc::ClientContext c;
    pb::ServerReadyResponse r;
    ASSERT_TRUE(stub_->ServerReady(&c, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext c;
    pb::ServerMetadataResponse r;
    ASSERT_TRUE(stub_->ServerMetadata(&c, {}, &r).ok());
    EXPECT_EQ(r.name(), "kiln");
    EXPECT_FALSE(r.version().empty());
  }
  for (const auto& [name, ready] : {std::pair{"dense", true}, {"no_such_model", false}}) {
    grpc::ClientContext c;
    pb::ModelReadyRequest q;
    q.set_name(name);
    pb::ModelReadyResponse r;
    ASSERT_TRUE(stub_->ModelReady(&c, q, &r).ok());
    EXPECT_EQ(r.ready(), ready) << name;
  }
  {
    grpc::ClientContext c;
    pb::ModelMetadataRequest q;
    q.set_name("dense");
    pb::ModelMetadataResponse r;
    ASSERT_TRUE(stub_->ModelMetadata(&c, q, &r).ok());
    EXPECT_EQ(r.name(), "dense");
    ASSERT_EQ(r.inputs_size(), 1);
    EXPECT_EQ(r.inputs(0).name(), "X");
    EXPECT_EQ(r.inputs(0).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(r.inputs(0).shape().begin(), r.inputs(0).shape().end()),
              (std::vector<int64_t>{-1, kIn}));
    EXPECT_EQ(r.outputs_size(), 2);
    ASSERT_GE(r.versions_size(), 1);
    EXPECT_EQ(r.versions(0), "1");
  }
  {
    grpc::ClientContext c;
    pb::ModelMetadataRequest q;
    q.set_name("no_such_model");
    pb::ModelMetadataResponse r;
    const grpc::Status s = stub_->ModelMetadata(&c, q, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_NE(s.error_message().find("no_such_model"), std::string::npos);
  }
}

TEST_F(GrpcFrontendTest, ModelConfig) {
  grpc::ClientContext c;
  pb::ModelConfigRequest q;
  q.set_name("dense");
  pb::ModelConfigResponse r;
  ASSERT_TRUE(stub_->ModelConfig(&c, q, &r).ok());
  const pb::ModelConfig& cfg = r.config();
  EXPECT_EQ(cfg.name(), "dense");
  EXPECT_EQ(cfg.max_batch_size(), 8);
  ASSERT_EQ(cfg.input_size(), 1);
  EXPECT_EQ(cfg.input(0).data_type(), pb::TYPE_FP32);
  EXPECT_EQ(std::vector<int64_t>(cfg.input(0).dims().begin(), cfg.input(0).dims().end()),
            (std::vector<int64_t>{kIn}));
  ASSERT_EQ(cfg.output_size(), 2);
  ASSERT_TRUE(cfg.has_dynamic_batching());
  EXPECT_EQ(cfg.dynamic_batching().preferred_batch_size_size(), 2);
  EXPECT_EQ(cfg.dynamic_batching().max_queue_delay_microseconds(), 2000u);
  ASSERT_EQ(cfg.instance_group_size(), 1);
  EXPECT_EQ(cfg.instance_group(0).count(), 1);
  EXPECT_EQ(cfg.instance_group(0).kind(), pb::ModelInstanceGroup::KIND_CPU);
}

TEST_F(GrpcFrontendTest, InferRawAndTypedContents) {
  const std::vector<float> x = InputX(3, 1);
  pb::ModelInferResponse raw;
  ASSERT_TRUE(Infer(DenseRequest(x, 3), &raw).ok());
  EXPECT_EQ(raw.model_name(), "dense");
  EXPECT_EQ(raw.id(), "req-1");
  ExpectDense(raw, x, 3);

  // The same request with typed contents instead of raw bytes.
  pb::ModelInferRequest typed = DenseRequest(x, 3);
  typed.clear_raw_input_contents();
  for (float v : x) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(v);
  pb::ModelInferResponse r;
  ASSERT_TRUE(Infer(typed, &r).ok());
  ExpectDense(r, x, 3);

  // Only Z requested.
  pb::ModelInferRequest subset = DenseRequest(x, 3);
  subset.add_outputs()->set_name("Z");
  pb::ModelInferResponse z;
  ASSERT_TRUE(Infer(subset, &z).ok());
  ASSERT_EQ(z.outputs_size(), 1);
  EXPECT_EQ(z.outputs(0).name(), "Z");
  ASSERT_EQ(z.raw_output_contents_size(), 1);
  EXPECT_EQ(z.raw_output_contents(0).size(), x.size() * sizeof(float));
}

TEST_F(GrpcFrontendTest, BadRequestsGetTheRightCodesAndTheServerKeepsServing) {
  const std::vector<float> x = InputX(2, 2);
  struct Case {
    const char* what;
    pb::ModelInferRequest request;
    grpc::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back({"unknown model", DenseRequest(x, 2, "no_such_model"),
                   grpc::StatusCode::NOT_FOUND});
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.mutable_inputs(0)->set_shape(1, 15);  // bytes no longer match the shape
    cases.push_back({"byte size", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    const std::vector<float> x15(30, 1.f);
    pb::ModelInferRequest r = DenseRequest(x15, 2);
    r.mutable_inputs(0)->set_shape(1, 15);  // consistent bytes, wrong shape for the model
    cases.push_back({"wrong shape", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.mutable_inputs(0)->set_datatype("INT32");  // same byte size, wrong dtype
    cases.push_back({"wrong dtype", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.mutable_inputs(0)->set_datatype("NOT_A_TYPE");
    cases.push_back({"unknown dtype", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.add_raw_input_contents("extra");
    cases.push_back({"raw count", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.clear_raw_input_contents();
    cases.push_back({"no data", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.clear_raw_input_contents();
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.f);
    cases.push_back({"typed count", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.mutable_inputs(0)->set_name("NOPE");
    cases.push_back({"wrong name", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    pb::ModelInferRequest r = DenseRequest(x, 2);
    r.mutable_inputs(0)->set_shape(0, -1);
    cases.push_back({"negative dim", r, grpc::StatusCode::INVALID_ARGUMENT});
  }
  {
    const std::vector<float> x9 = InputX(9, 3);  // max_batch_size is 8
    cases.push_back({"batch too big", DenseRequest(x9, 9), grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (const Case& c : cases) {
    pb::ModelInferResponse r;
    const grpc::Status s = Infer(c.request, &r);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_FALSE(s.error_message().empty()) << c.what;
  }
  // Over ServerOptions::max_request_bytes (1 MiB here): gRPC refuses it.
  const std::vector<float> huge(300000, 0.f);
  pb::ModelInferResponse r;
  EXPECT_EQ(Infer(DenseRequest(huge, 300000 / kIn), &r).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  ExpectServing();
}

TEST_F(GrpcFrontendTest, ConcurrentRequestsAndStatistics) {
  auto stats = [&] {
    grpc::ClientContext c;
    pb::ModelStatisticsRequest q;
    q.set_name("dense");
    pb::ModelStatisticsResponse r;
    EXPECT_TRUE(stub_->ModelStatistics(&c, q, &r).ok());
    EXPECT_EQ(r.model_stats_size(), 1);
    return r.model_stats(0);
  };
  const pb::ModelStatistics before = stats();
  constexpr int kRequests = 16;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kRequests; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<float> x = InputX(1, 100 + t);
      pb::ModelInferResponse r;
      if (Infer(DenseRequest(x, 1), &r).ok()) {
        ExpectDense(r, x, 1);
        ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kRequests);
  const pb::ModelStatistics after = stats();
  EXPECT_EQ(after.name(), "dense");
  EXPECT_EQ(after.inference_count() - before.inference_count(), uint64_t{kRequests});
  EXPECT_LE(after.execution_count() - before.execution_count(), uint64_t{kRequests});
  EXPECT_GE(after.inference_stats().success().count(), uint64_t{kRequests});
  EXPECT_GT(after.last_inference(), 0u);
  EXPECT_GT(after.batch_stats_size(), 0);
  // Real durations, the same as the core's and the HTTP JSON's.
  const ModelStats core_stats = *core_->Stats("dense");
  const pb::InferStatistics& is = after.inference_stats();
  EXPECT_EQ(is.success().ns(), core_stats.success_ns);
  EXPECT_EQ(is.queue().ns(), core_stats.queue_ns);
  EXPECT_EQ(is.compute_input().ns(), core_stats.compute_input_ns);
  EXPECT_EQ(is.compute_infer().ns(), core_stats.compute_infer_ns);
  EXPECT_EQ(is.compute_output().ns(), core_stats.compute_output_ns);
  EXPECT_GT(is.compute_infer().ns(), 0u);
  EXPECT_LE(is.queue().ns() + is.compute_input().ns() + is.compute_infer().ns() +
                is.compute_output().ns(),
            is.success().ns());
  uint64_t executions = 0, rows = 0;
  for (const pb::InferBatchStatistics& b : after.batch_stats()) {
    ASSERT_TRUE(core_stats.batch_stats.count(static_cast<int>(b.batch_size())));
    const BatchStats& expected = core_stats.batch_stats.at(static_cast<int>(b.batch_size()));
    EXPECT_EQ(b.compute_infer().count(), expected.executions);
    EXPECT_EQ(b.compute_infer().ns(), expected.compute_infer_ns);
    EXPECT_EQ(b.compute_input().ns(), expected.compute_input_ns);
    EXPECT_EQ(b.compute_output().ns(), expected.compute_output_ns);
    EXPECT_GT(b.compute_infer().ns(), 0u);
    executions += b.compute_infer().count();
    rows += b.compute_infer().count() * b.batch_size();
  }
  EXPECT_EQ(executions, after.execution_count());
  EXPECT_EQ(rows, after.inference_count());

  grpc::ClientContext c;
  pb::ModelStatisticsRequest q;
  q.set_name("no_such_model");
  pb::ModelStatisticsResponse r;
  EXPECT_EQ(stub_->ModelStatistics(&c, q, &r).error_code(), grpc::StatusCode::NOT_FOUND);
}

// One asynchronous ModelInfer through gRPC's client callback API.
struct AsyncInfer {
  grpc::ClientContext context;
  pb::ModelInferRequest request;
  pb::ModelInferResponse response;
  grpc::Status status;
};

// Starts every call at once (no client thread per call) and waits for all.
void RunAllAsync(pb::GRPCInferenceService::Stub& stub, std::vector<std::unique_ptr<AsyncInfer>>& calls) {
  std::mutex mu;
  std::condition_variable all_done;
  size_t done = 0;
  for (auto& call : calls) {
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    AsyncInfer* c = call.get();
    stub.async()->ModelInfer(&c->context, &c->request, &c->response, [&, c](grpc::Status status) {
      std::lock_guard<std::mutex> lock(mu);
      c->status = std::move(status);
      if (++done == calls.size()) all_done.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(all_done.wait_for(lock, std::chrono::seconds(60), [&] { return done == calls.size(); }))
      << done << " of " << calls.size() << " calls answered";
}

// 64 calls in flight on one connection at once, good ones mixed with bad
// ones: every good one gets its own right answer, every bad one its error.
TEST_F(GrpcFrontendTest, ManyConcurrentInfersGetTheirOwnAnswers) {
  constexpr int kCalls = 64;
  std::vector<std::unique_ptr<AsyncInfer>> calls;
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < kCalls; ++i) {
    const int batch = 1 + i % 3;
    inputs.push_back(InputX(batch, 1000 + 37 * i));
    calls.push_back(std::make_unique<AsyncInfer>());
    calls.back()->request = DenseRequest(inputs.back(), batch);
    calls.back()->request.set_id("call-" + std::to_string(i));
    if (i % 8 == 5) {  // A wrong inner dim: INVALID_ARGUMENT naming the input.
      calls.back()->request.mutable_inputs(0)->set_shape(1, kIn + 1);
    } else if (i % 8 == 7) {
      calls.back()->request.set_model_name("no_such_model");
    }
  }
  RunAllAsync(*stub_, calls);
  for (int i = 0; i < kCalls; ++i) {
    const AsyncInfer& c = *calls[static_cast<size_t>(i)];
    if (i % 8 == 5) {
      EXPECT_EQ(c.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << i;
      EXPECT_NE(c.status.error_message().find("'X'"), std::string::npos) << c.status.error_message();
    } else if (i % 8 == 7) {
      EXPECT_EQ(c.status.error_code(), grpc::StatusCode::NOT_FOUND) << i;
      EXPECT_NE(c.status.error_message().find("no_such_model"), std::string::npos)
          << c.status.error_message();
    } else {
      ASSERT_TRUE(c.status.ok()) << i << ": " << c.status.error_message();
      EXPECT_EQ(c.response.id(), "call-" + std::to_string(i));
      ExpectDense(c.response, inputs[static_cast<size_t>(i)], 1 + i % 3);
    }
  }
  ExpectServing();
}

// Stop() while calls wait in the batcher queue (a long max_queue_delay): the
// calls still get their answers (graceful drain), Stop() returns, and
// destroying the frontend and then the core afterwards is safe.
TEST_F(GrpcFrontendTest, StopAnswersCallsInFlight) {
  const fs::path repo = fs::temp_directory_path() /
                        ("kiln_grpc_frontend_stop_test_" + std::to_string(getpid()));
  fs::remove_all(repo);
  WriteFile(repo / "slow" / "1" / "model.onnx", DenseModel());
  WriteFile(repo / "slow" / "config.json", R"({
    "name": "slow", "max_batch_size": 8,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [8]},
               {"name": "Z", "data_type": "TYPE_FP32", "dims": [16]}],
    "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": 400000},
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}]
  })");
  ServerOptions options;
  options.model_repository = repo.string();
  auto core = std::make_unique<ServerCore>(options);
  auto frontend = std::make_unique<GrpcFrontend>(*core, 0);
  frontend->Start();
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(frontend->port()), grpc::InsecureChannelCredentials()));
  constexpr int kCalls = 5;  // Fewer than the preferred batch: they wait out the delay.
  std::vector<std::unique_ptr<AsyncInfer>> calls;
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < kCalls; ++i) {
    inputs.push_back(InputX(1, 500 + i));
    calls.push_back(std::make_unique<AsyncInfer>());
    calls.back()->request = DenseRequest(inputs.back(), 1, "slow");
  }
  std::thread client([&] { RunAllAsync(*stub, calls); });
  // Let the calls reach the queue, then stop while they wait there.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (core->MetricsText().find("nv_inference_pending_request_count{model=\"slow\",version=\"1\"} " +
                         std::to_string(kCalls)) != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto stop_start = std::chrono::steady_clock::now();
  frontend->Stop();
  const double stop_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_start).count();
  client.join();
  EXPECT_LT(stop_seconds, 10.0);
  for (int i = 0; i < kCalls; ++i) {
    const AsyncInfer& c = *calls[static_cast<size_t>(i)];
    ASSERT_TRUE(c.status.ok()) << i << ": " << c.status.error_message();
    ExpectDense(c.response, inputs[static_cast<size_t>(i)], 1);
  }
  EXPECT_EQ(core->Stats("slow")->success, uint64_t{kCalls});
  frontend.reset();
  core.reset();
  fs::remove_all(repo);
}

TEST_F(GrpcFrontendTest, StreamInfer) {
  grpc::ClientContext c;
  auto stream = stub_->ModelStreamInfer(&c);
  constexpr int kRequests = 6;
  std::vector<std::vector<float>> xs;
  for (int i = 0; i < kRequests; ++i) {
    xs.push_back(InputX(1, 200 + i));
    pb::ModelInferRequest q = DenseRequest(xs.back(), 1);
    q.set_id(std::to_string(i));
    ASSERT_TRUE(stream->Write(q));
  }
  pb::ModelInferRequest bad = DenseRequest(xs[0], 1, "no_such_model");
  bad.set_id("bad");
  ASSERT_TRUE(stream->Write(bad));
  stream->WritesDone();
  int good = 0, errors = 0;
  pb::ModelStreamInferResponse r;
  while (stream->Read(&r)) {
    if (!r.error_message().empty()) {
      EXPECT_EQ(r.infer_response().id(), "bad");
      EXPECT_NE(r.error_message().find("no_such_model"), std::string::npos);
      ++errors;
      continue;
    }
    const int i = std::stoi(r.infer_response().id());
    ExpectDense(r.infer_response(), xs.at(static_cast<size_t>(i)), 1);
    ++good;
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(good, kRequests);
  EXPECT_EQ(errors, 1);
}

TEST_F(GrpcFrontendTest, RepositoryIndexLoadUnload) {
  auto index_state = [&](const std::string& model) {
    grpc::ClientContext c;
    pb::RepositoryIndexResponse r;
    EXPECT_TRUE(stub_->RepositoryIndex(&c, {}, &r).ok());
    for (const auto& m : r.models())
      if (m.name() == model) return m.state();
    return std::string("<absent>");
  };
  EXPECT_EQ(index_state("dense"), "READY");
  EXPECT_EQ(index_state("dense_spare"), "READY");
  {
    grpc::ClientContext c;
    pb::RepositoryModelUnloadRequest q;
    q.set_model_name("dense_spare");
    (*q.mutable_parameters())["unload_dependents"].set_bool_param(false);  // as tritonclient
    pb::RepositoryModelUnloadResponse r;
    ASSERT_TRUE(stub_->RepositoryModelUnload(&c, q, &r).ok());
  }
  EXPECT_NE(index_state("dense_spare"), "READY");
  pb::ModelInferResponse r;
  EXPECT_NE(Infer(DenseRequest(InputX(1, 5), 1, "dense_spare"), &r).error_code(),
            grpc::StatusCode::OK);
  {
    grpc::ClientContext c;
    pb::RepositoryIndexRequest q;
    q.set_ready(true);
    pb::RepositoryIndexResponse ready;
    ASSERT_TRUE(stub_->RepositoryIndex(&c, q, &ready).ok());
    for (const auto& m : ready.models()) EXPECT_NE(m.name(), "dense_spare");
  }
  {
    grpc::ClientContext c;
    pb::RepositoryModelLoadRequest q;
    q.set_model_name("dense_spare");
    pb::RepositoryModelLoadResponse lr;
    ASSERT_TRUE(stub_->RepositoryModelLoad(&c, q, &lr).ok());
  }
  EXPECT_EQ(index_state("dense_spare"), "READY");
  const std::vector<float> x = InputX(2, 6);
  ASSERT_TRUE(Infer(DenseRequest(x, 2, "dense_spare"), &r).ok());
  ExpectDense(r, x, 2);
  {
    grpc::ClientContext c;
    pb::RepositoryModelLoadRequest q;
    q.set_model_name("no_such_model");
    pb::RepositoryModelLoadResponse lr;
    const grpc::Status s = stub_->RepositoryModelLoad(&c, q, &lr);
    EXPECT_NE(s.error_code(), grpc::StatusCode::OK);
    EXPECT_NE(s.error_message().find("no_such_model"), std::string::npos) << s.error_message();
  }
  {
    grpc::ClientContext c;
    pb::RepositoryModelLoadRequest q;
    q.set_model_name("dense");
    (*q.mutable_parameters())["config"].set_string_param("{}");
    pb::RepositoryModelLoadResponse lr;
    EXPECT_EQ(stub_->RepositoryModelLoad(&c, q, &lr).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  ExpectServing();
}

TEST_F(GrpcFrontendTest, PortInUseIsAClearError) {
  GrpcFrontend second(*core_, frontend_->port());
  try {
    second.Start();
    FAIL() << "a second frontend bound port " << frontend_->port();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(frontend_->port())), std::string::npos)
        << e.what();
  }
  ExpectServing();
}

TEST_F(GrpcFrontendTest, StopIsIdempotentAndClosesThePort) {
  GrpcFrontend extra(*core_, 0);
  extra.Start();
  const int port = extra.port();
  ASSERT_GT(port, 0);
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext c;
    pb::ServerLiveResponse r;
    EXPECT_TRUE(stub->ServerLive(&c, {}, &r).ok());
  }
  extra.Stop();
  extra.Stop();
  {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::ServerLiveResponse r;
    EXPECT_FALSE(stub->ServerLive(&c, {}, &r).ok());
  }
}

}  // namespace
}  // namespace kiln::serve
