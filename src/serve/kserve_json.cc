#include "serve/kserve_json.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <type_traits>

#include "kiln/error.h"

namespace kiln::serve {

using nlohmann::json;

namespace {

// Appends every scalar of a (possibly nested) JSON array to `out`.
void Flatten(const json& value, std::vector<const json*>& out, int depth) {
  KILN_CHECK(depth < 64, "\"data\" is nested more than 64 levels deep");
  if (value.is_array()) {
    for (const auto& v : value) Flatten(v, out, depth + 1);
  } else {
    out.push_back(&value);
  }
}

const char* JsonKind(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a floating-point number";
  if (v.is_string()) return "a string";
  if (v.is_null()) return "null";
  if (v.is_object()) return "an object";
  return "an array";
}

template <typename T>
void FillInteger(const std::string& name, const char* datatype,
                 const std::vector<const json*>& values, T* out) {
  for (size_t i = 0; i < values.size(); ++i) {
    const json& v = *values[i];
    KILN_CHECK(v.is_number_integer(), "input '", name, "': element ", i, " of \"data\" is ",
               JsonKind(v), ", expected an integer for datatype ", datatype);
    bool in_range;
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      in_range = u <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else {
      int64_t s = v.get<int64_t>();
      if constexpr (std::is_signed_v<T>) {
        in_range = s >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                   s <= static_cast<int64_t>(std::numeric_limits<T>::max());
      } else {
        in_range = s >= 0 && static_cast<uint64_t>(s) <= std::numeric_limits<T>::max();
      }
    }
    KILN_CHECK(in_range, "input '", name, "': element ", i, " of \"data\" (", v.dump(),
               ") is out of range for datatype ", datatype);
    out[i] = v.is_number_unsigned() ? static_cast<T>(v.get<uint64_t>())
                                    : static_cast<T>(v.get<int64_t>());
  }
}

std::vector<double> FloatValues(const std::string& name, const char* datatype,
                                const std::vector<const json*>& values) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const json& v = *values[i];
    KILN_CHECK(v.is_number(), "input '", name, "': element ", i, " of \"data\" is ", JsonKind(v),
               ", expected a number for datatype ", datatype);
    out[i] = v.get<double>();
  }
  return out;
}

template <typename T>
void AppendIntegers(const Tensor& t, json& out) {
  const T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(p[i]);
}

std::vector<int64_t> ParseShape(const std::string& what, const json& shape) {
  KILN_CHECK(shape.is_array(), what, ": \"shape\" must be an array of non-negative integers");
  std::vector<int64_t> dims;
  for (const auto& d : shape) {
    KILN_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, what,
               ": \"shape\" must be an array of non-negative integers, got ", shape.dump());
    dims.push_back(d.get<int64_t>());
  }
  return dims;
}

int64_t CheckedNumel(const std::string& what, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    KILN_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / 8 / d, what, ": shape ",
               DimsToString(dims), " is too large");
    n *= d;
  }
  return n;
}

const json* Find(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// parameters.<key> as a bool; Triton clients send real booleans.
std::optional<bool> BoolParameter(const std::string& what, const json* params, const char* key) {
  if (!params) return std::nullopt;
  const json* v = Find(*params, key);
  if (!v || v->is_null()) return std::nullopt;
  KILN_CHECK(v->is_boolean(), what, ": parameter \"", key, "\" must be a boolean, got ", v->dump());
  return v->get<bool>();
}

const json* ParametersOf(const std::string& what, const json& object) {
  const json* params = Find(object, "parameters");
  if (!params || params->is_null()) return nullptr;
  KILN_CHECK(params->is_object(), what, ": \"parameters\" must be an object");
  return params;
}

// The shared memory parameters of an input or requested output that has
// "shared_memory_region".
SharedMemoryRef SharedMemoryRefFromJson(const std::string& what, const json& params) {
  SharedMemoryRef ref;
  const json* region = Find(params, "shared_memory_region");
  KILN_CHECK(region && region->is_string() && !region->get<std::string>().empty(), what,
             ": parameter \"shared_memory_region\" must be a region name (a non-empty string)");
  ref.region = region->get<std::string>();
  auto non_negative = [&](const char* key, bool required) -> uint64_t {
    const json* v = Find(params, key);
    if (!v || v->is_null()) {
      KILN_CHECK(!required, what, " uses shared memory region '", ref.region,
                 "' but has no parameter \"", key, "\"");
      return 0;
    }
    KILN_CHECK(v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0),
               what, ": parameter \"", key, "\" must be a non-negative integer, got ", v->dump());
    return v->get<uint64_t>();
  };
  ref.byte_size = non_negative("shared_memory_byte_size", true);
  ref.offset = non_negative("shared_memory_offset", false);
  return ref;
}

json StatDuration(uint64_t count, uint64_t ns) { return {{"count", count}, {"ns", ns}}; }

}  // namespace

bool OutputFormat::BinaryFor(const std::string& output) const {
  for (const auto& [name, binary] : requested) {
    if (name == output) return binary.value_or(binary_default);
  }
  return binary_default;
}

Tensor TensorFromJson(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                      const json& data) {
  std::vector<const json*> values;
  Flatten(data, values, 0);
  int64_t numel = CheckedNumel("input '" + name + "'", shape);
  KILN_CHECK(static_cast<int64_t>(values.size()) == numel, "input '", name, "': \"data\" has ",
             values.size(), " elements but shape ", DimsToString(shape), " needs ", numel);
  const char* datatype = KServeDatatype(dtype);
  Tensor t(dtype, shape);
  switch (dtype) {
    case DType::kFloat32: {
      auto v = FloatValues(name, datatype, values);
      for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = static_cast<float>(v[i]);
      break;
    }
    case DType::kFloat64: {
      auto v = FloatValues(name, datatype, values);
      std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(double));
      break;
    }
    case DType::kFloat16: {
      auto v = FloatValues(name, datatype, values);
      for (size_t i = 0; i < v.size(); ++i)
        t.data<uint16_t>()[i] = FloatToHalf(static_cast<float>(v[i]));
      break;
    }
    case DType::kBFloat16: {
      auto v = FloatValues(name, datatype, values);
      for (size_t i = 0; i < v.size(); ++i)
        t.data<uint16_t>()[i] = FloatToBFloat16(static_cast<float>(v[i]));
      break;
    }
    case DType::kInt8: FillInteger(name, datatype, values, t.data<int8_t>()); break;
    case DType::kInt16: FillInteger(name, datatype, values, t.data<int16_t>()); break;
    case DType::kInt32: FillInteger(name, datatype, values, t.data<int32_t>()); break;
    case DType::kInt64: FillInteger(name, datatype, values, t.data<int64_t>()); break;
    case DType::kUInt8: FillInteger(name, datatype, values, t.data<uint8_t>()); break;
    case DType::kUInt16: FillInteger(name, datatype, values, t.data<uint16_t>()); break;
    case DType::kUInt32: FillInteger(name, datatype, values, t.data<uint32_t>()); break;
    case DType::kUInt64: FillInteger(name, datatype, values, t.data<uint64_t>()); break;
    case DType::kBool:
      for (size_t i = 0; i < values.size(); ++i) {
        const json& v = *values[i];
        KILN_CHECK(v.is_boolean(), "input '", name, "': element ", i, " of \"data\" is ",
                   JsonKind(v), ", expected true or false for datatype BOOL");
        t.data<uint8_t>()[i] = v.get<bool>() ? 1 : 0;
      }
      break;
    default:
      Fail("input '", name, "': datatype ", datatype, " is not supported in JSON \"data\"");
  }
  return t;
}

json TensorToJson(const Tensor& t) {
  json out = json::array();
  int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kFloat32:
      for (int64_t i = 0; i < n; ++i) out.push_back(t.data<float>()[i]);
      break;
    case DType::kFloat64:
      for (int64_t i = 0; i < n; ++i) out.push_back(t.data<double>()[i]);
      break;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i) out.push_back(HalfToFloat(t.data<uint16_t>()[i]));
      break;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i) out.push_back(BFloat16ToFloat(t.data<uint16_t>()[i]));
      break;
    case DType::kInt8: AppendIntegers<int8_t>(t, out); break;
    case DType::kInt16: AppendIntegers<int16_t>(t, out); break;
    case DType::kInt32: AppendIntegers<int32_t>(t, out); break;
    case DType::kInt64: AppendIntegers<int64_t>(t, out); break;
    case DType::kUInt8: AppendIntegers<uint8_t>(t, out); break;
    case DType::kUInt16: AppendIntegers<uint16_t>(t, out); break;
    case DType::kUInt32: AppendIntegers<uint32_t>(t, out); break;
    case DType::kUInt64: AppendIntegers<uint64_t>(t, out); break;
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i) out.push_back(t.data<uint8_t>()[i] != 0);
      break;
    default:
      Fail("a ", DTypeName(t.dtype()), " tensor cannot be written as JSON data");
  }
  return out;
}

ParsedInferRequest ParseInferRequest(std::string_view body, std::optional<size_t> header_length,
                                     const std::string& model, const std::string& version) {
  std::string_view header = body;
  std::string_view binary;
  if (header_length) {
    KILN_CHECK(*header_length <= body.size(), "Inference-Header-Content-Length is ",
               *header_length, " but the request body has only ", body.size(), " bytes");
    header = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  json doc;
  try {
    doc = json::parse(header.begin(), header.end());
  } catch (const json::exception& e) {
    Fail("malformed JSON in the inference request: ", e.what());
  }
  KILN_CHECK(doc.is_object(), "the inference request must be a JSON object");

  ParsedInferRequest parsed;
  InferRequest& req = parsed.request;
  req.model = model;
  req.version = version;
  if (const json* id = Find(doc, "id"); id && !id->is_null()) {
    KILN_CHECK(id->is_string(), "\"id\" must be a string");
    req.id = id->get<std::string>();
  }

  if (const json* params = ParametersOf("the request", doc)) {
    parsed.format.binary_default =
        BoolParameter("the request", params, "binary_data_output").value_or(false);
    if (const json* timeout = Find(*params, "timeout"); timeout && !timeout->is_null()) {
      KILN_CHECK(timeout->is_number_integer() && timeout->get<int64_t>() >= 0,
                 "request parameter \"timeout\" must be a non-negative integer (microseconds)");
      req.timeout_us = timeout->get<int64_t>();
    }
    if (const json* seq = Find(*params, "sequence_id"); seq && !seq->is_null()) {
      bool none = (seq->is_number_integer() && seq->get<int64_t>() == 0) ||
                  (seq->is_string() && seq->get<std::string>().empty());
      KILN_CHECK(none, "sequence batching (request parameter \"sequence_id\") is not supported");
    }
  }

  const json* inputs = Find(doc, "inputs");
  KILN_CHECK(inputs && inputs->is_array() && !inputs->empty(),
             "the inference request needs a non-empty \"inputs\" array");
  size_t offset = 0;
  std::set<std::string> seen;
  for (size_t i = 0; i < inputs->size(); ++i) {
    const json& in = (*inputs)[i];
    KILN_CHECK(in.is_object(), "inputs[", i, "] must be an object");
    const json* name = Find(in, "name");
    KILN_CHECK(name && name->is_string(), "inputs[", i, "] needs a string \"name\"");
    std::string n = name->get<std::string>();
    std::string what = "input '" + n + "'";
    KILN_CHECK(seen.insert(n).second, what, " appears more than once");
    const json* shape = Find(in, "shape");
    KILN_CHECK(shape, what, " needs a \"shape\"");
    std::vector<int64_t> dims = ParseShape(what, *shape);
    const json* datatype = Find(in, "datatype");
    KILN_CHECK(datatype && datatype->is_string(), what, " needs a string \"datatype\"");
    DType dtype;
    try {
      dtype = DTypeFromKServe(datatype->get<std::string>());
    } catch (const Error& e) {
      Fail(what, ": ", e.what());
    }
    const json* params = ParametersOf(what, in);
    const json* binary_size = params ? Find(*params, "binary_data_size") : nullptr;
    const json* data = Find(in, "data");
    if (const json* region = params ? Find(*params, "shared_memory_region") : nullptr;
        region && !region->is_null()) {
      KILN_CHECK(!data, what, " has both \"data\" and \"shared_memory_region\"");
      KILN_CHECK(!binary_size || binary_size->is_null(), what,
                 " has both \"binary_data_size\" and \"shared_memory_region\"");
      KILN_CHECK(DTypeSize(dtype) > 0, what, ": datatype ", datatype->get<std::string>(),
                 " is not supported");
      CheckedNumel(what, dims);
      req.shared_memory_inputs.push_back({n, dtype, dims, SharedMemoryRefFromJson(what, *params)});
      continue;
    }
    Tensor tensor;
    if (binary_size && !binary_size->is_null()) {
      KILN_CHECK(binary_size->is_number_integer() && binary_size->get<int64_t>() >= 0, what,
                 ": \"binary_data_size\" must be a non-negative integer");
      KILN_CHECK(!data, what, " has both \"data\" and \"binary_data_size\"");
      KILN_CHECK(header_length, what,
                 " uses binary data but the request has no Inference-Header-Content-Length header");
      size_t size = binary_size->get<size_t>();
      KILN_CHECK(size <= binary.size() - offset, what, ": \"binary_data_size\" is ", size,
                 " but only ", binary.size() - offset, " bytes of binary data remain");
      int64_t numel = CheckedNumel(what, dims);
      size_t element = DTypeSize(dtype);
      KILN_CHECK(element > 0, what, ": datatype ", datatype->get<std::string>(),
                 " is not supported");
      KILN_CHECK(static_cast<size_t>(numel) * element == size, what, ": \"binary_data_size\" is ",
                 size, " bytes but shape ", DimsToString(dims), " of ",
                 datatype->get<std::string>(), " needs ", static_cast<size_t>(numel) * element);
      tensor = Tensor(dtype, dims);
      if (size) std::memcpy(tensor.raw_data(), binary.data() + offset, size);
      offset += size;
    } else {
      KILN_CHECK(data, what, " has neither \"data\" nor a \"binary_data_size\" parameter");
      tensor = TensorFromJson(n, dtype, dims, *data);
    }
    req.inputs.emplace_back(std::move(n), std::move(tensor));
  }
  KILN_CHECK(offset == binary.size(), "the request carries ", binary.size() - offset,
             " bytes of binary data that no input claims (check binary_data_size and "
             "Inference-Header-Content-Length)");

  if (const json* outputs = Find(doc, "outputs"); outputs && !outputs->is_null()) {
    KILN_CHECK(outputs->is_array(), "\"outputs\" must be an array");
    for (size_t i = 0; i < outputs->size(); ++i) {
      const json& out = (*outputs)[i];
      KILN_CHECK(out.is_object(), "outputs[", i, "] must be an object");
      const json* name = Find(out, "name");
      KILN_CHECK(name && name->is_string(), "outputs[", i, "] needs a string \"name\"");
      std::string n = name->get<std::string>();
      std::string what = "requested output '" + n + "'";
      const json* params = ParametersOf(what, out);
      std::optional<bool> binary_flag = BoolParameter(what, params, "binary_data");
      if (params) {
        if (const json* region = Find(*params, "shared_memory_region");
            region && !region->is_null()) {
          req.shared_memory_outputs.emplace_back(n, SharedMemoryRefFromJson(what, *params));
        }
        const json* cls = Find(*params, "classification");
        KILN_CHECK(!cls || cls->is_null() || (cls->is_number_integer() && cls->get<int64_t>() == 0),
                   what, ": the classification extension is not supported by kiln");
      }
      parsed.format.requested.emplace_back(n, binary_flag);
      req.requested_outputs.push_back(n);
    }
  }
  return parsed;
}

FormattedResponse FormatInferResponse(const InferResponse& response, const OutputFormat& format) {
  json doc = {{"model_name", response.model}, {"model_version", response.version}};
  if (!response.id.empty()) doc["id"] = response.id;
  json outputs = json::array();
  std::vector<const Tensor*> binary_tensors;
  for (const auto& [name, tensor] : response.outputs) {
    json out = {{"name", name},
                {"datatype", KServeDatatype(tensor.dtype())},
                {"shape", tensor.dims()}};
    if (auto shm = response.shared_memory_outputs.find(name);
        shm != response.shared_memory_outputs.end()) {
      // The data is in the region. Like Triton, no "parameters": Triton's
      // C++ client (perf_analyzer) reads any output "parameters" as binary
      // data and fails without "binary_data_size".
    } else if (format.BinaryFor(name)) {
      out["parameters"] = {{"binary_data_size", tensor.nbytes()}};
      binary_tensors.push_back(&tensor);
    } else {
      out["data"] = TensorToJson(tensor);
    }
    outputs.push_back(std::move(out));
  }
  doc["outputs"] = std::move(outputs);
  FormattedResponse result;
  result.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  result.header_length = result.body.size();
  result.binary = !binary_tensors.empty();
  for (const Tensor* t : binary_tensors) {
    result.body.append(static_cast<const char*>(t->raw_data()), t->nbytes());
  }
  return result;
}

std::string ErrorJson(const std::string& message) {
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

json ServerMetadataJson(const std::string& name, const std::string& version,
                        const std::vector<std::string>& extensions) {
  return {{"name", name}, {"version", version}, {"extensions", extensions}};
}

std::string TritonConfigDatatype(DType dtype) {
  std::string name = KServeDatatype(dtype);
  if (name == "BYTES") return "TYPE_STRING";
  return "TYPE_" + name;
}

json ModelMetadataJson(const ModelConfig& config, const std::vector<std::string>& versions) {
  auto tensors = [&](const std::vector<TensorIO>& ios) {
    json list = json::array();
    for (const auto& io : ios) {
      std::vector<int64_t> shape;
      if (config.max_batch_size > 0) shape.push_back(-1);
      shape.insert(shape.end(), io.dims.begin(), io.dims.end());
      list.push_back({{"name", io.name}, {"datatype", KServeDatatype(io.dtype)}, {"shape", shape}});
    }
    return list;
  };
  return {{"name", config.name},
          {"versions", versions},
          {"platform", config.platform},
          {"inputs", tensors(config.inputs)},
          {"outputs", tensors(config.outputs)}};
}

json ModelConfigJson(const ModelConfig& config) {
  json doc = json::object();
  if (!config.raw_json.empty()) {
    json raw = json::parse(config.raw_json, nullptr, false);
    if (raw.is_object()) doc = std::move(raw);
  }
  auto tensors = [](const std::vector<TensorIO>& ios) {
    json list = json::array();
    for (const auto& io : ios) {
      list.push_back(
          {{"name", io.name}, {"data_type", TritonConfigDatatype(io.dtype)}, {"dims", io.dims}});
    }
    return list;
  };
  doc["name"] = config.name;
  doc["platform"] = config.platform;
  doc["backend"] = "kiln";
  doc["max_batch_size"] = config.max_batch_size;
  doc["input"] = tensors(config.inputs);
  doc["output"] = tensors(config.outputs);
  if (config.dynamic_batching) {
    json db = {{"preferred_batch_size", config.preferred_batch_sizes},
               {"max_queue_delay_microseconds", config.max_queue_delay_us}};
    json policy = json::object();
    if (config.max_queue_size > 0) policy["max_queue_size"] = config.max_queue_size;
    if (config.default_timeout_us > 0)
      policy["default_timeout_microseconds"] = config.default_timeout_us;
    if (!policy.empty()) db["default_queue_policy"] = policy;
    doc["dynamic_batching"] = db;
  } else {
    doc.erase("dynamic_batching");
  }
  std::string kind = config.instance_kind == "cpu"   ? "KIND_CPU"
                     : config.instance_kind == "gpu" ? "KIND_GPU"
                                                     : "KIND_AUTO";
  json group = {{"name", config.name}, {"count", config.instance_count}, {"kind", kind}};
  if (!config.gpus.empty()) group["gpus"] = config.gpus;
  doc["instance_group"] = json::array({group});
  return doc;
}

json ModelStatsJson(const std::string& name, const std::string& version, const ModelStats& s) {
  json inference_stats = {
      {"success", StatDuration(s.success, s.success_ns)},
      {"fail", StatDuration(s.failure, s.failure_ns)},
      {"queue", StatDuration(s.success, s.queue_ns)},
      {"compute_input", StatDuration(s.success, s.compute_input_ns)},
      {"compute_infer", StatDuration(s.success, s.compute_infer_ns)},
      {"compute_output", StatDuration(s.success, s.compute_output_ns)},
      {"cache_hit", StatDuration(0, 0)},
      {"cache_miss", StatDuration(0, 0)},
  };
  json batch_stats = json::array();
  for (const auto& [size, b] : s.batch_stats) {
    batch_stats.push_back({{"batch_size", size},
                           {"compute_input", StatDuration(b.executions, b.compute_input_ns)},
                           {"compute_infer", StatDuration(b.executions, b.compute_infer_ns)},
                           {"compute_output", StatDuration(b.executions, b.compute_output_ns)}});
  }
  return {{"name", name},
          {"version", version},
          {"last_inference", s.last_inference_ms},
          {"inference_count", s.inferences},
          {"execution_count", s.executions},
          {"inference_stats", inference_stats},
          {"batch_stats", batch_stats},
          {"memory_usage", json::array()}};
}

json RepositoryIndexJson(const std::vector<ServerCore::RepositoryEntry>& entries, bool ready_only) {
  json list = json::array();
  for (const auto& e : entries) {
    if (ready_only && e.state != "READY") continue;
    json item = {{"name", e.name}};
    if (!e.version.empty()) item["version"] = e.version;
    if (!e.state.empty()) item["state"] = e.state;
    if (!e.reason.empty()) item["reason"] = e.reason;
    list.push_back(std::move(item));
  }
  return list;
}

json SharedMemoryStatusJson(const std::vector<SharedMemoryRegionStatus>& regions) {
  json list = json::array();
  for (const SharedMemoryRegionStatus& r : regions) {
    list.push_back(
        {{"name", r.name}, {"key", r.key}, {"offset", r.offset}, {"byte_size", r.byte_size}});
  }
  return list;
}

}  // namespace kiln::serve
