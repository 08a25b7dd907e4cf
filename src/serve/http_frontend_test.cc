// The HTTP frontend against a real ServerCore on loopback (cpp-httplib client),
// and the KServe JSON layer on its own. The full tritonclient suite runs from
// scripts/serve-test (tests/serve/test_http_client.py).
#include "serve/serve_test_util.h"
#include "serve/http_frontend.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "onnx.pb.h"
#include "serve/kserve_json.h"

namespace kiln::serve {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// ---- The JSON layer ----

TEST(KServeJsonTest, ParsesNestedJsonData) {
  std::string body = R"({"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32",
      "data":[[1,2],[3.5,-4]]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}],
      "parameters":{"binary_data_output":false,"timeout":1500}})";
  ParsedInferRequest p = ParseInferRequest(body, std::nullopt, "m", "");
  EXPECT_EQ(p.request.model, "m");
  EXPECT_EQ(p.request.id, "a");
  EXPECT_EQ(p.request.timeout_us, 1500);
  ASSERT_EQ(p.request.inputs.size(), 1u);
  const Tensor& t = p.request.inputs[0].second;
  EXPECT_EQ(t.dims(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.ToFloatVector(), (std::vector<float>{1, 2, 3.5f, -4}));
  EXPECT_EQ(p.request.requested_outputs, (std::vector<std::string>{"y"}));
  EXPECT_TRUE(p.format.BinaryFor("y"));
  EXPECT_FALSE(p.format.BinaryFor("z"));
}

TEST(KServeJsonTest, ParsesBinaryInputsInOrder) {
  std::string header = R"({"inputs":[
      {"name":"a","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
      {"name":"b","shape":[1],"datatype":"BOOL","data":[true]},
      {"name":"c","shape":[1],"datatype":"FP64","parameters":{"binary_data_size":8}}]})";
  int32_t a[2] = {7, -9};
  double c = 2.25;
  std::string body = header;
  body.append(reinterpret_cast<const char*>(a), sizeof(a));
  body.append(reinterpret_cast<const char*>(&c), sizeof(c));
  ParsedInferRequest p = ParseInferRequest(body, header.size(), "m", "1");
  ASSERT_EQ(p.request.inputs.size(), 3u);
  EXPECT_EQ(p.request.inputs[0].second.ToInt64Vector(), (std::vector<int64_t>{7, -9}));
  EXPECT_EQ(p.request.inputs[1].second.dtype(), DType::kBool);
  EXPECT_EQ(p.request.inputs[2].second.GetAsDouble(0), 2.25);
}

TEST(KServeJsonTest, RejectsBadRequestsWithClearMessages) {
  auto error = [](const std::string& body, std::optional<size_t> header = std::nullopt) {
    try {
      ParseInferRequest(body, header, "m", "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error("{oops").find("malformed JSON"), std::string::npos);
  EXPECT_NE(error(R"({"inputs":[]})").find("non-empty \"inputs\""), std::string::npos);
  EXPECT_NE(error(R"({"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]})")
                .find("has 2 elements but shape [3] needs 3"),
            std::string::npos);
  EXPECT_NE(error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]})")
                .find("out of range"),
            std::string::npos);
  EXPECT_NE(error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]})")
                .find("expected an integer"),
            std::string::npos);
  EXPECT_NE(error(R"({"inputs":[{"name":"x","shape":[1],"datatype":"STR","data":[1]}]})")
                .find("unknown datatype 'STR'"),
            std::string::npos);
  std::string h = R"({"inputs":[{"name":"x","shape":[2],"datatype":"FP32",)"
                  R"("parameters":{"binary_data_size":8}}]})";
  EXPECT_NE(error(h + "abcd", h.size()).find("only 4 bytes"), std::string::npos);
  EXPECT_NE(error(h + "abcdefgh!", h.size()).find("1 bytes of binary data that no input claims"),
            std::string::npos);
  EXPECT_NE(error("{}", 100).find("Inference-Header-Content-Length is 100"), std::string::npos);
}

TEST(KServeJsonTest, FormatsJsonAndBinaryOutputs) {
  InferResponse r;
  r.model = "m";
  r.version = "1";
  r.id = "q";
  r.outputs.emplace_back("y", Tensor::FromFloats({2}, {1.5f, -2.f}));
  r.outputs.emplace_back("i", Tensor::FromInt64s({1}, {42}));
  OutputFormat format;
  format.requested = {{"y", true}, {"i", std::nullopt}};
  FormattedResponse f = FormatInferResponse(r, format);
  ASSERT_TRUE(f.binary);
  json doc = json::parse(f.body.substr(0, f.header_length));
  EXPECT_EQ(doc["id"], "q");
  EXPECT_EQ(doc["outputs"][0]["parameters"]["binary_data_size"], 8);
  EXPECT_EQ(doc["outputs"][1]["data"], json::array({42}));
  ASSERT_EQ(f.body.size(), f.header_length + 8);
  float y[2];
  std::memcpy(y, f.body.data() + f.header_length, 8);
  EXPECT_EQ(y[0], 1.5f);
  EXPECT_EQ(y[1], -2.f);
}

// ---- The frontend over a real core ----

void AddValueInfo(onnx::ValueInfoProto* info, const std::string& name) {
  info->set_name(name);
  auto* t = info->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  t->mutable_shape()->add_dim()->set_dim_param("batch");
  t->mutable_shape()->add_dim()->set_dim_value(4);
}

// DIR/relu/{config.json,1/model.onnx}: Y = Relu(X), X float [batch, 4].
void WriteRepository(const fs::path& dir) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("relu");
  AddValueInfo(g->add_input(), "X");
  AddValueInfo(g->add_output(), "Y");
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->add_input("X");
  n->add_output("Y");
  fs::create_directories(dir / "relu" / "1");
  std::ofstream(dir / "relu" / "1" / "model.onnx", std::ios::binary) << m.SerializeAsString();
  std::ofstream(dir / "relu" / "config.json") << R"({"name": "relu", "max_batch_size": 4,
      "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
      "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}],
      "dynamic_batching": {"max_queue_delay_microseconds": 1000},
      "instance_group": [{"count": 1, "kind": "KIND_CPU"}]})";
}

using testing::FreePort;

class HttpFrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_http_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    WriteRepository(dir_);
    ServerOptions options;
    options.model_repository = dir_.string();
    options.max_request_bytes = 64 << 10;
    core_ = std::make_unique<ServerCore>(options);
    ASSERT_TRUE(core_->ModelReady("relu"));
    int port = FreePort(), metrics = FreePort();
    ASSERT_GT(port, 0);
    frontend_ = std::make_unique<HttpFrontend>(*core_, port, metrics);
    frontend_->Start();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", frontend_->port());
    client_->set_read_timeout(10, 0);
  }
  void TearDown() override {
    client_.reset();
    if (frontend_) frontend_->Stop();
    frontend_.reset();
    core_.reset();
    fs::remove_all(dir_);
  }

  // status, parsed JSON body (null when the body is not JSON).
  std::pair<int, json> Post(const std::string& path, const std::string& body,
                            const httplib::Headers& headers = {}) {
    auto res = client_->Post(path.c_str(), headers, body, "application/json");
    if (!res) return {-1, nullptr};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  std::pair<int, json> Get(const std::string& path) {
    auto res = client_->Get(path.c_str());
    if (!res) return {-1, nullptr};
    return {res->status, json::parse(res->body, nullptr, false)};
  }

  fs::path dir_;
  std::unique_ptr<ServerCore> core_;
  std::unique_ptr<HttpFrontend> frontend_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpFrontendTest, HealthAndMetadata) {
  EXPECT_EQ(Get("/v2/health/live").first, 200);
  EXPECT_EQ(Get("/v2/health/ready").first, 200);
  auto [status, server] = Get("/v2");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(server["name"], "kiln");
  auto [s2, md] = Get("/v2/models/relu");
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(md["inputs"][0]["shape"], json::array({-1, 4}));
  EXPECT_EQ(md["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(md["versions"], json::array({"1"}));
  EXPECT_EQ(Get("/v2/models/relu/versions/1/ready").first, 200);
  EXPECT_EQ(Get("/v2/models/relu/versions/7/ready").first, 400);
  auto [s3, config] = Get("/v2/models/relu/config");
  ASSERT_EQ(s3, 200);
  EXPECT_EQ(config["max_batch_size"], 4);
  EXPECT_EQ(config["input"][0]["data_type"], "TYPE_FP32");
  auto [s4, err] = Get("/v2/models/nope");
  EXPECT_EQ(s4, 404);
  EXPECT_NE(err["error"].get<std::string>().find("nope"), std::string::npos);
}

TEST_F(HttpFrontendTest, InfersJsonAndBinary) {
  auto [status, doc] = Post("/v2/models/relu/infer",
                            R"({"id":"7","inputs":[{"name":"X","shape":[1,4],"datatype":"FP32",)"
                            R"("data":[1,-2,3,-4]}]})");
  ASSERT_EQ(status, 200) << doc.dump();
  EXPECT_EQ(doc["id"], "7");
  EXPECT_EQ(doc["outputs"][0]["name"], "Y");
  EXPECT_EQ(doc["outputs"][0]["data"], json::array({1.0, 0.0, 3.0, 0.0}));

  std::string header = R"({"inputs":[{"name":"X","shape":[2,4],"datatype":"FP32",)"
                       R"("parameters":{"binary_data_size":32}}],"parameters":{"binary_data_output":true}})";
  float x[8] = {-1, 2, -3, 4, 5, -6, 7, -8};
  std::string body = header + std::string(reinterpret_cast<const char*>(x), sizeof(x));
  auto res = client_->Post("/v2/models/relu/infer",
                           {{"Inference-Header-Content-Length", std::to_string(header.size())}},
                           body, "application/octet-stream");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  size_t n = std::stoul(res->get_header_value("Inference-Header-Content-Length"));
  json reply = json::parse(res->body.substr(0, n));
  EXPECT_EQ(reply["outputs"][0]["parameters"]["binary_data_size"], 32);
  ASSERT_EQ(res->body.size(), n + 32);
  float y[8];
  std::memcpy(y, res->body.data() + n, 32);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], x[i] > 0 ? x[i] : 0.f);
}

TEST_F(HttpFrontendTest, ErrorsKeepTheServerServing) {
  EXPECT_EQ(Post("/v2/models/relu/infer", "{not json").first, 400);
  EXPECT_EQ(Post("/v2/models/relu/infer",
                 R"({"inputs":[{"name":"X","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]})")
                .first,
            400);
  EXPECT_EQ(Post("/v2/models/relu/infer",
                 R"({"inputs":[{"name":"X","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]})")
                .first,
            400);
  auto [s, err] = Post("/v2/models/nope/infer",
                       R"({"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})");
  EXPECT_EQ(s, 404);
  EXPECT_TRUE(err.contains("error"));
  auto [s2, err2] = Post("/v2/models/relu/infer", std::string(100 << 10, ' '));
  EXPECT_EQ(s2, 413);
  EXPECT_NE(err2["error"].get<std::string>().find("exceeds"), std::string::npos) << err2.dump();
  auto [s3, err3] = Get("/v2/no/such/thing");
  EXPECT_EQ(s3, 404);
  EXPECT_TRUE(err3.contains("error"));
  EXPECT_EQ(Get("/v2/health/ready").first, 200);
}

TEST_F(HttpFrontendTest, StatisticsRepositoryAndMetrics) {
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([this] {
      httplib::Client c("127.0.0.1", frontend_->port());
      auto res = c.Post("/v2/models/relu/infer",
                        R"({"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})",
                        "application/json");
      EXPECT_TRUE(res && res->status == 200);
    });
  }
  for (auto& t : threads) t.join();
  auto [s, stats] = Get("/v2/models/relu/stats");
  ASSERT_EQ(s, 200);
  EXPECT_EQ(stats["model_stats"][0]["inference_count"], 4);
  EXPECT_EQ(stats["model_stats"][0]["inference_stats"]["success"]["count"], 4);
  EXPECT_EQ(Get("/v2/models/stats").second["model_stats"].size(), 1u);
  // The durations are the core's measured ones, not zeros.
  const ModelStats core_stats = *core_->Stats("relu");
  const json& is = stats["model_stats"][0]["inference_stats"];
  EXPECT_EQ(is["success"]["ns"], core_stats.success_ns);
  EXPECT_GT(core_stats.success_ns, 0u);
  uint64_t parts = 0;
  for (const char* part : {"queue", "compute_input", "compute_infer", "compute_output"}) {
    EXPECT_EQ(is[part]["count"], 4) << part;
    parts += is[part]["ns"].get<uint64_t>();
  }
  EXPECT_GT(is["compute_infer"]["ns"].get<uint64_t>(), 0u);
  EXPECT_LE(parts, core_stats.success_ns);
  uint64_t executions = 0, rows = 0;
  for (const json& b : stats["model_stats"][0]["batch_stats"]) {
    const int size = b["batch_size"];
    ASSERT_TRUE(core_stats.batch_stats.count(size)) << size;
    const BatchStats& expected = core_stats.batch_stats.at(size);
    EXPECT_EQ(b["compute_infer"]["count"], expected.executions);
    EXPECT_EQ(b["compute_infer"]["ns"], expected.compute_infer_ns);
    EXPECT_EQ(b["compute_input"]["ns"], expected.compute_input_ns);
    EXPECT_EQ(b["compute_output"]["ns"], expected.compute_output_ns);
    EXPECT_GT(expected.compute_infer_ns, 0u);
    executions += expected.executions;
    rows += expected.executions * static_cast<uint64_t>(size);
  }
  EXPECT_EQ(executions, stats["model_stats"][0]["execution_count"].get<uint64_t>());
  EXPECT_EQ(rows, 4u);

  auto [s2, index] = Post("/v2/repository/index", "");
  ASSERT_EQ(s2, 200);
  EXPECT_EQ(index[0]["name"], "relu");
  EXPECT_EQ(index[0]["state"], "READY");
  EXPECT_EQ(Post("/v2/repository/models/relu/unload", "").first, 200);
  EXPECT_EQ(Get("/v2/models/relu/ready").first, 400);
  EXPECT_EQ(Post("/v2/repository/models/relu/load", "{}").first, 200);
  EXPECT_EQ(Get("/v2/models/relu/ready").first, 200);
  EXPECT_EQ(Post("/v2/repository/models/nope/load", "").first, 404);
  EXPECT_EQ(Post("/v2/models/relu/infer",
                 R"({"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]})")
                .first,
            200);

  httplib::Client metrics("127.0.0.1", frontend_->metrics_port());
  auto res = metrics.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  // The metrics use the same durations (in microseconds). relu was reloaded
  // above, so its counters started over (one request since).
  const ModelStats now = *core_->Stats("relu");
  EXPECT_EQ(now.success, 1u);
  const std::string labels = "{model=\"relu\",version=\"1\"} ";
  EXPECT_NE(res->body.find("nv_inference_compute_infer_duration_us" + labels +
                           std::to_string(now.compute_infer_ns / 1000) + "\n"),
            std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("nv_inference_queue_duration_us" + labels +
                           std::to_string(now.queue_ns / 1000) + "\n"),
            std::string::npos);
}

TEST_F(HttpFrontendTest, PortInUseIsAClearError) {
  HttpFrontend second(*core_, frontend_->port(), 0);
  try {
    second.Start();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(frontend_->port())), std::string::npos);
  }
}

}  // namespace
}  // namespace kiln::serve
