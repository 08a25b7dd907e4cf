#include "serve/load_generator.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "grpc_service.grpc.pb.h"
#include "grpc_service.pb.h"
#include "kiln/error.h"
#include "serve/in_flight.h"

namespace kiln::serve {
namespace {

namespace pb = ::inference;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kBinaryHeader = "Inference-Header-Content-Length";
// A send this late after its request-rate slot counts as delayed.
constexpr auto kDelayedAfter = std::chrono::milliseconds(1);
// Windows whose agreement makes a step stable.
constexpr size_t kStableWindows = 3;
// Default connections of the gRPC clients (LoadOptions::grpc_channels): one
// HTTP/2 connection multiplexes any number of calls, but each connection's
// reads and writes are done by one thread at a time on either end, so a
// single one serializes the transport work of every call; a few spread it
// over gRPC's threads (and the server's). Past ~16, more connections only
// add per-connection state and wakeups. --grpc-channels C gives each
// concurrent client its own connection, as perf_analyzer does.
constexpr int kDefaultGrpcChannels = 16;

double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

struct Endpoint {
  std::string host;
  int port = 0;
};

Endpoint ParseUrl(std::string url, const std::string& protocol) {
  for (const char* scheme : {"http://", "grpc://"}) {
    if (url.rfind(scheme, 0) == 0) url = url.substr(std::string(scheme).size());
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  KILN_CHECK(!url.empty(), "empty server URL");
  Endpoint e;
  e.port = protocol == "grpc" ? 8001 : 8000;
  size_t colon = url.rfind(':');
  const size_t bracket = url.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    const std::string port = url.substr(colon + 1);
    KILN_CHECK(!port.empty() && port.size() <= 5 &&
                   port.find_first_not_of("0123456789") == std::string::npos &&
                   std::stoi(port) > 0 && std::stoi(port) <= 65535,
               "bad port in server URL '", url, "'");
    e.port = std::stoi(port);
    url = url.substr(0, colon);
  }
  if (url.size() >= 2 && url.front() == '[' && url.back() == ']') url = url.substr(1, url.size() - 2);
  KILN_CHECK(!url.empty(), "no host in server URL");
  e.host = url;
  return e;
}

// Random non-zero values: magnitudes in [0.1, 1) with random signs for
// floating-point inputs, 1..8 for integers, true for booleans.
Tensor RandomInput(DType dtype, const std::vector<int64_t>& dims, std::mt19937_64& rng) {
  Tensor values(DType::kFloat32, dims);
  float* v = values.data<float>();
  std::uniform_real_distribution<float> magnitude(0.1f, 1.f);
  std::uniform_int_distribution<int> small_int(1, 8), sign(0, 1);
  for (int64_t i = 0; i < values.numel(); ++i) {
    if (IsFloatingPoint(dtype)) {
      v[i] = magnitude(rng) * (sign(rng) ? 1.f : -1.f);
    } else {
      v[i] = static_cast<float>(small_int(rng));
    }
  }
  return dtype == DType::kFloat32 ? values : values.CastTo(dtype);
}

json JsonData(const Tensor& t) {
  json data = json::array();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::kBool) {
      data.push_back(t.GetAsDouble(i) != 0);
    } else if (IsFloatingPoint(t.dtype())) {
      data.push_back(t.GetAsDouble(i));
    } else {
      data.push_back(t.GetAsInt64(i));
    }
  }
  return data;
}

std::string ModelPath(const LoadOptions& o) {
  return "/v2/models/" + o.model + (o.version.empty() ? "" : "/versions/" + o.version);
}

// The error text of a failed HTTP reply: the KServe {"error": ...} when present.
std::string HttpFailure(const httplib::Result& res, const std::string& what) {
  if (!res) return what + ": " + httplib::to_string(res.error());
  std::string message = res->body.substr(0, 300);
  json doc = json::parse(res->body, nullptr, false);
  if (doc.is_object() && doc.contains("error") && doc["error"].is_string())
    message = doc["error"].get<std::string>();
  return what + ": HTTP " + std::to_string(res->status) + ": " + message;
}

// One worker's system shared memory (--shared-memory system): a POSIX
// object of its own (shm_open key /kiln_perf_<pid>_<n>) holding its inputs,
// written once, followed by room for its outputs; registered with the server
// as two regions, <tag>_input and <tag>_output.
class WorkerSharedMemory {
 public:
  WorkerSharedMemory(const std::string& tag, size_t input_bytes, size_t output_bytes)
      : key("/" + tag),
        input_region(tag + "_input"),
        output_region(tag + "_output"),
        input_bytes(std::max<size_t>(input_bytes, 1)),
        // Outputs start on a 64-byte boundary after the inputs.
        output_offset((this->input_bytes + 63) / 64 * 64),
        output_bytes(std::max<size_t>(output_bytes, 1)),
        total_bytes(output_offset + this->output_bytes) {
    const int fd = ::shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL, S_IRUSR | S_IWUSR);
    KILN_CHECK(fd >= 0, "cannot create shared memory object ", key, ": ", std::strerror(errno));
    linked_ = true;
    std::string error;
    if (::ftruncate(fd, static_cast<off_t>(total_bytes)) != 0) {
      error = std::string("cannot size it to ") + std::to_string(total_bytes) +
              " bytes: " + std::strerror(errno);
    } else {
      void* base = ::mmap(nullptr, total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) {
        error = std::string("cannot map it: ") + std::strerror(errno);
      } else {
        base_ = static_cast<uint8_t*>(base);
      }
    }
    ::close(fd);
    if (!error.empty()) {
      Unlink();
      Fail("shared memory object ", key, ": ", error);
    }
  }
  ~WorkerSharedMemory() {
    if (base_) ::munmap(base_, total_bytes);
    Unlink();
  }
  WorkerSharedMemory(const WorkerSharedMemory&) = delete;
  WorkerSharedMemory& operator=(const WorkerSharedMemory&) = delete;

  // Once the server has mapped the object, its name is no longer needed:
  // unlinking it then means a crash cannot leak it.
  void Unlink() {
    if (linked_) ::shm_unlink(key.c_str());
    linked_ = false;
  }
  uint8_t* data() const { return base_; }

  const std::string key, input_region, output_region;
  const size_t input_bytes, output_offset, output_bytes, total_bytes;

 private:
  uint8_t* base_ = nullptr;
  bool linked_ = false;
};

// One connection to the server, used by one thread at a time.
class Client {
 public:
  virtual ~Client() = default;
  // One inference with the prepared request; false and `error` on failure.
  virtual bool Infer(std::string* error) = 0;
  // Done callback of InferAsync: success, or false and the error text.
  using InferDone = std::function<void(bool ok, const std::string& error)>;
  // Starts one inference without blocking; `done` runs on another thread
  // once it completes. false: this client only has the blocking Infer.
  virtual bool InferAsync(InferDone /*done*/) { return false; }
  // The model's statistics; nullopt when the server does not answer them.
  virtual std::optional<ModelStats> Stats() = 0;

  // Registers the worker's shared memory regions with the server (throws
  // kiln::Error with the server's answer); the client then owns `shm` and
  // unregisters the regions when it is destroyed.
  void UseSharedMemory(std::unique_ptr<WorkerSharedMemory> shm) {
    shm_ = std::move(shm);
    RegisterRegion(shm_->input_region, shm_->key, 0, shm_->input_bytes);
    registered_.push_back(shm_->input_region);
    RegisterRegion(shm_->output_region, shm_->key, shm_->output_offset, shm_->output_bytes);
    registered_.push_back(shm_->output_region);
    shm_->Unlink();
  }

 protected:
  virtual void RegisterRegion(const std::string& name, const std::string& key, uint64_t offset,
                              uint64_t byte_size) = 0;
  // Best effort (the server may be gone): never throws.
  virtual void UnregisterRegion(const std::string& name) noexcept = 0;
  // Derived destructors call this while their connection still exists.
  void ReleaseSharedMemory() noexcept {
    for (const std::string& name : registered_) UnregisterRegion(name);
    registered_.clear();
    shm_.reset();
  }

 private:
  std::unique_ptr<WorkerSharedMemory> shm_;
  std::vector<std::string> registered_;
};

// The prepared request, built once and shared by every client.
struct PreparedRequest {
  // HTTP.
  std::string path, body, content_type;
  httplib::Headers headers;
  // gRPC.
  pb::ModelInferRequest grpc;
};

ModelStats StatsFromJson(const json& doc) {
  const json& s = doc.at("model_stats").at(0);
  const json& is = s.at("inference_stats");
  ModelStats out;
  out.success = is.at("success").at("count").get<uint64_t>();
  out.success_ns = is.at("success").at("ns").get<uint64_t>();
  out.failure = is.at("fail").at("count").get<uint64_t>();
  out.queue_ns = is.at("queue").at("ns").get<uint64_t>();
  out.compute_input_ns = is.at("compute_input").at("ns").get<uint64_t>();
  out.compute_infer_ns = is.at("compute_infer").at("ns").get<uint64_t>();
  out.compute_output_ns = is.at("compute_output").at("ns").get<uint64_t>();
  out.executions = s.at("execution_count").get<uint64_t>();
  out.inferences = s.at("inference_count").get<uint64_t>();
  return out;
}

class HttpClient : public Client {
 public:
  HttpClient(const Endpoint& endpoint, const LoadOptions& options,
             std::shared_ptr<const PreparedRequest> request)
      : options_(options), request_(std::move(request)), client_(endpoint.host, endpoint.port) {
    client_.set_keep_alive(true);
    // Headers and body go out in two writes: without TCP_NODELAY, Nagle's
    // algorithm and the server's delayed ACK add ~40 ms to each request.
    client_.set_tcp_nodelay(true);
    client_.set_connection_timeout(5, 0);
    const time_t seconds = options.request_timeout_ms / 1000;
    const time_t usec = (options.request_timeout_ms % 1000) * 1000;
    client_.set_read_timeout(seconds, usec);
    client_.set_write_timeout(seconds, usec);
  }
  ~HttpClient() override { ReleaseSharedMemory(); }

  bool Infer(std::string* error) override {
    httplib::Result res = client_.Post(request_->path, request_->headers, request_->body,
                                       request_->content_type);
    if (res && res->status == 200) return true;
    *error = HttpFailure(res, "infer");
    return false;
  }

  std::optional<ModelStats> Stats() override {
    httplib::Result res = client_.Get(ModelPath(options_) + "/stats");
    if (!res || res->status != 200) return std::nullopt;
    try {
      return StatsFromJson(json::parse(res->body));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  void RegisterRegion(const std::string& name, const std::string& key, uint64_t offset,
                      uint64_t byte_size) override {
    const json body = {{"key", key}, {"offset", offset}, {"byte_size", byte_size}};
    const std::string path = "/v2/systemsharedmemory/region/" + name + "/register";
    httplib::Result res = client_.Post(path, body.dump(), "application/json");
    KILN_CHECK(res && res->status == 200,
               HttpFailure(res, "registering shared memory region '" + name + "'"));
  }

  void UnregisterRegion(const std::string& name) noexcept override {
    try {
      client_.Post("/v2/systemsharedmemory/region/" + name + "/unregister", "", "application/json");
    } catch (...) {
    }
  }

  // GET `path` as JSON; throws with the server's error.
  json GetJson(const std::string& path, const std::string& what) {
    httplib::Result res = client_.Get(path);
    KILN_CHECK(res && res->status == 200, HttpFailure(res, what + " (GET " + path + ")"));
    json doc = json::parse(res->body, nullptr, false);
    KILN_CHECK(!doc.is_discarded(), what, " (GET ", path, "): the reply is not JSON");
    return doc;
  }

 private:
  const LoadOptions& options_;
  std::shared_ptr<const PreparedRequest> request_;
  httplib::Client client_;
};

std::shared_ptr<grpc::Channel> MakeChannel(const Endpoint& endpoint, int index) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A connection per client, as perf_analyzer's clients have.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("kiln.perf.client", index);
  const bool v6 = endpoint.host.find(':') != std::string::npos;
  const std::string target = (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" +
                             std::to_string(endpoint.port);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

class GrpcClient : public Client {
 public:
  // Clients may share `channel` (one HTTP/2 connection carries many calls).
  GrpcClient(std::shared_ptr<grpc::Channel> channel, const LoadOptions& options,
             std::shared_ptr<const PreparedRequest> request)
      : options_(options),
        request_(std::move(request)),
        stub_(pb::GRPCInferenceService::NewStub(std::move(channel))) {}
  ~GrpcClient() override {
    // Calls in flight reference this client's request and stub: wait until
    // each has released its ClientContext (a chain may report its end a
    // moment before its last call's context is destroyed).
    calls_.WaitIdle();
    ReleaseSharedMemory();
  }

  void RegisterRegion(const std::string& name, const std::string& key, uint64_t offset,
                      uint64_t byte_size) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::SystemSharedMemoryRegisterRequest request;
    request.set_name(name);
    request.set_key(key);
    request.set_offset(offset);
    request.set_byte_size(byte_size);
    pb::SystemSharedMemoryRegisterResponse response;
    const grpc::Status status = stub_->SystemSharedMemoryRegister(&context, request, &response);
    KILN_CHECK(status.ok(), "registering shared memory region '", name, "': gRPC status ",
               status.error_code(), ": ", status.error_message());
  }

  void UnregisterRegion(const std::string& name) noexcept override {
    try {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      pb::SystemSharedMemoryUnregisterRequest request;
      request.set_name(name);
      pb::SystemSharedMemoryUnregisterResponse response;
      stub_->SystemSharedMemoryUnregister(&context, request, &response);
    } catch (...) {
    }
  }

  bool Infer(std::string* error) override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(options_.request_timeout_ms));
    pb::ModelInferResponse response;
    const grpc::Status status = stub_->ModelInfer(&context, request_->grpc, &response);
    if (status.ok()) return true;
    *error = InferError(status);
    return false;
  }

  // gRPC's callback API: the call needs no thread of ours while in flight.
  bool InferAsync(InferDone done) override {
    // The context and the response live until the completion callback, which
    // owns them (gRPC holds its own reference to the call while it runs).
    // Counts the call in calls_in_flight_ from its start until its context is
    // gone (declared first, so destroyed last).
    struct InFlight {
      explicit InFlight(GrpcClient& c) : client(c) { client.calls_.Add(); }
      ~InFlight() { client.calls_.Done(); }
      GrpcClient& client;
    };
    struct Call {
      explicit Call(GrpcClient& c) : in_flight(c) {}
      InFlight in_flight;
      grpc::ClientContext context;
      pb::ModelInferResponse response;
    };
    auto call = std::make_shared<Call>(*this);
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(options_.request_timeout_ms));
    pb::ModelInferResponse* response = &call->response;
    grpc::ClientContext* context = &call->context;
    stub_->async()->ModelInfer(context, &request_->grpc, response,
                               [call = std::move(call), done = std::move(done)](grpc::Status status) {
                                 done(status.ok(), status.ok() ? std::string() : InferError(status));
                               });
    return true;
  }

  std::optional<ModelStats> Stats() override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::ModelStatisticsRequest request;
    request.set_name(options_.model);
    request.set_version(options_.version);
    pb::ModelStatisticsResponse response;
    if (!stub_->ModelStatistics(&context, request, &response).ok() ||
        response.model_stats_size() < 1)
      return std::nullopt;
    const pb::ModelStatistics& s = response.model_stats(0);
    const pb::InferStatistics& is = s.inference_stats();
    ModelStats out;
    out.success = is.success().count();
    out.success_ns = is.success().ns();
    out.failure = is.fail().count();
    out.queue_ns = is.queue().ns();
    out.compute_input_ns = is.compute_input().ns();
    out.compute_infer_ns = is.compute_infer().ns();
    out.compute_output_ns = is.compute_output().ns();
    out.executions = s.execution_count();
    out.inferences = s.inference_count();
    return out;
  }

  pb::GRPCInferenceService::Stub& stub() { return *stub_; }

 private:
  static std::string InferError(const grpc::Status& status) {
    return "infer: gRPC status " + std::to_string(status.error_code()) + ": " +
           status.error_message();
  }

  const LoadOptions& options_;
  std::shared_ptr<const PreparedRequest> request_;
  std::unique_ptr<pb::GRPCInferenceService::Stub> stub_;
  InFlightCount calls_;  // Asynchronous calls whose context still exists.
};

void CheckGrpc(const grpc::Status& status, const std::string& what, const std::string& url) {
  KILN_CHECK(status.ok(), what, " at ", url, " failed: gRPC status ", status.error_code(), ": ",
             status.error_message());
}

struct Record {
  Clock::time_point start, end;
  bool ok = false;
  bool delayed = false;
};

// One sender thread's records (locked: the measuring thread reads them).
struct Lane {
  std::mutex mu;
  std::vector<Record> records;
  std::string first_error;
};

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

}  // namespace

struct LoadGenerator::Impl {
  LoadOptions options;
  Endpoint endpoint;
  int max_batch_size = 0;
  std::vector<TensorIO> inputs;
  std::shared_ptr<const PreparedRequest> request;
  // --shared-memory system: the input values (written into each worker's
  // region) and the outputs' names, datatypes and region sizes.
  std::vector<Tensor> input_values;
  struct OutputSlot {
    std::string name;
    size_t offset = 0, byte_size = 0;  // Within the worker's output region.
  };
  std::vector<OutputSlot> output_slots;
  std::atomic<uint64_t> shared_memory_serial{0};

  // A client; `sends` false: statistics only. gRPC clients use `channel`,
  // or a connection of their own when it is null.
  std::unique_ptr<Client> MakeClient(int index, bool sends = true,
                                     std::shared_ptr<grpc::Channel> channel = nullptr) {
    if (options.protocol == "grpc" && !channel) channel = MakeChannel(endpoint, index);
    if (!sends || options.shared_memory != "system") {
      if (options.protocol == "grpc") return std::make_unique<GrpcClient>(channel, options, request);
      return std::make_unique<HttpClient>(endpoint, options, request);
    }
    const std::string tag = "kiln_perf_" + std::to_string(::getpid()) + "_" +
                            std::to_string(shared_memory_serial.fetch_add(1));
    size_t input_bytes = 0, output_bytes = 0;
    for (const Tensor& t : input_values) input_bytes += t.nbytes();
    for (const OutputSlot& o : output_slots) output_bytes = std::max(output_bytes, o.offset + o.byte_size);
    auto shm = std::make_unique<WorkerSharedMemory>(tag, input_bytes, output_bytes);
    auto prepared = std::make_shared<PreparedRequest>(SharedMemoryRequest(*shm));
    std::unique_ptr<Client> client;
    if (options.protocol == "grpc") {
      client = std::make_unique<GrpcClient>(channel, options, prepared);
    } else {
      client = std::make_unique<HttpClient>(endpoint, options, prepared);
    }
    client->UseSharedMemory(std::move(shm));
    return client;
  }

  // The request of one worker whose inputs and outputs live in `shm`; writes
  // the input values there.
  PreparedRequest SharedMemoryRequest(const WorkerSharedMemory& shm) const {
    PreparedRequest p;
    p.grpc.set_model_name(options.model);
    p.grpc.set_model_version(options.version);
    json header = {{"inputs", json::array()}, {"outputs", json::array()}};
    size_t offset = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = input_values[i];
      if (t.nbytes()) std::memcpy(shm.data() + offset, t.raw_data(), t.nbytes());
      header["inputs"].push_back({{"name", inputs[i].name},
                                  {"shape", inputs[i].dims},
                                  {"datatype", KServeDatatype(inputs[i].dtype)},
                                  {"parameters",
                                   {{"shared_memory_region", shm.input_region},
                                    {"shared_memory_byte_size", t.nbytes()},
                                    {"shared_memory_offset", offset}}}});
      pb::ModelInferRequest::InferInputTensor* g = p.grpc.add_inputs();
      g->set_name(inputs[i].name);
      g->set_datatype(KServeDatatype(inputs[i].dtype));
      for (int64_t d : inputs[i].dims) g->add_shape(d);
      auto& params = *g->mutable_parameters();
      params["shared_memory_region"].set_string_param(shm.input_region);
      params["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(t.nbytes()));
      params["shared_memory_offset"].set_int64_param(static_cast<int64_t>(offset));
      offset += t.nbytes();
    }
    for (const OutputSlot& o : output_slots) {
      header["outputs"].push_back({{"name", o.name},
                                   {"parameters",
                                    {{"shared_memory_region", shm.output_region},
                                     {"shared_memory_byte_size", o.byte_size},
                                     {"shared_memory_offset", o.offset}}}});
      pb::ModelInferRequest::InferRequestedOutputTensor* g = p.grpc.add_outputs();
      g->set_name(o.name);
      auto& params = *g->mutable_parameters();
      params["shared_memory_region"].set_string_param(shm.output_region);
      params["shared_memory_byte_size"].set_int64_param(static_cast<int64_t>(o.byte_size));
      params["shared_memory_offset"].set_int64_param(static_cast<int64_t>(o.offset));
    }
    p.path = ModelPath(options) + "/infer";
    p.body = header.dump();
    p.content_type = "application/json";
    return p;
  }

  // Metadata (name, datatype, shape per input) and max_batch_size from the server.
  struct InputMeta {
    std::string name, datatype;
    std::vector<int64_t> shape;
  };
  std::vector<InputMeta> output_metas;
  std::vector<InputMeta> ReadModel() {
    std::vector<InputMeta> metas;
    const std::string where = options.protocol + " server " + endpoint.host + ":" +
                              std::to_string(endpoint.port);
    if (options.protocol == "grpc") {
      GrpcClient client(MakeChannel(endpoint, -1), options, nullptr);
      {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        pb::ModelMetadataRequest q;
        q.set_name(options.model);
        q.set_version(options.version);
        pb::ModelMetadataResponse r;
        CheckGrpc(client.stub().ModelMetadata(&context, q, &r),
                        "metadata of model '" + options.model + "'", where);
        for (const auto& in : r.inputs())
          metas.push_back({in.name(), in.datatype(), {in.shape().begin(), in.shape().end()}});
        for (const auto& out : r.outputs())
          output_metas.push_back({out.name(), out.datatype(), {out.shape().begin(), out.shape().end()}});
      }
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      pb::ModelConfigRequest q;
      q.set_name(options.model);
      q.set_version(options.version);
      pb::ModelConfigResponse r;
      CheckGrpc(client.stub().ModelConfig(&context, q, &r),
                      "config of model '" + options.model + "'", where);
      max_batch_size = r.config().max_batch_size();
    } else {
      HttpClient client(endpoint, options, nullptr);
      const std::string what = "metadata of model '" + options.model + "' from " + where;
      json meta = client.GetJson(ModelPath(options), what);
      try {
        for (const json& in : meta.at("inputs"))
          metas.push_back({in.at("name").get<std::string>(), in.at("datatype").get<std::string>(),
                           in.at("shape").get<std::vector<int64_t>>()});
        for (const json& out : meta.value("outputs", json::array()))
          output_metas.push_back({out.at("name").get<std::string>(),
                                  out.at("datatype").get<std::string>(),
                                  out.at("shape").get<std::vector<int64_t>>()});
      } catch (const json::exception& e) {
        Fail(what, ": unexpected metadata: ", e.what());
      }
      json config = client.GetJson(ModelPath(options) + "/config",
                                   "config of model '" + options.model + "' from " + where);
      // Triton answers the config itself; some servers wrap it in "config".
      const json& c = config.contains("config") && config["config"].is_object() ? config["config"] : config;
      max_batch_size = c.value("max_batch_size", 0);
    }
    KILN_CHECK(!metas.empty(), "model '", options.model, "' has no inputs in its metadata");
    return metas;
  }

  void Prepare() {
    const std::vector<InputMeta> metas = ReadModel();
    KILN_CHECK(max_batch_size > 0 || options.batch_size == 1, "model '", options.model,
               "' does not batch (max_batch_size 0), so the batch size must be 1, not ",
               options.batch_size);
    KILN_CHECK(max_batch_size == 0 || options.batch_size <= max_batch_size, "batch size ",
               options.batch_size, " exceeds model '", options.model, "''s max_batch_size ",
               max_batch_size);
    for (const auto& [name, dims] : options.shapes) {
      KILN_CHECK(std::any_of(metas.begin(), metas.end(), [&](const InputMeta& m) { return m.name == name; }),
                 "--shape names '", name, "', which is not an input of model '", options.model, "'");
    }
    std::mt19937_64 rng(options.seed);
    auto prepared = std::make_shared<PreparedRequest>();
    json header = {{"inputs", json::array()}};
    std::string binary;
    prepared->grpc.set_model_name(options.model);
    prepared->grpc.set_model_version(options.version);
    for (const InputMeta& m : metas) {
      const DType dtype = DTypeFromKServe(m.datatype);
      std::vector<int64_t> dims = m.shape;
      if (max_batch_size > 0) {
        KILN_CHECK(!dims.empty(), "input '", m.name, "' of a batching model has no batch dim");
        dims.erase(dims.begin());
      }
      auto given = options.shapes.find(m.name);
      if (given != options.shapes.end()) {
        KILN_CHECK(given->second.size() == dims.size(), "--shape ", m.name, ":",
                   DimsToString(given->second), " has ", given->second.size(),
                   " dims, but the input has ", dims.size(), " (", DimsToString(dims),
                   max_batch_size > 0 ? ", without the batch dim)" : ")");
        for (size_t i = 0; i < dims.size(); ++i) {
          KILN_CHECK(given->second[i] > 0 && (dims[i] < 0 || dims[i] == given->second[i]),
                     "--shape ", m.name, ":", DimsToString(given->second), " does not fit ",
                     DimsToString(dims));
        }
        dims = given->second;
      }
      for (int64_t d : dims) {
        KILN_CHECK(d >= 0, "input '", m.name, "' has variable dims ", DimsToString(dims),
                   ": give them with --shape ", m.name, ":D1,D2,...",
                   max_batch_size > 0 ? " (without the batch dim)" : "");
      }
      if (max_batch_size > 0) dims.insert(dims.begin(), options.batch_size);
      const Tensor t = RandomInput(dtype, dims, rng);
      inputs.push_back({m.name, dtype, dims});
      input_values.push_back(t);

      json in = {{"name", m.name}, {"shape", dims}, {"datatype", m.datatype}};
      if (options.binary) {
        in["parameters"] = {{"binary_data_size", t.nbytes()}};
        binary.append(static_cast<const char*>(t.raw_data()), t.nbytes());
      } else {
        in["data"] = JsonData(t);
      }
      header["inputs"].push_back(std::move(in));

      pb::ModelInferRequest::InferInputTensor* g = prepared->grpc.add_inputs();
      g->set_name(m.name);
      g->set_datatype(m.datatype);
      for (int64_t d : dims) g->add_shape(d);
      prepared->grpc.add_raw_input_contents(static_cast<const char*>(t.raw_data()), t.nbytes());
    }
    prepared->path = ModelPath(options) + "/infer";
    if (options.binary) {
      header["parameters"] = {{"binary_data_output", true}};
      prepared->body = header.dump();
      prepared->headers.emplace(kBinaryHeader, std::to_string(prepared->body.size()));
      prepared->body += binary;
      prepared->content_type = "application/octet-stream";
    } else {
      prepared->body = header.dump();
      prepared->content_type = "application/json";
    }
    request = std::move(prepared);
    if (options.shared_memory == "system") PlanOutputSlots();
  }

  // Each output's place in a worker's output region: its size when the
  // metadata gives every dim (the batch dim is the batch size), else
  // options.output_shared_memory_size (perf_analyzer's
  // --output-shared-memory-size).
  void PlanOutputSlots() {
    KILN_CHECK(!output_metas.empty(), "model '", options.model,
               "' lists no outputs in its metadata, so --shared-memory has nothing to map");
    size_t offset = 0;
    for (const InputMeta& m : output_metas) {
      size_t bytes = options.output_shared_memory_size;
      DType dtype = DType::kUndefined;
      try {
        dtype = DTypeFromKServe(m.datatype);
      } catch (const Error&) {
        // Sized by the option below.
      }
      std::vector<int64_t> dims = m.shape;
      if (max_batch_size > 0 && !dims.empty()) dims[0] = options.batch_size;
      const bool known = DTypeSize(dtype) > 0 &&
                         std::all_of(dims.begin(), dims.end(), [](int64_t d) { return d >= 0; });
      if (known) {
        bytes = DTypeSize(dtype);
        for (int64_t d : dims) bytes *= static_cast<size_t>(d);
      }
      output_slots.push_back({m.name, offset, bytes});
      offset += (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    }
  }

  // The gRPC connections `clients` concurrent clients share: the option, or
  // min(clients, kDefaultGrpcChannels).
  int GrpcChannelCount(int clients) const {
    const int wanted = options.grpc_channels > 0 ? options.grpc_channels : kDefaultGrpcChannels;
    return std::max(1, std::min(wanted, clients));
  }

  // Runs `threads` clients, then the warm-up and measurement windows, and
  // summarises. With a `send`, each client has a thread of its own that calls
  // `send(index, client, lane, stop)`; without one, each client keeps one
  // asynchronous call in flight (a chain: each completion starts the next
  // call) and no thread of ours waits for replies.
  using Sender = std::function<void(int, Client&, Lane&, const std::atomic<bool>&)>;
  StepResult Measure(const std::string& mode, double level, int threads, const Sender& send) {
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<Lane>> lanes;
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    if (options.protocol == "grpc") {
      for (int i = 0; i < GrpcChannelCount(threads); ++i) channels.push_back(MakeChannel(endpoint, i));
    }
    for (int i = 0; i < threads; ++i) {
      lanes.push_back(std::make_unique<Lane>());
      clients.push_back(MakeClient(
          i, true, channels.empty() ? nullptr : channels[static_cast<size_t>(i) % channels.size()]));
    }
    std::vector<std::thread> senders;
    Chains chains;
    if (send) {
      for (int i = 0; i < threads; ++i)
        senders.emplace_back([&, i] { send(i, *clients[static_cast<size_t>(i)], *lanes[static_cast<size_t>(i)], stop); });
    } else {
      for (int i = 0; i < threads; ++i) {
        chains.Add();
        SendChained(*clients[static_cast<size_t>(i)], *lanes[static_cast<size_t>(i)], stop, chains);
      }
    }

    std::unique_ptr<Client> control = MakeClient(threads, /*sends=*/false);
    const auto interval = std::chrono::milliseconds(std::max(1, options.measurement_interval_ms));
    const auto warmup = options.warmup_ms < 0 ? interval : std::chrono::milliseconds(options.warmup_ms);
    std::this_thread::sleep_for(warmup);

    struct Window {
      Clock::time_point begin, end;
      uint64_t ok = 0, errors = 0;
      double latency_sum_us = 0;
    };
    std::vector<Clock::time_point> bounds{Clock::now()};
    std::vector<std::optional<ModelStats>> snapshots{control->Stats()};
    std::vector<Window> windows;
    auto count = [&](Window& w) {
      for (auto& lane : lanes) {
        std::lock_guard<std::mutex> lock(lane->mu);
        for (const Record& r : lane->records) {
          if (r.end < w.begin || r.end >= w.end) continue;
          if (r.ok) {
            ++w.ok;
            w.latency_sum_us += Micros(r.end - r.start);
          } else {
            ++w.errors;
          }
        }
      }
    };
    auto agree = [&](auto value) {
      double mean = 0;
      for (size_t i = windows.size() - kStableWindows; i < windows.size(); ++i) mean += value(windows[i]);
      mean /= kStableWindows;
      for (size_t i = windows.size() - kStableWindows; i < windows.size(); ++i) {
        if (std::abs(value(windows[i]) - mean) > mean * options.stability_percent / 100.0) return false;
      }
      return true;
    };
    bool stable = false;
    const int trials = std::max<int>(static_cast<int>(kStableWindows), options.max_trials);
    for (int trial = 0; trial < trials && !stable; ++trial) {
      std::this_thread::sleep_until(bounds.back() + interval);
      Window w;
      w.begin = bounds.back();
      w.end = Clock::now();
      bounds.push_back(w.end);
      snapshots.push_back(control->Stats());
      count(w);
      windows.push_back(w);
      if (windows.size() >= kStableWindows) {
        stable = agree([](const Window& x) {
                   return static_cast<double>(x.ok) / std::chrono::duration<double>(x.end - x.begin).count();
                 }) &&
                 agree([](const Window& x) { return x.ok ? x.latency_sum_us / static_cast<double>(x.ok) : 0.0; });
      }
    }
    stop = true;
    for (std::thread& t : senders) t.join();
    chains.WaitIdle();

    StepResult result;
    result.mode = mode;
    result.level = level;
    result.windows = static_cast<int>(windows.size());
    result.stable = stable;
    const size_t first = windows.size() - std::min(windows.size(), kStableWindows);
    const Clock::time_point begin = windows[first].begin, end = windows.back().end;
    result.seconds = std::chrono::duration<double>(end - begin).count();
    std::vector<double> latencies;
    for (auto& lane : lanes) {
      std::lock_guard<std::mutex> lock(lane->mu);
      if (result.first_error.empty()) result.first_error = lane->first_error;
      for (const Record& r : lane->records) {
        if (r.end < begin || r.end >= end) continue;
        if (r.delayed) ++result.delayed;
        if (r.ok) {
          latencies.push_back(Micros(r.end - r.start));
        } else {
          ++result.errors;
        }
      }
    }
    result.requests = latencies.size();
    if (result.seconds > 0) {
      result.requests_per_second = static_cast<double>(result.requests) / result.seconds;
      result.inferences_per_second = result.requests_per_second * options.batch_size;
    }
    std::sort(latencies.begin(), latencies.end());
    if (!latencies.empty()) {
      double sum = 0;
      for (double l : latencies) sum += l;
      result.latency.avg_us = sum / static_cast<double>(latencies.size());
      result.latency.min_us = latencies.front();
      result.latency.max_us = latencies.back();
      result.latency.p50_us = Percentile(latencies, 50);
      result.latency.p90_us = Percentile(latencies, 90);
      result.latency.p95_us = Percentile(latencies, 95);
      result.latency.p99_us = Percentile(latencies, 99);
    }
    const std::optional<ModelStats>& before = snapshots[first];
    const std::optional<ModelStats>& after = snapshots.back();
    if (before && after && after->success >= before->success) {
      ServerSideSummary& s = result.server;
      s.available = true;
      s.requests = after->success - before->success;
      s.executions = after->executions - before->executions;
      s.inferences = after->inferences - before->inferences;
      if (s.requests > 0) {
        const double n = static_cast<double>(s.requests) * 1000.0;
        s.request_us = static_cast<double>(after->success_ns - before->success_ns) / n;
        s.queue_us = static_cast<double>(after->queue_ns - before->queue_ns) / n;
        s.compute_input_us = static_cast<double>(after->compute_input_ns - before->compute_input_ns) / n;
        s.compute_infer_us = static_cast<double>(after->compute_infer_ns - before->compute_infer_ns) / n;
        s.compute_output_us =
            static_cast<double>(after->compute_output_ns - before->compute_output_ns) / n;
      }
    }
    return result;
  }

  // Chains of asynchronous calls still running (every call has a deadline,
  // request_timeout_ms, so every chain ends).
  using Chains = InFlightCount;

  // Starts one asynchronous call whose completion records it and, until
  // `stop`, starts the next one; ends the chain in `chains` when it stops.
  static void SendChained(Client& client, Lane& lane, const std::atomic<bool>& stop, Chains& chains) {
    Record r;
    r.start = Clock::now();
    bool started = false;
    std::string error = "the client has no asynchronous infer";
    try {
      started = client.InferAsync([&client, &lane, &stop, &chains, r](bool ok, const std::string& message) mutable {
        r.ok = ok;
        r.end = Clock::now();
        {
          std::lock_guard<std::mutex> lock(lane.mu);
          lane.records.push_back(r);
          if (!ok && lane.first_error.empty()) lane.first_error = message;
        }
        if (stop) {
          chains.Done();
        } else {
          SendChained(client, lane, stop, chains);
        }
      });
    } catch (const std::exception& e) {
      error = std::string("infer: ") + e.what();
    }
    if (!started) {  // The chain cannot go on: record why and end it.
      r.end = Clock::now();
      std::lock_guard<std::mutex> lock(lane.mu);
      lane.records.push_back(r);
      if (lane.first_error.empty()) lane.first_error = error;
      chains.Done();
    }
  }

  static void Send(Client& client, Lane& lane, Record r) {
    std::string error;
    r.ok = client.Infer(&error);
    r.end = Clock::now();
    std::lock_guard<std::mutex> lock(lane.mu);
    lane.records.push_back(r);
    if (!r.ok && lane.first_error.empty()) lane.first_error = error;
  }
};

LoadGenerator::LoadGenerator(LoadOptions options) : impl_(std::make_unique<Impl>()) {
  KILN_CHECK(!options.model.empty(), "no model name");
  KILN_CHECK(options.protocol == "http" || options.protocol == "grpc",
             "protocol must be http or grpc, not '", options.protocol, "'");
  KILN_CHECK(options.batch_size >= 1, "batch size must be at least 1, not ", options.batch_size);
  KILN_CHECK(options.measurement_interval_ms >= 1, "the measurement interval must be positive");
  KILN_CHECK(options.request_timeout_ms >= 1, "the request timeout must be positive");
  KILN_CHECK(options.shared_memory == "none" || options.shared_memory == "system",
             "shared memory must be none or system, not '", options.shared_memory,
             "' (CUDA shared memory is not supported)");
  KILN_CHECK(options.shared_memory == "none" || !options.binary,
             "--binary and --shared-memory system exclude each other: tensors travel either "
             "in the request or in shared memory");
  impl_->endpoint = ParseUrl(options.url, options.protocol);
  impl_->options = std::move(options);
  impl_->Prepare();
}

LoadGenerator::~LoadGenerator() = default;

const LoadOptions& LoadGenerator::options() const { return impl_->options; }
int LoadGenerator::max_batch_size() const { return impl_->max_batch_size; }
const std::vector<TensorIO>& LoadGenerator::inputs() const { return impl_->inputs; }

StepResult LoadGenerator::RunConcurrency(int concurrency) {
  KILN_CHECK(concurrency >= 1, "concurrency must be at least 1, not ", concurrency);
  // gRPC: `concurrency` asynchronous call chains on a few connections, so
  // that the client needs no thread per request in flight.
  if (impl_->options.protocol == "grpc") return impl_->Measure("concurrency", concurrency, concurrency, nullptr);
  return impl_->Measure("concurrency", concurrency, concurrency,
                        [](int, Client& client, Lane& lane, const std::atomic<bool>& stop) {
                          while (!stop) {
                            Record r;
                            r.start = Clock::now();
                            Impl::Send(client, lane, r);
                          }
                        });
}

StepResult LoadGenerator::RunRequestRate(double requests_per_second) {
  KILN_CHECK(requests_per_second > 0 && std::isfinite(requests_per_second),
             "the request rate must be positive, not ", requests_per_second);
  const int threads = std::max(1, impl_->options.max_threads);
  const Clock::time_point t0 = Clock::now();
  const std::chrono::duration<double> period(1.0 / requests_per_second);
  auto next = std::make_shared<std::atomic<uint64_t>>(0);
  return impl_->Measure(
      "request_rate", requests_per_second, threads,
      [=](int, Client& client, Lane& lane, const std::atomic<bool>& stop) {
        while (!stop) {
          const uint64_t k = next->fetch_add(1);
          const Clock::time_point slot =
              t0 + std::chrono::duration_cast<Clock::duration>(period * static_cast<double>(k));
          // Short sleeps, so that a slow schedule still notices the stop.
          while (!stop && Clock::now() < slot)
            std::this_thread::sleep_until(std::min(slot, Clock::now() + std::chrono::milliseconds(50)));
          if (stop) break;
          Record r;
          r.start = Clock::now();
          r.delayed = r.start - slot > kDelayedAfter;
          Impl::Send(client, lane, r);
        }
      });
}

std::vector<double> ParseLoadRange(const std::string& text, const std::string& what) {
  auto number = [&](const std::string& s) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KILN_CHECK(used == s.size() && !s.empty() && std::isfinite(v) && v > 0, what, ": '", s,
               "' in '", text, "' is not a positive number");
    return v;
  };
  std::vector<double> values;
  if (text.find(',') != std::string::npos) {
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) values.push_back(number(item));
    return values;
  }
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ':');) parts.push_back(item);
  KILN_CHECK(!parts.empty() && parts.size() <= 3, what, ": expected START[:END[:STEP]] or a list, got '",
             text, "'");
  const double start = number(parts[0]);
  const double end = parts.size() > 1 ? number(parts[1]) : start;
  const double step = parts.size() > 2 ? number(parts[2]) : 1;
  KILN_CHECK(end >= start, what, ": END ", end, " is below START ", start);
  KILN_CHECK((end - start) / step < 10000, what, ": '", text, "' makes too many steps");
  for (double v = start; v <= end + 1e-9; v += step) values.push_back(v);
  return values;
}

std::string FormatLoadReport(const LoadGenerator& generator, const std::vector<StepResult>& steps) {
  const LoadOptions& o = generator.options();
  std::ostringstream out;
  out << "*** Measurement Settings ***\n"
      << "  Model: " << o.model << (o.version.empty() ? "" : " v" + o.version) << ", "
      << o.protocol
      << (o.shared_memory == "system" ? " (system shared memory)"
          : o.protocol == "http"      ? (o.binary ? " (binary tensors)" : " (JSON tensors)")
                                      : "")
      << (o.protocol == "grpc" ? (o.grpc_channels > 0 ? ", " + std::to_string(o.grpc_channels)
                                                      : ", min(C, " + std::to_string(kDefaultGrpcChannels)) +
                                     " connections" + (o.grpc_channels > 0 ? "" : ")")
                               : std::string())
      << " at " << o.url << "\n"
      << "  Batch size: " << o.batch_size << " (model max_batch_size " << generator.max_batch_size()
      << ")\n  Inputs:";
  for (const TensorIO& in : generator.inputs())
    out << " " << in.name << " " << DTypeName(in.dtype) << DimsToString(in.dims);
  out << "\n  Measurement window: " << o.measurement_interval_ms << " ms after a "
      << (o.warmup_ms < 0 ? o.measurement_interval_ms : o.warmup_ms)
      << " ms warm-up; stable when 3 windows agree within " << o.stability_percent << "% (at most "
      << o.max_trials << " windows)\n\n";
  char line[512];
  std::snprintf(line, sizeof(line), "%12s %12s %10s %8s %10s %10s %10s %10s %10s %9s %9s %9s %9s %9s\n",
                steps.empty() || steps[0].mode == "concurrency" ? "Concurrency" : "Rate (req/s)",
                "Infer/s", "Requests", "Errors", "p50 us", "p90 us", "p95 us", "p99 us", "Avg us",
                "Srv req", "queue", "c.input", "c.infer", "c.output");
  out << line;
  for (const StepResult& s : steps) {
    std::snprintf(line, sizeof(line),
                  "%12g %12.1f %10llu %8llu %10.0f %10.0f %10.0f %10.0f %10.0f %9.0f %9.0f %9.0f %9.0f %9.0f%s\n",
                  s.level, s.inferences_per_second, static_cast<unsigned long long>(s.requests),
                  static_cast<unsigned long long>(s.errors), s.latency.p50_us, s.latency.p90_us,
                  s.latency.p95_us, s.latency.p99_us, s.latency.avg_us, s.server.request_us,
                  s.server.queue_us, s.server.compute_input_us, s.server.compute_infer_us,
                  s.server.compute_output_us, s.stable ? "" : "  (unstable)");
    out << line;
  }
  out << "(server columns: the server's statistics per request, in us)\n";
  for (const StepResult& s : steps) {
    if (!s.first_error.empty()) out << "first error at " << s.mode << " " << s.level << ": " << s.first_error << "\n";
    if (s.delayed) out << s.delayed << " requests at rate " << s.level << " were sent late (not enough sender threads)\n";
  }
  out << "\nInferences/Second vs. Client p99 Batch Latency\n";
  for (const StepResult& s : steps) {
    std::snprintf(line, sizeof(line), "%s: %g, throughput: %.2f infer/sec, latency %.0f usec\n",
                  s.mode == "concurrency" ? "Concurrency" : "Request rate", s.level,
                  s.inferences_per_second, s.latency.p99_us);
    out << line;
  }
  return out.str();
}

std::string LoadReportJson(const LoadGenerator& generator, const std::vector<StepResult>& steps) {
  const LoadOptions& o = generator.options();
  json inputs = json::array();
  for (const TensorIO& in : generator.inputs())
    inputs.push_back({{"name", in.name}, {"datatype", KServeDatatype(in.dtype)}, {"shape", in.dims}});
  json list = json::array();
  for (const StepResult& s : steps) {
    list.push_back({
        {"mode", s.mode},
        {s.mode == "concurrency" ? "concurrency" : "request_rate", s.level},
        {"requests", s.requests},
        {"errors", s.errors},
        {"delayed", s.delayed},
        {"seconds", s.seconds},
        {"requests_per_second", s.requests_per_second},
        {"inferences_per_second", s.inferences_per_second},
        {"latency_us",
         {{"avg", s.latency.avg_us},
          {"min", s.latency.min_us},
          {"max", s.latency.max_us},
          {"p50", s.latency.p50_us},
          {"p90", s.latency.p90_us},
          {"p95", s.latency.p95_us},
          {"p99", s.latency.p99_us}}},
        {"windows", s.windows},
        {"stable", s.stable},
        {"first_error", s.first_error},
        {"server",
         {{"available", s.server.available},
          {"requests", s.server.requests},
          {"executions", s.server.executions},
          {"inferences", s.server.inferences},
          {"request_us", s.server.request_us},
          {"queue_us", s.server.queue_us},
          {"compute_input_us", s.server.compute_input_us},
          {"compute_infer_us", s.server.compute_infer_us},
          {"compute_output_us", s.server.compute_output_us}}},
    });
  }
  json doc = {{"model", o.model},
              {"version", o.version},
              {"url", o.url},
              {"protocol", o.protocol},
              {"binary", o.binary},
              {"shared_memory", o.shared_memory},
              {"grpc_channels", o.grpc_channels},
              {"batch_size", o.batch_size},
              {"max_batch_size", generator.max_batch_size()},
              {"measurement_interval_ms", o.measurement_interval_ms},
              {"inputs", inputs},
              {"steps", list}};
  return doc.dump(2) + "\n";
}

}  // namespace kiln::serve
