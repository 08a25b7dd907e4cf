#include "serve/grpc_frontend.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>

#include "grpc_service.grpc.pb.h"
#include "grpc_service.pb.h"
#include "kiln/error.h"
#include "serve/in_flight.h"

namespace kiln::serve {
namespace {

namespace pb = ::inference;

// How long Stop() lets in-flight calls finish before cancelling them.
constexpr auto kShutdownGrace = std::chrono::seconds(5);
// Elements one tensor may have (guards the size arithmetic).
constexpr int64_t kMaxElements = int64_t{1} << 40;

grpc::StatusCode ToGrpcCode(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return grpc::StatusCode::OK;
    case StatusCode::kBadRequest: return grpc::StatusCode::INVALID_ARGUMENT;
    case StatusCode::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case StatusCode::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case StatusCode::kTimeout: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case StatusCode::kInternal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(status.code), status.message);
}

grpc::Status BadRequest(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

grpc::Status UnknownModel(const std::string& model) {
  return grpc::Status(grpc::StatusCode::NOT_FOUND,
                      "Request for unknown model: '" + model + "' is not found");
}

// Runs a handler body, turning any exception into an INTERNAL reply so that
// a bug in one call never takes the server down.
template <typename Fn>
grpc::Status Guard(const char* rpc, Fn&& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(rpc) + ": " + e.what());
  } catch (...) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(rpc) + ": unknown error");
  }
}

pb::DataType ConfigDataType(DType dtype) {
  switch (dtype) {
    case DType::kBool: return pb::TYPE_BOOL;
    case DType::kUInt8: return pb::TYPE_UINT8;
    case DType::kUInt16: return pb::TYPE_UINT16;
    case DType::kUInt32: return pb::TYPE_UINT32;
    case DType::kUInt64: return pb::TYPE_UINT64;
    case DType::kInt8: return pb::TYPE_INT8;
    case DType::kInt16: return pb::TYPE_INT16;
    case DType::kInt32: return pb::TYPE_INT32;
    case DType::kInt64: return pb::TYPE_INT64;
    case DType::kFloat16: return pb::TYPE_FP16;
    case DType::kFloat32: return pb::TYPE_FP32;
    case DType::kFloat64: return pb::TYPE_FP64;
    case DType::kString: return pb::TYPE_STRING;
    case DType::kBFloat16: return pb::TYPE_BF16;
    case DType::kUndefined: break;
  }
  return pb::TYPE_INVALID;
}

// Copies `values` (a repeated protobuf field) into `tensor` as T, checking
// the count and, for narrowing integer types, the range.
template <typename T, typename Field>
void FillTyped(const Field& values, Tensor& tensor, const std::string& input) {
  KILN_CHECK(static_cast<int64_t>(values.size()) == tensor.numel(), "input '", input,
             "': contents hold ", values.size(), " values but shape ",
             DimsToString(tensor.dims()), " needs ", tensor.numel());
  T* out = tensor.data<T>();
  int64_t i = 0;
  for (const auto& v : values) {
    using V = std::decay_t<decltype(v)>;
    if constexpr (std::is_integral_v<T> && std::is_integral_v<V> && !std::is_same_v<V, bool>) {
      KILN_CHECK(std::in_range<T>(v), "input '", input, "': value ", v, " at index ", i,
                 " is out of range for ", DTypeName(tensor.dtype()));
    }
    out[i++] = static_cast<T>(v);
  }
}

// The typed `contents` of one input → tensor.
void FillFromContents(const pb::InferTensorContents& c, Tensor& tensor, const std::string& input) {
  switch (tensor.dtype()) {
    case DType::kBool: {
      KILN_CHECK(DTypeSize(DType::kBool) == 1, "BOOL storage is not one byte");
      return FillTyped<uint8_t>(c.bool_contents(), tensor, input);
    }
    case DType::kInt8: return FillTyped<int8_t>(c.int_contents(), tensor, input);
    case DType::kInt16: return FillTyped<int16_t>(c.int_contents(), tensor, input);
    case DType::kInt32: return FillTyped<int32_t>(c.int_contents(), tensor, input);
    case DType::kInt64: return FillTyped<int64_t>(c.int64_contents(), tensor, input);
    case DType::kUInt8: return FillTyped<uint8_t>(c.uint_contents(), tensor, input);
    case DType::kUInt16: return FillTyped<uint16_t>(c.uint_contents(), tensor, input);
    case DType::kUInt32: return FillTyped<uint32_t>(c.uint_contents(), tensor, input);
    case DType::kUInt64: return FillTyped<uint64_t>(c.uint64_contents(), tensor, input);
    case DType::kFloat32: return FillTyped<float>(c.fp32_contents(), tensor, input);
    case DType::kFloat64: return FillTyped<double>(c.fp64_contents(), tensor, input);
    default:
      Fail("input '", input, "': datatype ", KServeDatatype(tensor.dtype()),
           " has no typed contents field; send it in raw_input_contents");
  }
}

bool HasContents(const pb::InferTensorContents& c) {
  return c.bool_contents_size() || c.int_contents_size() || c.int64_contents_size() ||
         c.uint_contents_size() || c.uint64_contents_size() || c.fp32_contents_size() ||
         c.fp64_contents_size() || c.bytes_contents_size();
}

using ParameterMap = google::protobuf::Map<std::string, pb::InferParameter>;

// A non-negative integer parameter (tritonclient sends int64_param; uint64 is accepted too).
grpc::Status NonNegativeParameter(const ParameterMap& params, const std::string& key,
                                  const std::string& what, bool required, uint64_t* out) {
  *out = 0;
  const auto it = params.find(key);
  if (it == params.end()) {
    return required ? BadRequest(what + " uses shared memory but has no parameter '" + key + "'")
                    : grpc::Status::OK;
  }
  const pb::InferParameter& p = it->second;
  if (p.parameter_choice_case() == pb::InferParameter::kInt64Param && p.int64_param() >= 0) {
    *out = static_cast<uint64_t>(p.int64_param());
  } else if (p.parameter_choice_case() == pb::InferParameter::kUint64Param) {
    *out = p.uint64_param();
  } else {
    return BadRequest(what + ": parameter '" + key + "' must be a non-negative integer");
  }
  return grpc::Status::OK;
}

// The shared memory reference of an input or requested output; `found`
// false when it has no "shared_memory_region" parameter.
grpc::Status SharedMemoryRefOf(const ParameterMap& params, const std::string& what, bool* found,
                               SharedMemoryRef* ref) {
  const auto it = params.find("shared_memory_region");
  *found = it != params.end();
  if (!*found) return grpc::Status::OK;
  if (it->second.parameter_choice_case() != pb::InferParameter::kStringParam ||
      it->second.string_param().empty()) {
    return BadRequest(what + ": parameter 'shared_memory_region' must be a region name");
  }
  ref->region = it->second.string_param();
  grpc::Status status =
      NonNegativeParameter(params, "shared_memory_byte_size", what, true, &ref->byte_size);
  if (!status.ok()) return status;
  return NonNegativeParameter(params, "shared_memory_offset", what, false, &ref->offset);
}

// ModelInferRequest → InferRequest. Returns INVALID_ARGUMENT naming the
// input at fault for anything malformed.
grpc::Status ToInferRequest(const ServerCore& core, const pb::ModelInferRequest& in,
                            const grpc::ServerContextBase* context, InferRequest* out) {
  if (in.model_name().empty()) return BadRequest("model_name is empty");
  out->model = in.model_name();
  out->version = in.model_version();
  out->id = in.id();

  for (const auto& [key, value] : in.parameters()) {
    if (key == "timeout") {
      if (value.parameter_choice_case() != pb::InferParameter::kInt64Param ||
          value.int64_param() < 0) {
        return BadRequest("parameter 'timeout' must be a non-negative int64 (microseconds)");
      }
      out->timeout_us = value.int64_param();
    } else if (key == "sequence_id" || key == "sequence_start" || key == "sequence_end") {
      const bool set = value.int64_param() != 0 || value.bool_param() ||
                       !value.string_param().empty() || value.uint64_param() != 0;
      if (set) return BadRequest("sequence batching ('" + key + "') is not supported by kiln");
    }
    // Other parameters (priority, headers, custom ones) do not change the result.
  }
  // A client deadline bounds how long the request may wait in the queue (it
  // only ever tightens the request's or the model's own timeout).
  if (context != nullptr && context->deadline() != std::chrono::system_clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
                          context->deadline() - std::chrono::system_clock::now())
                          .count();
    const int64_t left_us = std::max<int64_t>(left, 1);
    int64_t timeout_us = out->timeout_us;
    if (timeout_us == 0) {
      const std::optional<ModelConfig> config = core.Config(out->model);
      if (config) timeout_us = config->default_timeout_us;
    }
    out->timeout_us = timeout_us > 0 ? std::min(timeout_us, left_us) : left_us;
  }

  // raw_input_contents has one entry per input that is not in shared
  // memory, in order (what tritonclient sends).
  int data_inputs = 0;
  for (const auto& input : in.inputs()) {
    if (!input.parameters().count("shared_memory_region")) ++data_inputs;
  }
  const bool raw = in.raw_input_contents_size() > 0;
  if (raw && in.raw_input_contents_size() != data_inputs) {
    return BadRequest("raw_input_contents has " + std::to_string(in.raw_input_contents_size()) +
                      " entries but the request has " + std::to_string(data_inputs) +
                      " inputs outside shared memory (one entry per such input, in order)");
  }
  if (in.inputs_size() == 0) return BadRequest("the request has no inputs");
  std::set<std::string> seen;
  int raw_index = 0;
  for (int i = 0; i < in.inputs_size(); ++i) {
    const auto& input = in.inputs(i);
    const std::string& name = input.name();
    if (name.empty()) return BadRequest("input " + std::to_string(i) + " has no name");
    if (!seen.insert(name).second) return BadRequest("input '" + name + "' is given twice");
    DType dtype;
    try {
      dtype = DTypeFromKServe(input.datatype());
    } catch (const std::exception& e) {
      return BadRequest("input '" + name + "': " + e.what());
    }
    if (dtype == DType::kString || DTypeSize(dtype) == 0) {
      return BadRequest("input '" + name + "': datatype " + input.datatype() +
                        " is not supported by kiln");
    }
    std::vector<int64_t> dims(input.shape().begin(), input.shape().end());
    int64_t numel = 1;
    for (int64_t d : dims) {
      if (d < 0) {
        return BadRequest("input '" + name + "': shape " + DimsToString(dims) +
                          " has a negative dimension");
      }
      if (d > 0 && numel > kMaxElements / d) {
        return BadRequest("input '" + name + "': shape " + DimsToString(dims) + " is too large");
      }
      numel *= d;
    }
    const size_t nbytes = static_cast<size_t>(numel) * DTypeSize(dtype);
    bool in_shared_memory = false;
    SharedMemoryRef ref;
    grpc::Status shm_status =
        SharedMemoryRefOf(input.parameters(), "input '" + name + "'", &in_shared_memory, &ref);
    if (!shm_status.ok()) return shm_status;
    if (in_shared_memory) {
      if (HasContents(input.contents())) {
        return BadRequest("input '" + name + "' has both contents and shared memory parameters");
      }
      out->shared_memory_inputs.push_back({name, dtype, dims, ref});
      continue;
    }
    if (raw) {
      if (HasContents(input.contents())) {
        return BadRequest("input '" + name +
                          "': contents must be empty when raw_input_contents is used");
      }
      const std::string& bytes = in.raw_input_contents(raw_index++);
      if (bytes.size() != nbytes) {
        return BadRequest("input '" + name + "': raw_input_contents holds " +
                          std::to_string(bytes.size()) + " bytes but " + input.datatype() +
                          DimsToString(dims) + " needs " + std::to_string(nbytes));
      }
      Tensor t(dtype, dims);
      if (nbytes > 0) std::memcpy(t.raw_data(), bytes.data(), nbytes);
      out->inputs.emplace_back(name, std::move(t));
    } else {
      if (numel > 0 && !HasContents(input.contents())) {
        return BadRequest("input '" + name +
                          "' has no data (neither contents nor raw_input_contents)");
      }
      Tensor t(dtype, dims);
      try {
        FillFromContents(input.contents(), t, name);
      } catch (const std::exception& e) {
        return BadRequest(e.what());
      }
      out->inputs.emplace_back(name, std::move(t));
    }
  }
  for (const auto& output : in.outputs()) {
    if (output.name().empty()) return BadRequest("a requested output has no name");
    const auto it = output.parameters().find("classification");
    if (it != output.parameters().end() && it->second.int64_param() > 0) {
      return BadRequest("output '" + output.name() +
                        "': the classification extension is not supported by kiln");
    }
    bool in_shared_memory = false;
    SharedMemoryRef ref;
    grpc::Status shm_status = SharedMemoryRefOf(
        output.parameters(), "output '" + output.name() + "'", &in_shared_memory, &ref);
    if (!shm_status.ok()) return shm_status;
    if (in_shared_memory) out->shared_memory_outputs.emplace_back(output.name(), ref);
    out->requested_outputs.push_back(output.name());
  }
  return grpc::Status::OK;
}

// InferResponse outputs → ModelInferResponse (raw_output_contents, as Triton).
grpc::Status FromInferResponse(const InferResponse& in, pb::ModelInferResponse* out) {
  out->set_model_name(in.model);
  out->set_model_version(in.version);
  out->set_id(in.id);
  for (const auto& [name, tensor] : in.outputs) {
    if (tensor.dtype() == DType::kString || DTypeSize(tensor.dtype()) == 0) {
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "output '" + name + "' has unsupported dtype " +
                              DTypeName(tensor.dtype()));
    }
    auto* o = out->add_outputs();
    o->set_name(name);
    o->set_datatype(KServeDatatype(tensor.dtype()));
    for (int64_t d : tensor.dims()) o->add_shape(d);
    std::string* raw = out->add_raw_output_contents();  // One per output keeps the indices aligned.
    if (auto shm = in.shared_memory_outputs.find(name); shm != in.shared_memory_outputs.end()) {
      // The bytes are in the client's region already; say where.
      (*o->mutable_parameters())["shared_memory_region"].set_string_param(shm->second.region);
      (*o->mutable_parameters())["shared_memory_byte_size"].set_int64_param(
          static_cast<int64_t>(shm->second.byte_size));
      if (shm->second.offset != 0) {
        (*o->mutable_parameters())["shared_memory_offset"].set_int64_param(
            static_cast<int64_t>(shm->second.offset));
      }
      continue;
    }
    raw->assign(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
  }
  return grpc::Status::OK;
}

void FillTensorMetadata(const TensorIO& io, bool batched,
                        pb::ModelMetadataResponse::TensorMetadata* out) {
  out->set_name(io.name);
  out->set_datatype(KServeDatatype(io.dtype));
  if (batched) out->add_shape(-1);
  for (int64_t d : io.dims) out->add_shape(d);
}

// Requests answered through the callback API that have not been finished
// yet: Stop() waits for them, so that no completion callback (run by a
// batcher thread) finishes a call after the server is gone.
using InFlight = InFlightCount;

// One ModelInfer call between its handler and its completion: finishes the
// call exactly once (ServerCore's callback, or the handler when InferAsync
// throws), then releases its in-flight count.
class UnaryCall {
 public:
  UnaryCall(grpc::ServerUnaryReactor* reactor, pb::ModelInferResponse* response,
            std::shared_ptr<InFlight> in_flight)
      : reactor_(reactor), response_(response), in_flight_(std::move(in_flight)) {
    in_flight_->Add();
  }
  pb::ModelInferResponse* response() const { return response_; }
  void Finish(const grpc::Status& status) {
    if (finished_.exchange(true)) return;
    // `reactor_` and `response_` belong to the call and stay valid until
    // Finish; nothing of the call may be touched after it.
    reactor_->Finish(status);
    in_flight_->Done();
  }

 private:
  grpc::ServerUnaryReactor* const reactor_;
  pb::ModelInferResponse* const response_;
  const std::shared_ptr<InFlight> in_flight_;
  std::atomic<bool> finished_{false};
};

// ModelInfer runs on gRPC's callback API: the handler only parses the
// request and hands it to ServerCore::InferAsync, and the reply is finished
// from the completion callback, so no thread waits while a request sits in
// the batcher queue or runs (a blocking handler needs one thread per request
// in flight). The other RPCs are short and stay synchronous.
using ServiceBase = pb::GRPCInferenceService::WithCallbackMethod_ModelInfer<
    pb::GRPCInferenceService::Service>;

class Service final : public ServiceBase {
 public:
  Service(ServerCore& core, std::shared_ptr<InFlight> in_flight)
      : core_(core), in_flight_(std::move(in_flight)) {}

  // Both ModelInfer overloads (the base's disabled sync one and ours).
  using ServiceBase::ModelInfer;

  grpc::Status ServerLive(grpc::ServerContext*, const pb::ServerLiveRequest*,
                          pb::ServerLiveResponse* response) override {
    return Guard("ServerLive", [&] {
      response->set_live(core_.Live());
      return grpc::Status::OK;
    });
  }

  grpc::Status ServerReady(grpc::ServerContext*, const pb::ServerReadyRequest*,
                           pb::ServerReadyResponse* response) override {
    return Guard("ServerReady", [&] {
      response->set_ready(core_.Ready());
      return grpc::Status::OK;
    });
  }

  grpc::Status ModelReady(grpc::ServerContext*, const pb::ModelReadyRequest* request,
                          pb::ModelReadyResponse* response) override {
    return Guard("ModelReady", [&] {
      response->set_ready(core_.ModelReady(request->name(), request->version()));
      return grpc::Status::OK;
    });
  }

  grpc::Status ServerMetadata(grpc::ServerContext*, const pb::ServerMetadataRequest*,
                              pb::ServerMetadataResponse* response) override {
    return Guard("ServerMetadata", [&] {
      response->set_name(core_.ServerName());
      response->set_version(core_.ServerVersion());
      for (const std::string& e : core_.Extensions()) response->add_extensions(e);
      return grpc::Status::OK;
    });
  }

  grpc::Status ModelMetadata(grpc::ServerContext*, const pb::ModelMetadataRequest* request,
                             pb::ModelMetadataResponse* response) override {
    return Guard("ModelMetadata", [&] {
      const std::string& model = request->name();
      const std::optional<serve::ModelConfig> config = core_.Config(model);
      if (!config) return UnknownModel(model);
      grpc::Status status = CheckVersion(model, request->version());
      if (!status.ok()) return status;
      response->set_name(config->name.empty() ? model : config->name);
      for (const std::string& v : Versions(model)) response->add_versions(v);
      response->set_platform(config->platform);
      const bool batched = config->max_batch_size > 0;
      for (const TensorIO& io : config->inputs) {
        FillTensorMetadata(io, batched, response->add_inputs());
      }
      for (const TensorIO& io : config->outputs) {
        FillTensorMetadata(io, batched, response->add_outputs());
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status ModelConfig(grpc::ServerContext*, const pb::ModelConfigRequest* request,
                           pb::ModelConfigResponse* response) override {
    return Guard("ModelConfig", [&] {
      const std::string& model = request->name();
      const std::optional<serve::ModelConfig> config = core_.Config(model);
      if (!config) return UnknownModel(model);
      grpc::Status status = CheckVersion(model, request->version());
      if (!status.ok()) return status;
      pb::ModelConfig* c = response->mutable_config();
      c->set_name(config->name.empty() ? model : config->name);
      c->set_platform(config->platform);
      c->set_backend("kiln");
      c->set_max_batch_size(config->max_batch_size);
      c->set_default_model_filename(config->model_file);
      (*c->mutable_parameters())["precision"].set_string_value(config->precision);
      for (const TensorIO& io : config->inputs) {
        pb::ModelInput* in = c->add_input();
        in->set_name(io.name);
        in->set_data_type(ConfigDataType(io.dtype));
        for (int64_t d : io.dims) in->add_dims(d);
      }
      for (const TensorIO& io : config->outputs) {
        pb::ModelOutput* out = c->add_output();
        out->set_name(io.name);
        out->set_data_type(ConfigDataType(io.dtype));
        for (int64_t d : io.dims) out->add_dims(d);
      }
      if (config->dynamic_batching) {
        pb::ModelDynamicBatching* db = c->mutable_dynamic_batching();
        for (int size : config->preferred_batch_sizes) db->add_preferred_batch_size(size);
        db->set_max_queue_delay_microseconds(
            static_cast<uint64_t>(std::max<int64_t>(config->max_queue_delay_us, 0)));
        if (config->max_queue_size > 0 || config->default_timeout_us > 0) {
          pb::ModelQueuePolicy* policy = db->mutable_default_queue_policy();
          policy->set_max_queue_size(static_cast<uint32_t>(std::max(config->max_queue_size, 0)));
          policy->set_default_timeout_microseconds(
              static_cast<uint64_t>(std::max<int64_t>(config->default_timeout_us, 0)));
          policy->set_allow_timeout_override(true);
        }
      }
      pb::ModelInstanceGroup* group = c->add_instance_group();
      group->set_name(c->name());
      group->set_count(config->instance_count);
      for (int gpu : config->gpus) group->add_gpus(gpu);
      group->set_kind(config->instance_kind == "cpu"   ? pb::ModelInstanceGroup::KIND_CPU
                      : config->instance_kind == "gpu" ? pb::ModelInstanceGroup::KIND_GPU
                                                       : pb::ModelInstanceGroup::KIND_AUTO);
      return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const pb::ModelInferRequest* request,
                                       pb::ModelInferResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    const auto received = std::chrono::steady_clock::now();
    std::shared_ptr<UnaryCall> call;
    try {
      call = std::make_shared<UnaryCall>(reactor, response, in_flight_);
    } catch (const std::exception& e) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INTERNAL, std::string("ModelInfer: ") + e.what()));
      return reactor;
    }
    InferRequest infer;
    grpc::Status status =
        Guard("ModelInfer", [&] { return ToInferRequest(core_, *request, context, &infer); });
    if (!status.ok()) {
      call->Finish(status);
      return reactor;
    }
    infer.received = received;
    status = Guard("ModelInfer", [&] {
      // The callback runs on a batcher thread (or right here for a request
      // refused up front); it references only the call, never the service.
      core_.InferAsync(std::move(infer), [call](InferResponse result) {
        call->Finish(Guard("ModelInfer", [&] {
          if (!result.status.ok()) return ToGrpc(result.status);
          return FromInferResponse(result, call->response());
        }));
      });
      return grpc::Status::OK;
    });
    // InferAsync threw: no callback will come (or it already finished the call).
    if (!status.ok()) call->Finish(status);
    return reactor;
  }

  // Requests on one stream run concurrently (so the dynamic batcher can merge
  // them); each response is written as soon as it is ready, carrying the
  // request's id. Errors go into error_message and the stream stays open.
  grpc::Status ModelStreamInfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<pb::ModelStreamInferResponse, pb::ModelInferRequest>* stream)
      override {
    struct Pending {
      std::mutex mu;
      std::condition_variable done;
      int count = 0;
      bool write_failed = false;
    };
    auto pending = std::make_shared<Pending>();
    auto write = [pending, stream](const pb::ModelStreamInferResponse& r) {
      std::lock_guard<std::mutex> lock(pending->mu);
      if (!pending->write_failed && !stream->Write(r)) pending->write_failed = true;
    };
    grpc::Status result = Guard("ModelStreamInfer", [&] {
      pb::ModelInferRequest request;
      while (stream->Read(&request)) {
        const auto received = std::chrono::steady_clock::now();
        InferRequest infer;
        grpc::Status status = ToInferRequest(core_, request, context, &infer);
        infer.received = received;
        if (!status.ok()) {
          pb::ModelStreamInferResponse r;
          r.set_error_message(status.error_message());
          r.mutable_infer_response()->set_model_name(request.model_name());
          r.mutable_infer_response()->set_model_version(request.model_version());
          r.mutable_infer_response()->set_id(request.id());
          write(r);
          continue;
        }
        {
          std::lock_guard<std::mutex> lock(pending->mu);
          ++pending->count;
        }
        core_.InferAsync(std::move(infer), [pending, write](InferResponse result) {
          pb::ModelStreamInferResponse r;
          try {
            grpc::Status status = ToGrpc(result.status);
            if (status.ok()) status = FromInferResponse(result, r.mutable_infer_response());
            if (!status.ok()) {
              r.Clear();
              r.set_error_message(status.error_message());
              r.mutable_infer_response()->set_model_name(result.model);
              r.mutable_infer_response()->set_model_version(result.version);
              r.mutable_infer_response()->set_id(result.id);
            }
            write(r);
          } catch (const std::exception& e) {
            r.Clear();
            r.set_error_message(std::string("ModelStreamInfer: ") + e.what());
            write(r);
          }
          std::lock_guard<std::mutex> lock(pending->mu);
          --pending->count;
          pending->done.notify_all();
        });
      }
      return grpc::Status::OK;
    });
    // The callbacks use `stream`: wait for every one before returning.
    std::unique_lock<std::mutex> lock(pending->mu);
    pending->done.wait(lock, [&] { return pending->count == 0; });
    return result;
  }

  grpc::Status ModelStatistics(grpc::ServerContext*, const pb::ModelStatisticsRequest* request,
                               pb::ModelStatisticsResponse* response) override {
    return Guard("ModelStatistics", [&] {
      std::vector<std::string> models;
      if (request->name().empty()) {
        models = core_.LoadedModels();
      } else {
        models.push_back(request->name());
      }
      for (const std::string& model : models) {
        const std::optional<ModelStats> stats = core_.Stats(model);
        if (!stats) {
          if (!request->name().empty()) return UnknownModel(model);
          continue;  // Unloaded between the two calls.
        }
        const std::vector<std::string> versions = Versions(model);
        const std::string version = versions.empty() ? "" : versions.back();
        if (!request->version().empty() && request->version() != version) {
          return grpc::Status(grpc::StatusCode::NOT_FOUND, "model '" + model + "' version '" +
                                                               request->version() +
                                                               "' is not loaded");
        }
        pb::ModelStatistics* s = response->add_model_stats();
        s->set_name(model);
        s->set_version(version);
        s->set_last_inference(stats->last_inference_ms);
        s->set_inference_count(stats->inferences);
        s->set_execution_count(stats->executions);
        pb::InferStatistics* is = s->mutable_inference_stats();
        auto duration = [](pb::StatisticDuration* d, uint64_t count, uint64_t ns) {
          d->set_count(count);
          d->set_ns(ns);
        };
        duration(is->mutable_success(), stats->success, stats->success_ns);
        duration(is->mutable_fail(), stats->failure, stats->failure_ns);
        duration(is->mutable_queue(), stats->success, stats->queue_ns);
        duration(is->mutable_compute_input(), stats->success, stats->compute_input_ns);
        duration(is->mutable_compute_infer(), stats->success, stats->compute_infer_ns);
        duration(is->mutable_compute_output(), stats->success, stats->compute_output_ns);
        for (const auto& [batch, b] : stats->batch_stats) {
          pb::InferBatchStatistics* bs = s->add_batch_stats();
          bs->set_batch_size(static_cast<uint64_t>(batch));
          duration(bs->mutable_compute_input(), b.executions, b.compute_input_ns);
          duration(bs->mutable_compute_infer(), b.executions, b.compute_infer_ns);
          duration(bs->mutable_compute_output(), b.executions, b.compute_output_ns);
        }
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status RepositoryIndex(grpc::ServerContext*, const pb::RepositoryIndexRequest* request,
                               pb::RepositoryIndexResponse* response) override {
    return Guard("RepositoryIndex", [&] {
      if (!request->repository_name().empty()) {
        return BadRequest("repository_name must be empty: kiln serves one model repository");
      }
      for (const ServerCore::RepositoryEntry& e : core_.Index()) {
        if (request->ready() && e.state != "READY") continue;
        auto* m = response->add_models();
        m->set_name(e.name);
        m->set_version(e.version);
        m->set_state(e.state);
        m->set_reason(e.reason);
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status RepositoryModelLoad(grpc::ServerContext*,
                                   const pb::RepositoryModelLoadRequest* request,
                                   pb::RepositoryModelLoadResponse*) override {
    return Guard("RepositoryModelLoad", [&] {
      if (request->model_name().empty()) return BadRequest("model_name is empty");
      for (const auto& [key, value] : request->parameters()) {
        (void)value;
        return BadRequest("load parameter '" + key +
                          "' is not supported by kiln: edit the model's config.json in the "
                          "repository and load it again");
      }
      return ToGrpc(core_.Load(request->model_name()));
    });
  }

  grpc::Status RepositoryModelUnload(grpc::ServerContext*,
                                     const pb::RepositoryModelUnloadRequest* request,
                                     pb::RepositoryModelUnloadResponse*) override {
    return Guard("RepositoryModelUnload", [&] {
      if (request->model_name().empty()) return BadRequest("model_name is empty");
      // 'unload_dependents' (always sent by tritonclient) concerns ensembles,
      // which kiln does not have: nothing else depends on a model.
      return ToGrpc(core_.Unload(request->model_name()));
    });
  }

  grpc::Status SystemSharedMemoryStatus(grpc::ServerContext*,
                                        const pb::SystemSharedMemoryStatusRequest* request,
                                        pb::SystemSharedMemoryStatusResponse* response) override {
    return Guard("SystemSharedMemoryStatus", [&] {
      std::vector<SharedMemoryRegionStatus> regions;
      grpc::Status status = ToGrpc(core_.SystemSharedMemoryStatus(request->name(), &regions));
      if (!status.ok()) return status;
      for (const SharedMemoryRegionStatus& r : regions) {
        auto& entry = (*response->mutable_regions())[r.name];
        entry.set_name(r.name);
        entry.set_key(r.key);
        entry.set_offset(r.offset);
        entry.set_byte_size(r.byte_size);
      }
      return grpc::Status::OK;
    });
  }

  grpc::Status SystemSharedMemoryRegister(grpc::ServerContext*,
                                          const pb::SystemSharedMemoryRegisterRequest* request,
                                          pb::SystemSharedMemoryRegisterResponse*) override {
    return Guard("SystemSharedMemoryRegister", [&] {
      return ToGrpc(core_.RegisterSystemSharedMemory(request->name(), request->key(),
                                                     request->offset(), request->byte_size()));
    });
  }

  grpc::Status SystemSharedMemoryUnregister(grpc::ServerContext*,
                                            const pb::SystemSharedMemoryUnregisterRequest* request,
                                            pb::SystemSharedMemoryUnregisterResponse*) override {
    return Guard("SystemSharedMemoryUnregister",
                 [&] { return ToGrpc(core_.UnregisterSystemSharedMemory(request->name())); });
  }

  // CUDA shared memory is not supported: no region can exist, so status
  // lists none (NOT_FOUND for a named one), unregister has nothing to do
  // (perf_analyzer unregisters everything at start) and register fails.
  grpc::Status CudaSharedMemoryStatus(grpc::ServerContext*,
                                      const pb::CudaSharedMemoryStatusRequest* request,
                                      pb::CudaSharedMemoryStatusResponse*) override {
    if (request->name().empty()) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "unable to find cuda shared memory region: '" + request->name() +
                            "' (kiln does not support CUDA shared memory)");
  }

  grpc::Status CudaSharedMemoryRegister(grpc::ServerContext*,
                                        const pb::CudaSharedMemoryRegisterRequest* request,
                                        pb::CudaSharedMemoryRegisterResponse*) override {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "cannot register cuda shared memory region '" + request->name() +
                            "': CUDA shared memory is not supported by kiln; use system shared "
                            "memory");
  }

  grpc::Status CudaSharedMemoryUnregister(grpc::ServerContext*,
                                          const pb::CudaSharedMemoryUnregisterRequest*,
                                          pb::CudaSharedMemoryUnregisterResponse*) override {
    return grpc::Status::OK;
  }

 private:
  // The versions the repository lists for a model (ascending, as listed).
  std::vector<std::string> Versions(const std::string& model) const {
    std::vector<std::string> versions;
    for (const ServerCore::RepositoryEntry& e : core_.Index()) {
      if (e.name == model && !e.version.empty() &&
          std::find(versions.begin(), versions.end(), e.version) == versions.end()) {
        versions.push_back(e.version);
      }
    }
    return versions;
  }

  grpc::Status CheckVersion(const std::string& model, const std::string& version) const {
    if (version.empty() || core_.ModelReady(model, version)) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "Request for unknown model: '" + model + "' version " + version +
                            " is not found");
  }

  ServerCore& core_;
  const std::shared_ptr<InFlight> in_flight_;
};

}  // namespace

struct GrpcFrontend::Impl {
  ServerCore& core;
  int port;
  int max_threads;
  std::mutex mu;
  std::shared_ptr<InFlight> in_flight;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
};

GrpcFrontend::GrpcFrontend(ServerCore& core, int port, int max_threads)
    : impl_(new Impl{core, port, max_threads, {}, std::make_shared<InFlight>(), nullptr, nullptr}) {
  KILN_CHECK(max_threads >= 2, "the gRPC frontend needs at least 2 threads, not ", max_threads);
}

GrpcFrontend::~GrpcFrontend() { Stop(); }

void GrpcFrontend::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  KILN_CHECK(!impl_->server, "gRPC frontend is already started on port ", impl_->port);
  KILN_CHECK(impl_->port >= 0 && impl_->port <= 65535, "gRPC port ", impl_->port,
             " is out of range (0-65535)");
  auto service = std::make_unique<Service>(impl_->core, impl_->in_flight);
  const std::string address = "0.0.0.0:" + std::to_string(impl_->port);
  int bound_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(service.get());
  const size_t max_bytes = impl_->core.options().max_request_bytes;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<size_t>(max_bytes, static_cast<size_t>(INT_MAX))));
  builder.SetMaxSendMessageSize(-1);
  // gRPC turns SO_REUSEPORT on by default, which would let a second server
  // silently share the port; a taken port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  grpc::ResourceQuota quota("kiln_grpc");
  quota.SetMaxThreads(impl_->max_threads);
  builder.SetResourceQuota(quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  KILN_CHECK(server && bound_port > 0, "gRPC frontend cannot listen on ", address,
             " (is the port in use?)");
  impl_->port = bound_port;
  impl_->service = std::move(service);
  impl_->server = std::move(server);
}

void GrpcFrontend::Stop() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->server) return;
  impl_->server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  // Calls past the grace period were cancelled, but the requests behind the
  // callback calls are still in ServerCore, whose callbacks finish them: wait
  // for every one (each ends with its batch or its queue timeout).
  impl_->in_flight->WaitIdle();
  impl_->server->Wait();
  impl_->server.reset();
  impl_->service.reset();
}

int GrpcFrontend::port() const { return impl_->port; }

}  // namespace kiln::serve
