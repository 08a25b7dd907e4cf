// The load generator against a real kiln serve (ServerCore with the CPU
// backend, HTTP and gRPC frontends on loopback): counts, throughput and
// latencies agree with each other and with the server's own statistics.
#include "serve/serve_test_util.h"
#include "serve/load_generator.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "onnx.pb.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;

// Y = Relu(X), X float [batch, dim] (dim named "n" when `dim` is negative).
std::string ReluModel(int64_t dim) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("relu");
  for (auto [info, name] : {std::pair{g->add_input(), "X"}, {g->add_output(), "Y"}}) {
    info->set_name(name);
    auto* t = info->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    if (dim < 0) {
      t->mutable_shape()->add_dim()->set_dim_param("n");
    } else {
      t->mutable_shape()->add_dim()->set_dim_value(dim);
    }
  }
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->add_input("X");
  n->add_output("Y");
  return m.SerializeAsString();
}

void WriteModel(const fs::path& repo, const std::string& name, int64_t dim) {
  fs::create_directories(repo / name / "1");
  std::ofstream(repo / name / "1" / "model.onnx", std::ios::binary) << ReluModel(dim);
  const std::string dims = std::to_string(dim);
  std::ofstream(repo / name / "config.json") << R"({"name": ")" + name + R"(", "max_batch_size": 8,
      "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [)" + dims + R"(]}],
      "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [)" + dims + R"(]}],
      "dynamic_batching": {"max_queue_delay_microseconds": 500},
      "instance_group": [{"count": 1, "kind": "KIND_CPU"}]})";
}

using testing::FreePort;

class LoadGeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new fs::path(fs::temp_directory_path() /
                         ("kiln_load_generator_test_" + std::to_string(getpid())));
    fs::remove_all(*repo_);
    WriteModel(*repo_, "relu", 16);
    WriteModel(*repo_, "relu_var", -1);
    ServerOptions options;
    options.model_repository = repo_->string();
    core_ = new ServerCore(options);
    http_ = new HttpFrontend(*core_, FreePort(), 0);
    http_->Start();
    grpc_ = new GrpcFrontend(*core_, 0);
    grpc_->Start();
  }
  static void TearDownTestSuite() {
    delete grpc_;
    delete http_;
    delete core_;
    fs::remove_all(*repo_);
    delete repo_;
  }

  static LoadOptions Options(const std::string& protocol, const std::string& model = "relu") {
    LoadOptions o;
    o.protocol = protocol;
    o.url = "127.0.0.1:" + std::to_string(protocol == "grpc" ? grpc_->port() : http_->port());
    o.model = model;
    o.measurement_interval_ms = 150;
    o.warmup_ms = 50;
    o.max_trials = 3;
    o.request_timeout_ms = 10000;
    return o;
  }

  // Counts, rates and latencies of a step agree with each other and with
  // the server's statistics over the same windows.
  static void ExpectConsistent(const StepResult& r, int batch_size) {
    EXPECT_GT(r.requests, 0u);
    EXPECT_EQ(r.errors, 0u) << r.first_error;
    EXPECT_EQ(r.windows, 3);
    EXPECT_GT(r.seconds, 0.3);
    EXPECT_NEAR(r.requests_per_second, static_cast<double>(r.requests) / r.seconds, 1e-6);
    EXPECT_NEAR(r.inferences_per_second, r.requests_per_second * batch_size, 1e-6);
    const LatencySummary& l = r.latency;
    EXPECT_GT(l.min_us, 0);
    EXPECT_LE(l.min_us, l.p50_us);
    EXPECT_LE(l.p50_us, l.p90_us);
    EXPECT_LE(l.p90_us, l.p95_us);
    EXPECT_LE(l.p95_us, l.p99_us);
    EXPECT_LE(l.p99_us, l.max_us);
    EXPECT_GE(l.avg_us, l.min_us);
    EXPECT_LE(l.avg_us, l.max_us);
    // Requests in flight at most: throughput x latency (Little's law) cannot
    // exceed the concurrency by much.
    if (r.mode == "concurrency")
      EXPECT_LE(r.requests_per_second * l.avg_us * 1e-6, r.level * 1.1 + 0.1);
    const ServerSideSummary& s = r.server;
    ASSERT_TRUE(s.available);
    // The server's snapshots bound nearly the same windows as the client's.
    const double slack = 0.2 * static_cast<double>(r.requests) + 4 * r.level + 4;
    EXPECT_NEAR(static_cast<double>(s.requests), static_cast<double>(r.requests), slack);
    EXPECT_NEAR(static_cast<double>(s.inferences), static_cast<double>(s.requests) * batch_size,
                slack * batch_size);
    EXPECT_LE(s.executions, s.requests + 2 * static_cast<uint64_t>(r.level) + 2);
    EXPECT_GT(s.compute_infer_us, 0);
    EXPECT_LE(s.queue_us + s.compute_input_us + s.compute_infer_us + s.compute_output_us,
              s.request_us + 1e-6);
    // The server's time is part of the client's latency.
    EXPECT_LE(s.request_us, l.avg_us * 1.05 + 50);
    // Relu on a few rows takes microseconds: a median near 40 ms would be
    // Nagle's algorithm meeting delayed ACKs (headers and body sent apart).
    EXPECT_LT(l.p50_us, 30000);
  }

  static fs::path* repo_;
  static ServerCore* core_;
  static HttpFrontend* http_;
  static GrpcFrontend* grpc_;
};

fs::path* LoadGeneratorTest::repo_ = nullptr;
ServerCore* LoadGeneratorTest::core_ = nullptr;
HttpFrontend* LoadGeneratorTest::http_ = nullptr;
GrpcFrontend* LoadGeneratorTest::grpc_ = nullptr;

TEST_F(LoadGeneratorTest, HttpJsonConcurrency) {
  LoadGenerator gen(Options("http"));
  EXPECT_EQ(gen.max_batch_size(), 8);
  ASSERT_EQ(gen.inputs().size(), 1u);
  EXPECT_EQ(gen.inputs()[0].dims, (std::vector<int64_t>{1, 16}));
  const uint64_t before = core_->Stats("relu")->success;
  StepResult r = gen.RunConcurrency(2);
  ExpectConsistent(r, 1);
  // Warm-up and the requests still in flight at the end add to the windows' count.
  EXPECT_GE(core_->Stats("relu")->success - before, r.requests);
}

TEST_F(LoadGeneratorTest, HttpBinaryBatchedConcurrency) {
  LoadOptions o = Options("http");
  o.binary = true;
  o.batch_size = 4;
  LoadGenerator gen(o);
  EXPECT_EQ(gen.inputs()[0].dims, (std::vector<int64_t>{4, 16}));
  ExpectConsistent(gen.RunConcurrency(3), 4);
}

TEST_F(LoadGeneratorTest, GrpcConcurrency) {
  LoadOptions o = Options("grpc");
  o.batch_size = 2;
  LoadGenerator gen(o);
  EXPECT_EQ(gen.max_batch_size(), 8);
  ExpectConsistent(gen.RunConcurrency(1), 2);
  ExpectConsistent(gen.RunConcurrency(4), 2);
}

// Concurrency over gRPC runs asynchronous call chains on shared
// connections: many requests in flight on 2 connections, and one connection
// per client (perf_analyzer's way), both consistent with the server.
TEST_F(LoadGeneratorTest, GrpcHighConcurrencyOnSharedConnections) {
  LoadOptions o = Options("grpc");
  o.grpc_channels = 2;
  LoadGenerator gen(o);
  ExpectConsistent(gen.RunConcurrency(32), 1);
  o.grpc_channels = 8;
  LoadGenerator per_client(o);
  ExpectConsistent(per_client.RunConcurrency(8), 1);
  EXPECT_NE(FormatLoadReport(gen, {}).find("2 connections"), std::string::npos)
      << FormatLoadReport(gen, {});
}

TEST_F(LoadGeneratorTest, RequestRateKeepsItsSchedule) {
  LoadOptions o = Options("grpc");
  o.max_threads = 4;
  o.measurement_interval_ms = 300;
  LoadGenerator gen(o);
  StepResult r = gen.RunRequestRate(100);
  ExpectConsistent(r, 1);
  // A tiny model keeps up with 100 requests/s: the windows see that rate.
  EXPECT_NEAR(r.requests_per_second, 100, 25);
  EXPECT_EQ(r.mode, "request_rate");
}

TEST_F(LoadGeneratorTest, VariableDimsNeedAShape) {
  try {
    LoadGenerator gen(Options("http", "relu_var"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--shape X:"), std::string::npos) << e.what();
  }
  LoadOptions o = Options("http", "relu_var");
  o.shapes["X"] = {5};
  o.batch_size = 2;
  LoadGenerator gen(o);
  EXPECT_EQ(gen.inputs()[0].dims, (std::vector<int64_t>{2, 5}));
  ExpectConsistent(gen.RunConcurrency(1), 2);
  o.shapes["X"] = {5, 5};
  EXPECT_THROW(LoadGenerator{o}, Error);
  o.shapes = {{"nope", {5}}};
  EXPECT_THROW(LoadGenerator{o}, Error);
}

TEST_F(LoadGeneratorTest, ClearErrorsForBadTargets) {
  for (const char* protocol : {"http", "grpc"}) {
    try {
      LoadGenerator gen(Options(protocol, "no_such_model"));
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no_such_model"), std::string::npos) << e.what();
    }
    LoadOptions o = Options(protocol);
    o.batch_size = 9;  // Over max_batch_size 8.
    EXPECT_THROW(LoadGenerator{o}, Error);
  }
  LoadOptions closed = Options("http");
  closed.url = "127.0.0.1:" + std::to_string(FreePort());
  EXPECT_THROW(LoadGenerator{closed}, Error);
}

TEST_F(LoadGeneratorTest, FailedRequestsAreCounted) {
  // A model loaded for the generator's setup, then unloaded: every request
  // fails (gRPC: through the asynchronous client and the callback server).
  for (const std::string protocol : {"http", "grpc"}) {
    SCOPED_TRACE(protocol);
    ASSERT_TRUE(core_->Load("relu_var").ok());
    LoadOptions o = Options(protocol, "relu_var");
    o.shapes["X"] = {3};
    LoadGenerator gen(o);
    ASSERT_TRUE(core_->Unload("relu_var").ok());
    StepResult r = gen.RunConcurrency(protocol == "grpc" ? 4 : 1);
    EXPECT_EQ(r.requests, 0u);
    EXPECT_GT(r.errors, 0u);
    EXPECT_NE(r.first_error.find("relu_var"), std::string::npos) << r.first_error;
    EXPECT_FALSE(r.server.available);
  }
  ASSERT_TRUE(core_->Load("relu_var").ok());
}

TEST_F(LoadGeneratorTest, ReportsTableAndJson) {
  LoadGenerator gen(Options("http"));
  std::vector<StepResult> steps{gen.RunConcurrency(1)};
  const std::string table = FormatLoadReport(gen, steps);
  EXPECT_NE(table.find("Concurrency: 1, throughput:"), std::string::npos) << table;
  EXPECT_NE(table.find("p99 us"), std::string::npos);
  const nlohmann::json doc = nlohmann::json::parse(LoadReportJson(gen, steps));
  EXPECT_EQ(doc["model"], "relu");
  ASSERT_EQ(doc["steps"].size(), 1u);
  EXPECT_EQ(doc["steps"][0]["requests"].get<uint64_t>(), steps[0].requests);
  EXPECT_EQ(doc["steps"][0]["latency_us"]["p99"].get<double>(), steps[0].latency.p99_us);
}

TEST(LoadRangeTest, ParsesPerfAnalyzerRanges) {
  EXPECT_EQ(ParseLoadRange("4", "c"), (std::vector<double>{4}));
  EXPECT_EQ(ParseLoadRange("1:4", "c"), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(ParseLoadRange("1:8:3", "c"), (std::vector<double>{1, 4, 7}));
  EXPECT_EQ(ParseLoadRange("2,16,64", "c"), (std::vector<double>{2, 16, 64}));
  EXPECT_EQ(ParseLoadRange("50.5", "r"), (std::vector<double>{50.5}));
  for (const char* bad : {"", "0", "-1", "a", "4:2", "1:2:3:4", "1,,2", "1:x"})
    EXPECT_THROW(ParseLoadRange(bad, "c"), Error) << bad;
}

}  // namespace
}  // namespace kiln::serve
