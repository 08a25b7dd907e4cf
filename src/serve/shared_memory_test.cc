// Triton's system shared memory extension in kiln serve: the region registry
// of ServerCore, infer requests whose inputs and outputs live in POSIX shared
// memory (core, HTTP and gRPC frontends on loopback, CPU backend), the error
// replies, and `kiln perf --shared-memory system` (the load generator).
#include "serve/serve_test_util.h"
#include "serve/shared_memory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grpc_service.grpc.pb.h"
#include "grpc_service.pb.h"
#include "kiln/error.h"
#include "onnx.pb.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"
#include "serve/load_generator.h"
#include "serve/server_core.h"
#include "test_util.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;
namespace pb = ::inference;
using nlohmann::json;

constexpr int64_t kWidth = 5;

// S = A + B and P = A * B, all float [batch, kWidth].
std::string PairModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("pair");
  for (auto [info, name] : {std::pair{g->add_input(), "A"},
                            {g->add_input(), "B"},
                            {g->add_output(), "S"},
                            {g->add_output(), "P"}}) {
    info->set_name(name);
    auto* t = info->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    t->mutable_shape()->add_dim()->set_dim_value(kWidth);
  }
  for (auto [op, out] : {std::pair{"Add", "S"}, {"Mul", "P"}}) {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->add_input("A");
    n->add_input("B");
    n->add_output(out);
  }
  return m.SerializeAsString();
}

using testing::FreePort;

using testing::ClientRegion;

std::string Key(const std::string& what) {
  return "/kiln_shm_test_" + std::to_string(getpid()) + "_" + what;
}

class SharedMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new fs::path(fs::temp_directory_path() /
                         ("kiln_shared_memory_test_" + std::to_string(getpid())));
    fs::remove_all(*repo_);
    fs::create_directories(*repo_ / "pair" / "1");
    std::ofstream(*repo_ / "pair" / "1" / "model.onnx", std::ios::binary) << PairModel();
    const std::string w = std::to_string(kWidth);
    std::ofstream(*repo_ / "pair" / "config.json") << R"({"name": "pair", "max_batch_size": 8,
      "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": [)" + w + R"(]},
                {"name": "B", "data_type": "TYPE_FP32", "dims": [)" + w + R"(]}],
      "output": [{"name": "S", "data_type": "TYPE_FP32", "dims": [)" + w + R"(]},
                 {"name": "P", "data_type": "TYPE_FP32", "dims": [)" + w + R"(]}],
      "dynamic_batching": {"max_queue_delay_microseconds": 200},
      "instance_group": [{"count": 1, "kind": "KIND_CPU"}]})";
    ServerOptions options;
    options.model_repository = repo_->string();
    core_ = new ServerCore(options);
    http_ = new HttpFrontend(*core_, FreePort(), 0, 16);
    http_->Start();
    grpc_ = new GrpcFrontend(*core_, 0, 64);
    grpc_->Start();
  }
  static void TearDownTestSuite() {
    delete grpc_;
    delete http_;
    delete core_;
    fs::remove_all(*repo_);
    delete repo_;
  }
  void TearDown() override { EXPECT_TRUE(core_->UnregisterSystemSharedMemory("").ok()); }

  static size_t Bytes(int64_t batch) { return static_cast<size_t>(batch * kWidth) * 4; }

  // A plain infer (tensors in the request) as the reference.
  static InferResponse PlainInfer(const Tensor& a, const Tensor& b) {
    InferRequest r;
    r.model = "pair";
    r.inputs = {{"A", a}, {"B", b}};
    return core_->Infer(r);
  }

  static const Tensor& Output(const InferResponse& r, const std::string& name) {
    for (const auto& [n, t] : r.outputs) {
      if (n == name) return t;
    }
    ADD_FAILURE() << "no output " << name;
    static const Tensor none;
    return none;
  }

  // Hand-computed S = A + B and P = A * B.
  static void ExpectPair(const Tensor& a, const Tensor& b, const std::vector<float>& s,
                         const std::vector<float>& p) {
    ASSERT_EQ(s.size(), static_cast<size_t>(a.numel()));
    ASSERT_EQ(p.size(), static_cast<size_t>(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i) {
      EXPECT_EQ(s[static_cast<size_t>(i)], a.data<float>()[i] + b.data<float>()[i]) << i;
      EXPECT_EQ(p[static_cast<size_t>(i)], a.data<float>()[i] * b.data<float>()[i]) << i;
    }
  }

  static std::vector<float> Floats(const Tensor& t) {
    return {t.data<float>(), t.data<float>() + t.numel()};
  }

  static inline fs::path* repo_ = nullptr;
  static inline ServerCore* core_ = nullptr;
  static inline HttpFrontend* http_ = nullptr;
  static inline GrpcFrontend* grpc_ = nullptr;
};

TEST_F(SharedMemoryTest, RegisterStatusUnregister) {
  ClientRegion object(Key("reg"), 4096);
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("first", object.key(), 0, 1024).ok());
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("second", object.key(), 1024, 3072).ok());
  std::vector<SharedMemoryRegionStatus> regions;
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[0].name, "first");
  EXPECT_EQ(regions[0].key, object.key());
  EXPECT_EQ(regions[0].offset, 0u);
  EXPECT_EQ(regions[0].byte_size, 1024u);
  EXPECT_EQ(regions[1].name, "second");
  EXPECT_EQ(regions[1].offset, 1024u);
  EXPECT_EQ(regions[1].byte_size, 3072u);
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("second", &regions).ok());
  ASSERT_EQ(regions.size(), 1u);
  EXPECT_EQ(regions[0].name, "second");

  EXPECT_TRUE(core_->UnregisterSystemSharedMemory("first").ok());
  EXPECT_EQ(core_->SystemSharedMemoryStatus("first", &regions).code, StatusCode::kNotFound);
  EXPECT_TRUE(core_->UnregisterSystemSharedMemory("first").ok());  // Unknown: no error (Triton).
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
  EXPECT_EQ(regions.size(), 1u);
  EXPECT_TRUE(core_->UnregisterSystemSharedMemory("").ok());
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
  EXPECT_TRUE(regions.empty());
  // The name is free again.
  EXPECT_TRUE(core_->RegisterSystemSharedMemory("first", object.key(), 0, 4096).ok());
  const auto extensions = core_->Extensions();
  EXPECT_NE(std::find(extensions.begin(), extensions.end(), "system_shared_memory"),
            extensions.end());
}

TEST_F(SharedMemoryTest, RegisterErrors) {
  ClientRegion object(Key("regerr"), 4096);
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("r", object.key(), 0, 4096).ok());
  Status s = core_->RegisterSystemSharedMemory("r", object.key(), 0, 16);
  EXPECT_EQ(s.code, StatusCode::kBadRequest);
  EXPECT_NE(s.message.find("already registered"), std::string::npos) << s.message;

  s = core_->RegisterSystemSharedMemory("missing", Key("no_such_object"), 0, 16);
  EXPECT_EQ(s.code, StatusCode::kNotFound);
  EXPECT_NE(s.message.find("unable to open"), std::string::npos) << s.message;

  s = core_->RegisterSystemSharedMemory("past_end", object.key(), 4000, 200);
  EXPECT_EQ(s.code, StatusCode::kBadRequest);
  EXPECT_NE(s.message.find("exceeds"), std::string::npos) << s.message;
  s = core_->RegisterSystemSharedMemory("huge_offset", object.key(),
                                        std::numeric_limits<uint64_t>::max() - 2, 16);
  EXPECT_EQ(s.code, StatusCode::kBadRequest) << s.message;
  EXPECT_EQ(core_->RegisterSystemSharedMemory("empty", object.key(), 0, 0).code,
            StatusCode::kBadRequest);
  EXPECT_EQ(core_->RegisterSystemSharedMemory("", object.key(), 0, 16).code, StatusCode::kBadRequest);
  EXPECT_EQ(core_->RegisterSystemSharedMemory("bad_key", "/a/b", 0, 16).code,
            StatusCode::kBadRequest);
  std::vector<SharedMemoryRegionStatus> regions;
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
  EXPECT_EQ(regions.size(), 1u);  // Only "r": the failures registered nothing.
}

// Inputs and outputs in shared memory (at offsets, mixed with a plain input
// and a plain output) give the plain infer's outputs.
TEST_F(SharedMemoryTest, InferThroughSharedMemoryMatchesPlainInfer) {
  const int64_t batch = 3;
  const Tensor a = testing::RandomTensor({batch, kWidth}, -2.f, 2.f, 11);
  const Tensor b = testing::RandomTensor({batch, kWidth}, -2.f, 2.f, 12);
  const InferResponse plain = PlainInfer(a, b);
  ASSERT_TRUE(plain.status.ok()) << plain.status.message;

  ClientRegion object(Key("infer"), 4096);
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("in", object.key(), 0, 1024).ok());
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("out", object.key(), 1024, 1024).ok());
  for (bool all_in_shm : {true, false}) {
    SCOPED_TRACE(all_in_shm ? "all in shared memory" : "mixed");
    object.Write(0, a);
    object.Write(Bytes(batch) + 12, b);  // Offsets need not be aligned to the region's start.
    object.FillNaN(1024, 256);
    InferRequest r;
    r.model = "pair";
    r.shared_memory_inputs.push_back({"A", DType::kFloat32, {batch, kWidth}, {"in", 0, Bytes(batch)}});
    if (all_in_shm) {
      r.shared_memory_inputs.push_back(
          {"B", DType::kFloat32, {batch, kWidth}, {"in", Bytes(batch) + 12, Bytes(batch)}});
    } else {
      r.inputs.emplace_back("B", b);
    }
    r.requested_outputs = {"S", "P"};
    r.shared_memory_outputs.emplace_back("S", SharedMemoryRef{"out", 100, 200});
    if (all_in_shm) r.shared_memory_outputs.emplace_back("P", SharedMemoryRef{"out", 400, Bytes(batch)});
    const InferResponse shm = core_->Infer(r);
    ASSERT_TRUE(shm.status.ok()) << shm.status.message;
    ASSERT_EQ(shm.shared_memory_outputs.size(), all_in_shm ? 2u : 1u);
    EXPECT_EQ(shm.shared_memory_outputs.at("S").region, "out");
    EXPECT_EQ(shm.shared_memory_outputs.at("S").offset, 100u);
    EXPECT_EQ(shm.shared_memory_outputs.at("S").byte_size, 200u);
    EXPECT_EQ(Output(shm, "S").dims(), (std::vector<int64_t>{batch, kWidth}));
    const std::vector<float> s = object.Floats(1024 + 100, static_cast<size_t>(batch * kWidth));
    const std::vector<float> p = all_in_shm ? object.Floats(1024 + 400, static_cast<size_t>(batch * kWidth))
                                            : Floats(Output(shm, "P"));
    EXPECT_EQ(s, Floats(Output(plain, "S")));
    EXPECT_EQ(p, Floats(Output(plain, "P")));
    ExpectPair(a, b, s, p);
    // Nothing written past the output's bytes.
    EXPECT_TRUE(std::isnan(object.Floats(1024 + 100 + Bytes(batch), 1)[0]));
  }
}

TEST_F(SharedMemoryTest, InferErrorsKeepServing) {
  const Tensor a = testing::RandomTensor({2, kWidth}, -1.f, 1.f, 21);
  const Tensor b = testing::RandomTensor({2, kWidth}, -1.f, 1.f, 22);
  ClientRegion object(Key("errors"), 1024);
  object.Write(0, a);
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("in", object.key(), 0, 512).ok());
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("out", object.key(), 512, 512).ok());
  auto request = [&](SharedMemoryRef in_ref, std::optional<SharedMemoryRef> out_ref) {
    InferRequest r;
    r.model = "pair";
    r.shared_memory_inputs.push_back({"A", DType::kFloat32, {2, kWidth}, in_ref});
    r.inputs.emplace_back("B", b);
    if (out_ref) {
      r.requested_outputs = {"S"};
      r.shared_memory_outputs.emplace_back("S", *out_ref);
    }
    return core_->Infer(r);
  };
  const uint64_t size = Bytes(2);
  InferResponse r = request({"nope", 0, size}, std::nullopt);
  EXPECT_EQ(r.status.code, StatusCode::kNotFound);
  EXPECT_NE(r.status.message.find("'nope'"), std::string::npos) << r.status.message;
  r = request({"in", 0, size - 4}, std::nullopt);  // byte_size does not match the shape.
  EXPECT_EQ(r.status.code, StatusCode::kBadRequest);
  EXPECT_NE(r.status.message.find("shared_memory_byte_size"), std::string::npos) << r.status.message;
  r = request({"in", 480, size}, std::nullopt);  // Past the region's end.
  EXPECT_EQ(r.status.code, StatusCode::kBadRequest);
  EXPECT_NE(r.status.message.find("outside shared memory region 'in'"), std::string::npos)
      << r.status.message;
  r = request({"in", 0, size}, SharedMemoryRef{"out", 600, 16});  // Output window past the end.
  EXPECT_EQ(r.status.code, StatusCode::kBadRequest) << r.status.message;
  r = request({"in", 0, size}, SharedMemoryRef{"out", 0, size - 1});  // Output region too small.
  EXPECT_EQ(r.status.code, StatusCode::kBadRequest);
  EXPECT_NE(r.status.message.find("should be at least " + std::to_string(size)), std::string::npos)
      << r.status.message;
  r = request({"in", 0, size}, SharedMemoryRef{"missing", 0, size});
  EXPECT_EQ(r.status.code, StatusCode::kNotFound) << r.status.message;
  // Still serving, and the good request is right.
  object.FillNaN(512, 10);
  r = request({"in", 0, size}, SharedMemoryRef{"out", 0, size});
  ASSERT_TRUE(r.status.ok()) << r.status.message;
  const std::vector<float> s = object.Floats(512, 10);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(s[i], a.data<float>()[i] + b.data<float>()[i]);
}

// Unregistering every region while requests that use them are queued: they
// still read and write the mapping, which lives until they are answered.
TEST_F(SharedMemoryTest, UnregisterWhileInFlight) {
  const Tensor a = testing::RandomTensor({1, kWidth}, -1.f, 1.f, 31);
  const Tensor b = testing::RandomTensor({1, kWidth}, -1.f, 1.f, 32);
  ClientRegion object(Key("inflight"), 8192);
  object.Write(0, a);
  object.Write(64, b);
  object.FillNaN(4096, 1024);
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("in", object.key(), 0, 4096).ok());
  ASSERT_TRUE(core_->RegisterSystemSharedMemory("out", object.key(), 4096, 4096).ok());
  constexpr int kRequests = 16;
  std::vector<std::future<InferResponse>> futures;
  for (int i = 0; i < kRequests; ++i) {
    InferRequest r;
    r.model = "pair";
    r.shared_memory_inputs.push_back({"A", DType::kFloat32, {1, kWidth}, {"in", 0, Bytes(1)}});
    r.shared_memory_inputs.push_back({"B", DType::kFloat32, {1, kWidth}, {"in", 64, Bytes(1)}});
    r.requested_outputs = {"S", "P"};
    r.shared_memory_outputs.emplace_back("S", SharedMemoryRef{"out", static_cast<uint64_t>(i) * 64, 20});
    r.shared_memory_outputs.emplace_back("P", SharedMemoryRef{"out", 2048 + static_cast<uint64_t>(i) * 64, 20});
    auto promise = std::make_shared<std::promise<InferResponse>>();
    futures.push_back(promise->get_future());
    core_->InferAsync(std::move(r), [promise](InferResponse resp) { promise->set_value(std::move(resp)); });
  }
  ASSERT_TRUE(core_->UnregisterSystemSharedMemory("").ok());
  for (int i = 0; i < kRequests; ++i) {
    const InferResponse r = futures[static_cast<size_t>(i)].get();
    ASSERT_TRUE(r.status.ok()) << r.status.message;
    ExpectPair(a, b, object.Floats(4096 + static_cast<size_t>(i) * 64, kWidth),
               object.Floats(4096 + 2048 + static_cast<size_t>(i) * 64, kWidth));
  }
  // New requests no longer find the regions.
  InferRequest late;
  late.model = "pair";
  late.shared_memory_inputs.push_back({"A", DType::kFloat32, {1, kWidth}, {"in", 0, Bytes(1)}});
  late.inputs.emplace_back("B", b);
  EXPECT_EQ(core_->Infer(late).status.code, StatusCode::kNotFound);
}

TEST_F(SharedMemoryTest, Http) {
  httplib::Client client("127.0.0.1", http_->port());
  auto post = [&](const std::string& path, const json& body) {
    auto res = client.Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res);
    return std::pair<int, std::string>(res ? res->status : 0, res ? res->body : "");
  };
  const int64_t batch = 2;
  const Tensor a = testing::RandomTensor({batch, kWidth}, -1.f, 1.f, 41);
  const Tensor b = testing::RandomTensor({batch, kWidth}, -1.f, 1.f, 42);
  ClientRegion object(Key("http"), 2048);
  object.Write(0, a);
  object.Write(Bytes(batch), b);
  object.FillNaN(1024, 256);

  EXPECT_EQ(post("/v2/systemsharedmemory/region/in/register",
                 {{"key", object.key()}, {"offset", 0}, {"byte_size", 1024}})
                .first,
            200);
  EXPECT_EQ(post("/v2/systemsharedmemory/region/out/register",
                 {{"key", object.key()}, {"offset", 1024}, {"byte_size", 1024}})
                .first,
            200);
  auto [dup_status, dup_body] = post("/v2/systemsharedmemory/region/in/register",
                                     {{"key", object.key()}, {"offset", 0}, {"byte_size", 8}});
  EXPECT_EQ(dup_status, 400);
  EXPECT_NE(json::parse(dup_body).at("error").get<std::string>().find("already registered"),
            std::string::npos);
  EXPECT_EQ(post("/v2/systemsharedmemory/region/x/register",
                 {{"key", Key("absent")}, {"offset", 0}, {"byte_size", 8}})
                .first,
            404);
  EXPECT_EQ(post("/v2/systemsharedmemory/region/x/register", {{"offset", 0}}).first, 400);

  auto status = client.Get("/v2/systemsharedmemory/status");
  ASSERT_TRUE(status);
  ASSERT_EQ(status->status, 200);
  const json regions = json::parse(status->body);
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[0], (json{{"name", "in"}, {"key", object.key()}, {"offset", 0}, {"byte_size", 1024}}));
  auto one = client.Get("/v2/systemsharedmemory/region/out/status");
  ASSERT_TRUE(one);
  EXPECT_EQ(json::parse(one->body).at(0).at("offset"), 1024);
  auto unknown = client.Get("/v2/systemsharedmemory/region/nope/status");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_TRUE(json::parse(unknown->body).contains("error"));

  const json request = {
      {"inputs",
       {{{"name", "A"}, {"datatype", "FP32"}, {"shape", {batch, kWidth}},
         {"parameters", {{"shared_memory_region", "in"}, {"shared_memory_byte_size", Bytes(batch)}}}},
        {{"name", "B"}, {"datatype", "FP32"}, {"shape", {batch, kWidth}},
         {"parameters",
          {{"shared_memory_region", "in"},
           {"shared_memory_byte_size", Bytes(batch)},
           {"shared_memory_offset", Bytes(batch)}}}}}},
      {"outputs",
       {{{"name", "S"},
         {"parameters",
          {{"shared_memory_region", "out"}, {"shared_memory_byte_size", 512}, {"shared_memory_offset", 64}}}},
        {{"name", "P"}}}}};
  auto [infer_status, infer_body] = post("/v2/models/pair/infer", request);
  ASSERT_EQ(infer_status, 200) << infer_body;
  const json reply = json::parse(infer_body);
  const json& s_out = reply.at("outputs").at(0);
  EXPECT_EQ(s_out.at("name"), "S");
  EXPECT_FALSE(s_out.contains("data"));
  EXPECT_EQ(s_out.at("shape"), (json{batch, kWidth}));
  EXPECT_FALSE(s_out.contains("parameters"));  // As Triton: perf_analyzer needs that.
  const std::vector<float> p = reply.at("outputs").at(1).at("data").get<std::vector<float>>();
  ExpectPair(a, b, object.Floats(1024 + 64, static_cast<size_t>(batch * kWidth)), p);

  // Errors answer {"error": ...} and the server keeps serving.
  json bad = request;
  bad["inputs"][0]["parameters"]["shared_memory_byte_size"] = 4;
  auto [bad_status, bad_body] = post("/v2/models/pair/infer", bad);
  EXPECT_EQ(bad_status, 400);
  EXPECT_TRUE(json::parse(bad_body).contains("error"));
  bad = request;
  bad["inputs"][0]["parameters"]["shared_memory_region"] = "unknown_region";
  EXPECT_EQ(post("/v2/models/pair/infer", bad).first, 404);
  bad = request;
  bad["inputs"][0]["parameters"].erase("shared_memory_byte_size");
  EXPECT_EQ(post("/v2/models/pair/infer", bad).first, 400);

  // CUDA shared memory: nothing to list or unregister, register refused.
  auto cuda = client.Get("/v2/cudasharedmemory/status");
  ASSERT_TRUE(cuda);
  EXPECT_EQ(cuda->status, 200);
  EXPECT_EQ(json::parse(cuda->body), json::array());
  EXPECT_EQ(post("/v2/cudasharedmemory/unregister", json::object()).first, 200);
  auto [cuda_status, cuda_body] = post("/v2/cudasharedmemory/region/c/register",
                                       {{"raw_handle", {{"b64", "AAAA"}}}, {"device_id", 0}, {"byte_size", 8}});
  EXPECT_EQ(cuda_status, 400);
  EXPECT_NE(json::parse(cuda_body).at("error").get<std::string>().find("not supported"),
            std::string::npos);

  EXPECT_EQ(post("/v2/systemsharedmemory/region/in/unregister", json::object()).first, 200);
  EXPECT_EQ(post("/v2/systemsharedmemory/unregister", json::object()).first, 200);
  auto empty = client.Get("/v2/systemsharedmemory/status");
  ASSERT_TRUE(empty);
  EXPECT_EQ(json::parse(empty->body), json::array());
}

TEST_F(SharedMemoryTest, Grpc) {
  auto stub = pb::GRPCInferenceService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(grpc_->port()), grpc::InsecureChannelCredentials()));
  const int64_t batch = 4;
  const Tensor a = testing::RandomTensor({batch, kWidth}, -1.f, 1.f, 51);
  const Tensor b = testing::RandomTensor({batch, kWidth}, -1.f, 1.f, 52);
  ClientRegion object(Key("grpc"), 2048);
  object.Write(256, a);
  object.FillNaN(1024, 256);

  auto register_region = [&](const std::string& name, uint64_t offset, uint64_t size) {
    grpc::ClientContext context;
    pb::SystemSharedMemoryRegisterRequest request;
    request.set_name(name);
    request.set_key(object.key());
    request.set_offset(offset);
    request.set_byte_size(size);
    pb::SystemSharedMemoryRegisterResponse response;
    return stub->SystemSharedMemoryRegister(&context, request, &response);
  };
  ASSERT_TRUE(register_region("in", 256, 512).ok());
  ASSERT_TRUE(register_region("out", 1024, 1024).ok());
  EXPECT_EQ(register_region("in", 0, 8).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext context;
    pb::SystemSharedMemoryStatusRequest request;
    pb::SystemSharedMemoryStatusResponse response;
    ASSERT_TRUE(stub->SystemSharedMemoryStatus(&context, request, &response).ok());
    ASSERT_EQ(response.regions_size(), 2);
    const auto& in = response.regions().at("in");
    EXPECT_EQ(in.name(), "in");
    EXPECT_EQ(in.key(), object.key());
    EXPECT_EQ(in.offset(), 256u);
    EXPECT_EQ(in.byte_size(), 512u);
  }
  {
    grpc::ClientContext context;
    pb::SystemSharedMemoryStatusRequest request;
    request.set_name("nope");
    pb::SystemSharedMemoryStatusResponse response;
    EXPECT_EQ(stub->SystemSharedMemoryStatus(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }

  // A (shm) and B (raw) in; P (shm, first) and S (raw) out: raw_input_contents
  // holds only B, raw_output_contents one entry per output.
  pb::ModelInferRequest request;
  request.set_model_name("pair");
  auto* in_a = request.add_inputs();
  in_a->set_name("A");
  in_a->set_datatype("FP32");
  in_a->add_shape(batch);
  in_a->add_shape(kWidth);
  (*in_a->mutable_parameters())["shared_memory_region"].set_string_param("in");
  (*in_a->mutable_parameters())["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(Bytes(batch)));
  auto* in_b = request.add_inputs();
  in_b->set_name("B");
  in_b->set_datatype("FP32");
  in_b->add_shape(batch);
  in_b->add_shape(kWidth);
  request.add_raw_input_contents(static_cast<const char*>(b.raw_data()), b.nbytes());
  auto* out_p = request.add_outputs();
  out_p->set_name("P");
  (*out_p->mutable_parameters())["shared_memory_region"].set_string_param("out");
  (*out_p->mutable_parameters())["shared_memory_byte_size"].set_int64_param(1000);
  (*out_p->mutable_parameters())["shared_memory_offset"].set_int64_param(8);
  request.add_outputs()->set_name("S");
  pb::ModelInferResponse response;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub->ModelInfer(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  ASSERT_EQ(response.outputs_size(), 2);
  ASSERT_EQ(response.raw_output_contents_size(), 2);
  std::vector<float> s, p;
  for (int i = 0; i < 2; ++i) {
    const auto& out = response.outputs(i);
    EXPECT_EQ(out.shape_size(), 2);
    if (out.name() == "P") {
      EXPECT_TRUE(response.raw_output_contents(i).empty());
      EXPECT_EQ(out.parameters().at("shared_memory_region").string_param(), "out");
      EXPECT_EQ(out.parameters().at("shared_memory_byte_size").int64_param(), 1000);
      EXPECT_EQ(out.parameters().at("shared_memory_offset").int64_param(), 8);
      p = object.Floats(1024 + 8, static_cast<size_t>(batch * kWidth));
    } else {
      ASSERT_EQ(response.raw_output_contents(i).size(), Bytes(batch));
      s.resize(static_cast<size_t>(batch * kWidth));
      std::memcpy(s.data(), response.raw_output_contents(i).data(), Bytes(batch));
    }
  }
  ExpectPair(a, b, s, p);

  // Errors: unknown region, wrong byte size, raw count that ignores shm.
  pb::ModelInferRequest bad = request;
  (*bad.mutable_inputs(0)->mutable_parameters())["shared_memory_region"].set_string_param("zzz");
  {
    grpc::ClientContext context;
    EXPECT_EQ(stub->ModelInfer(&context, bad, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  bad = request;
  (*bad.mutable_inputs(0)->mutable_parameters())["shared_memory_byte_size"].set_int64_param(3);
  {
    grpc::ClientContext context;
    EXPECT_EQ(stub->ModelInfer(&context, bad, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  bad = request;
  bad.add_raw_input_contents(static_cast<const char*>(a.raw_data()), a.nbytes());
  {
    grpc::ClientContext context;
    EXPECT_EQ(stub->ModelInfer(&context, bad, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }

  // CUDA shared memory: register refused, status lists nothing, unregister succeeds.
  {
    grpc::ClientContext context;
    pb::CudaSharedMemoryRegisterRequest cuda;
    cuda.set_name("c");
    cuda.set_byte_size(8);
    pb::CudaSharedMemoryRegisterResponse cuda_response;
    const grpc::Status st = stub->CudaSharedMemoryRegister(&context, cuda, &cuda_response);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_NE(st.error_message().find("not supported"), std::string::npos);
  }
  {
    grpc::ClientContext context;
    pb::CudaSharedMemoryStatusRequest cuda;
    pb::CudaSharedMemoryStatusResponse cuda_response;
    EXPECT_TRUE(stub->CudaSharedMemoryStatus(&context, cuda, &cuda_response).ok());
    EXPECT_EQ(cuda_response.regions_size(), 0);
  }
  {
    grpc::ClientContext context;
    pb::CudaSharedMemoryUnregisterRequest cuda;
    pb::CudaSharedMemoryUnregisterResponse cuda_response;
    EXPECT_TRUE(stub->CudaSharedMemoryUnregister(&context, cuda, &cuda_response).ok());
  }
  {
    grpc::ClientContext context;
    pb::SystemSharedMemoryUnregisterRequest unregister;
    pb::SystemSharedMemoryUnregisterResponse unregister_response;
    EXPECT_TRUE(stub->SystemSharedMemoryUnregister(&context, unregister, &unregister_response).ok());
  }
  std::vector<SharedMemoryRegionStatus> regions;
  ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
  EXPECT_TRUE(regions.empty());
}

// kiln perf --shared-memory system: every sender registers its own regions,
// no request fails, and everything is unregistered and unlinked afterwards.
TEST_F(SharedMemoryTest, LoadGeneratorSharedMemory) {
  for (const std::string protocol : {"http", "grpc"}) {
    SCOPED_TRACE(protocol);
    LoadOptions o;
    o.protocol = protocol;
    o.url = "127.0.0.1:" + std::to_string(protocol == "grpc" ? grpc_->port() : http_->port());
    o.model = "pair";
    o.batch_size = 2;
    o.shared_memory = "system";
    o.measurement_interval_ms = 100;
    o.warmup_ms = 30;
    o.max_trials = 3;
    const uint64_t before = core_->Stats("pair")->success;
    {
      LoadGenerator generator(o);
      const StepResult r = generator.RunConcurrency(3);
      EXPECT_GT(r.requests, 0u);
      EXPECT_EQ(r.errors, 0u) << r.first_error;
      EXPECT_GE(core_->Stats("pair")->success - before, r.requests);
      EXPECT_NE(FormatLoadReport(generator, {r}).find("system shared memory"), std::string::npos);
    }
    std::vector<SharedMemoryRegionStatus> regions;
    ASSERT_TRUE(core_->SystemSharedMemoryStatus("", &regions).ok());
    EXPECT_TRUE(regions.empty()) << regions.size() << " regions left, first " << regions[0].name;
    // Every object was unlinked (registration needs its name only once).
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/dev/shm", ec)) {
      EXPECT_EQ(entry.path().filename().string().rfind(
                    "kiln_perf_" + std::to_string(getpid()) + "_", 0),
                std::string::npos)
          << entry.path();
    }
  }
  LoadOptions bad;
  bad.model = "pair";
  bad.shared_memory = "cuda";
  EXPECT_THROW(LoadGenerator{bad}, Error);
}

}  // namespace
}  // namespace kiln::serve
