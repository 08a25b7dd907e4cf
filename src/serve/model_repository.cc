#include "serve/model_repository.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "grpc_service.pb.h"
#include "ir/graph.h"
#include "kiln/error.h"

namespace kiln::serve {

namespace fs = std::filesystem;
using nlohmann::json;

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "cannot read '", path, "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> ListModelFolders(const std::string& repository) {
  std::error_code ec;
  KILN_CHECK(fs::is_directory(repository, ec), "model repository '", repository,
             "' is not a directory");
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(repository, ec)) {
    std::error_code dir_ec;
    if (!entry.is_directory(dir_ec)) continue;
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // Hidden folders are not models.
    names.push_back(name);
  }
  KILN_CHECK(!ec, "cannot list model repository '", repository, "': ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

DType DTypeFromConfig(const std::string& data_type) {
  KILN_CHECK(data_type.rfind("TYPE_", 0) == 0, "data_type '", data_type,
             "' is not a Triton data type (TYPE_FP32, TYPE_INT64, ...)");
  const std::string kserve = data_type.substr(5);
  if (kserve == "STRING") Fail("data_type TYPE_STRING is not supported by kiln");
  try {
    return DTypeFromKServe(kserve);
  } catch (const Error&) {
    Fail("unknown data_type '", data_type, "'");
  }
}

std::string ConfigDatatype(DType dtype) { return std::string("TYPE_") + KServeDatatype(dtype); }

namespace {

// Triton's JSON (protobuf's mapping) writes 64-bit integers as strings;
// accept both forms.
int64_t AsInt(const json& j, const std::string& what) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    size_t used = 0;
    try {
      int64_t v = std::stoll(s, &used);
      if (used == s.size()) return v;
    } catch (const std::exception&) {
    }
  }
  Fail(what, " must be an integer, got ", j.dump());
}

std::string AsString(const json& j, const std::string& what) {
  KILN_CHECK(j.is_string(), what, " must be a string, got ", j.dump());
  return j.get<std::string>();
}

const json* Field(const json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::vector<TensorIO> ParseTensors(const json& list, const std::string& what) {
  KILN_CHECK(list.is_array(), "'", what, "' must be a list");
  std::vector<TensorIO> tensors;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string where = what + "[" + std::to_string(i) + "]";
    KILN_CHECK(t.is_object(), "'", where, "' must be an object");
    TensorIO io;
    const json* name = Field(t, "name");
    KILN_CHECK(name, "'", where, "' has no name");
    io.name = AsString(*name, where + ".name");
    const json* data_type = Field(t, "data_type");
    KILN_CHECK(data_type, "", what, " '", io.name, "' has no data_type");
    try {
      io.dtype = DTypeFromConfig(AsString(*data_type, what + " '" + io.name + "' data_type"));
    } catch (const Error& e) {
      Fail(what, " '", io.name, "': ", e.what());
    }
    const json* dims = Field(t, "dims");
    KILN_CHECK(dims && dims->is_array(), what, " '", io.name, "' needs a dims list");
    for (const json& d : *dims) {
      const int64_t v = AsInt(d, what + " '" + io.name + "' dims");
      KILN_CHECK(v == -1 || v >= 0, what, " '", io.name, "' has invalid dim ", v,
                 " (use -1 for a variable dim)");
      io.dims.push_back(v);
    }
    // Triton's reshape: the model sees other dims than the client; not supported.
    KILN_CHECK(!Field(t, "reshape"), what, " '", io.name, "': 'reshape' is not supported");
    for (const TensorIO& other : tensors)
      KILN_CHECK(other.name != io.name, what, " '", io.name, "' is listed twice");
    tensors.push_back(std::move(io));
  }
  return tensors;
}

std::string LowerKind(const std::string& kind) {
  if (kind == "KIND_CPU") return "cpu";
  if (kind == "KIND_GPU") return "gpu";
  if (kind == "KIND_AUTO") return "auto";
  Fail("instance_group kind '", kind, "' is not KIND_CPU, KIND_GPU or KIND_AUTO");
}

bool IsNumber(const std::string& s) {
  return !s.empty() && s.size() < 10 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

ModelConfig ParseConfigJson(const json& j, const std::string& model_name) {
  KILN_CHECK(j.is_object(), "the config must be a JSON object");
  ModelConfig c;
  c.name = model_name;
  if (const json* name = Field(j, "name")) {
    const std::string n = AsString(*name, "name");
    KILN_CHECK(n.empty() || n == model_name, "config name '", n,
               "' does not match the model folder '", model_name, "'");
  }
  if (const json* platform = Field(j, "platform")) {
    const std::string p = AsString(*platform, "platform");
    KILN_CHECK(p.empty() || p == "onnxruntime_onnx" || p == "kiln_onnx" || p == "tensorrt_plan",
               "platform '", p, "' is not supported (kiln serves ONNX models: onnxruntime_onnx)");
    if (!p.empty()) c.platform = p;
  }
  if (const json* backend = Field(j, "backend")) {
    const std::string b = AsString(*backend, "backend");
    KILN_CHECK(b.empty() || b == "onnxruntime" || b == "kiln", "backend '", b,
               "' is not supported (kiln serves ONNX models)");
  }
  if (const json* file = Field(j, "default_model_filename")) {
    c.model_file = AsString(*file, "default_model_filename");
    KILN_CHECK(!c.model_file.empty() && c.model_file.find("..") == std::string::npos &&
                   c.model_file.find('/') == std::string::npos,
               "default_model_filename '", c.model_file, "' must be a plain file name");
  }
  if (const json* mbs = Field(j, "max_batch_size")) {
    const int64_t v = AsInt(*mbs, "max_batch_size");
    KILN_CHECK(v >= 0 && v <= (1 << 20), "max_batch_size ", v, " is out of range");
    c.max_batch_size = static_cast<int>(v);
  }
  if (const json* in = Field(j, "input")) c.inputs = ParseTensors(*in, "input");
  if (const json* out = Field(j, "output")) c.outputs = ParseTensors(*out, "output");
  if (const json* db = Field(j, "dynamic_batching")) {
    KILN_CHECK(db->is_object(), "dynamic_batching must be an object");
    c.dynamic_batching = true;
    if (const json* pref = Field(*db, "preferred_batch_size")) {
      KILN_CHECK(pref->is_array(), "dynamic_batching.preferred_batch_size must be a list");
      for (const json& p : *pref) {
        const int64_t v = AsInt(p, "preferred_batch_size");
        KILN_CHECK(v >= 1 && v <= c.max_batch_size, "preferred_batch_size ", v,
                   " must be between 1 and max_batch_size (", c.max_batch_size, ")");
        c.preferred_batch_sizes.push_back(static_cast<int>(v));
      }
      std::sort(c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end());
      c.preferred_batch_sizes.erase(
          std::unique(c.preferred_batch_sizes.begin(), c.preferred_batch_sizes.end()),
          c.preferred_batch_sizes.end());
    }
    if (const json* delay = Field(*db, "max_queue_delay_microseconds")) {
      c.max_queue_delay_us = AsInt(*delay, "max_queue_delay_microseconds");
      KILN_CHECK(c.max_queue_delay_us >= 0, "max_queue_delay_microseconds must be >= 0");
    }
    if (const json* policy = Field(*db, "default_queue_policy")) {
      KILN_CHECK(policy->is_object(), "default_queue_policy must be an object");
      if (const json* size = Field(*policy, "max_queue_size")) {
        const int64_t v = AsInt(*size, "max_queue_size");
        KILN_CHECK(v >= 0 && v <= (1 << 24), "max_queue_size ", v, " is out of range");
        c.max_queue_size = static_cast<int>(v);
      }
      if (const json* timeout = Field(*policy, "default_timeout_microseconds")) {
        c.default_timeout_us = AsInt(*timeout, "default_timeout_microseconds");
        KILN_CHECK(c.default_timeout_us >= 0, "default_timeout_microseconds must be >= 0");
      }
    }
  }
  if (const json* groups = Field(j, "instance_group")) {
    KILN_CHECK(groups->is_array(), "instance_group must be a list");
    KILN_CHECK(groups->size() <= 1, "kiln supports one instance_group per model, got ",
               groups->size());
    for (const json& g : *groups) {
      KILN_CHECK(g.is_object(), "instance_group entries must be objects");
      if (const json* count = Field(g, "count")) {
        const int64_t v = AsInt(*count, "instance_group count");
        KILN_CHECK(v >= 1 && v <= 64, "instance_group count ", v, " must be between 1 and 64");
        c.instance_count = static_cast<int>(v);
      }
      if (const json* kind = Field(g, "kind")) c.instance_kind = LowerKind(AsString(*kind, "kind"));
      if (const json* gpus = Field(g, "gpus")) {
        KILN_CHECK(gpus->is_array(), "instance_group gpus must be a list");
        for (const json& gpu : *gpus) {
          const int64_t v = AsInt(gpu, "instance_group gpus");
          KILN_CHECK(v >= 0 && v < 1024, "gpu id ", v, " is out of range");
          c.gpus.push_back(static_cast<int>(v));
        }
      }
    }
  }
  if (const json* params = Field(j, "parameters")) {
    KILN_CHECK(params->is_object(), "parameters must be an object");
    if (const json* p = Field(*params, "precision")) {
      // Triton writes parameters as {"key": {"string_value": "..."}}.
      const json* value = p->is_object() ? Field(*p, "string_value") : p;
      KILN_CHECK(value, "parameters.precision must be a string or {\"string_value\": ...}");
      c.precision = AsString(*value, "parameters.precision");
      KILN_CHECK(c.precision == "fp32" || c.precision == "tf32" || c.precision == "fp16" ||
                     c.precision == "bf16",
                 "parameters.precision '", c.precision, "' is not fp32, tf32, fp16 or bf16");
    }
  }
  return c;
}

// Checks `dims` (config, without the batch dim) against the model's `model_dims`.
void CheckDims(const std::string& what, const TensorIO& io, const std::vector<int64_t>& model_dims,
               bool model_has_rank, int max_batch_size) {
  if (!model_has_rank) return;
  const size_t batch = max_batch_size > 0 ? 1 : 0;
  KILN_CHECK(model_dims.size() == io.dims.size() + batch, what, " '", io.name, "' has dims ",
             DimsToString(io.dims), (batch ? " (plus the batch dim)" : ""), " in config.json but ",
             model_dims.size(), " dims ", DimsToString(model_dims), " in the model",
             (batch ? "" : ""));
  if (batch) {
    const int64_t first = model_dims[0];
    KILN_CHECK(first == -1 || first >= max_batch_size, what, " '", io.name,
               "' has a fixed first dim ", first, " in the model, so max_batch_size ",
               max_batch_size, " cannot be honoured (use max_batch_size 0 or a dynamic batch dim)");
  }
  for (size_t i = 0; i < io.dims.size(); ++i) {
    const int64_t m = model_dims[i + batch], d = io.dims[i];
    KILN_CHECK(m == -1 || d == -1 || m == d, what, " '", io.name, "' dim ", i, " is ", d,
               " in config.json but ", m, " in the model (model dims ", DimsToString(model_dims),
               ")");
  }
}

TensorIO FromModel(const TensorDesc& desc, int max_batch_size) {
  TensorIO io;
  io.name = desc.name;
  io.dtype = desc.dtype;
  io.dims = desc.dims;
  if (max_batch_size > 0 && !io.dims.empty()) io.dims.erase(io.dims.begin());
  return io;
}

}  // namespace

ModelConfig ParseModelConfig(const std::string& json_text, const std::string& model_name) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    Fail("config.json of model '", model_name, "' is not valid JSON: ", e.what());
  }
  try {
    return ParseConfigJson(j, model_name);
  } catch (const Error& e) {
    Fail("config.json of model '", model_name, "': ", e.what());
  } catch (const json::exception& e) {
    Fail("config.json of model '", model_name, "': ", e.what());
  }
}

namespace {

// Triton config.pbtxt fields that kiln's ModelConfig message lacks but that
// change no result here (versions, warm-up, accelerator hints, labels, ...):
// skipped. Any other unknown field is an error, so that nothing that would
// change behaviour (reshape, sequence batching, ensembles) passes silently.
const std::set<std::string>& IgnoredPbtxtFields() {
  static const std::set<std::string> fields = {
      "version_policy", "optimization",     "model_warmup",   "model_operations",
      "model_transaction_policy", "response_cache", "label_filename", "format",
      "cc_model_filenames", "metric_tags", "model_repository_agents", "runtime",
      "host_policy", "profile", "passive", "priority_levels", "default_priority_level"};
  return fields;
}

class PbtxtErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (first_error.empty()) first_error = Where(line, column) + message;
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {
    // protobuf reports a skipped field as: ... has no field named "NAME".
    static const std::string kMarker = "has no field named \"";
    const size_t at = message.find(kMarker);
    if (at == std::string::npos) return;
    const size_t begin = at + kMarker.size();
    const std::string field = message.substr(begin, message.find('"', begin) - begin);
    if (IgnoredPbtxtFields().count(field) == 0 && unsupported.empty())
      unsupported = Where(line, column) + "field '" + field + "' is not supported by kiln";
  }
  std::string first_error, unsupported;

 private:
  static std::string Where(int line, int column) {
    return "line " + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": ";
  }
};

// Triton writes repeated messages as `field [ {...} ]`, which protobuf's
// parser accepts for known fields but cannot skip for unknown ones (it wants
// `field: [ ... ]` there). Inserts that colon after every field name followed
// by '['; strings and comments are left alone, and lines keep their numbers.
std::string ColonBeforeLists(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  size_t i = 0;
  auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; };
  while (i < text.size()) {
    const char c = text[i];
    if (c == '"' || c == '\'') {
      size_t j = i + 1;
      while (j < text.size() && text[j] != c && text[j] != '\n') j += text[j] == '\\' ? 2 : 1;
      j = std::min(j + 1, text.size());
      out.append(text, i, j - i);
      i = j;
    } else if (c == '#') {
      size_t j = text.find('\n', i);
      if (j == std::string::npos) j = text.size();
      out.append(text, i, j - i);
      i = j;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < text.size() && is_word(text[j])) ++j;
      out.append(text, i, j - i);
      size_t k = j;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      if (k < text.size() && text[k] == '[') out += ':';
      i = j;
    } else if (is_word(c)) {  // A number (1e5 is not a field name).
      size_t j = i;
      while (j < text.size() && (is_word(text[j]) || text[j] == '-' || text[j] == '+')) ++j;
      out.append(text, i, j - i);
      i = j;
    } else {
      out += c;
      ++i;
    }
  }
  return out;
}

}  // namespace

ModelConfig ParseModelConfigPbtxt(const std::string& text, const std::string& model_name) {
  const std::string what = "config.pbtxt of model '" + model_name + "'";
  ::inference::ModelConfig message;
  google::protobuf::TextFormat::Parser parser;
  PbtxtErrors errors;
  parser.RecordErrorsTo(&errors);
  parser.AllowUnknownField(true);
  if (!parser.ParseFromString(ColonBeforeLists(text), &message)) {
    Fail(what, " is not valid protobuf text (Triton's ModelConfig): ",
         errors.first_error.empty() ? "parse error" : errors.first_error);
  }
  KILN_CHECK(errors.unsupported.empty(), what, ": ", errors.unsupported);
  // Through protobuf's JSON mapping into the config.json parser, so both
  // files mean exactly the same.
  std::string json_text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json_text, options);
  KILN_CHECK(status.ok(), what, ": cannot convert to JSON: ", status.ToString());
  try {
    return ParseConfigJson(json::parse(json_text), model_name);
  } catch (const Error& e) {
    Fail(what, ": ", e.what());
  } catch (const json::exception& e) {
    Fail(what, ": ", e.what());
  }
}

ModelLocation LocateModelFile(const std::string& model_dir, const ModelConfig& config) {
  std::error_code ec;
  int best = -1;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir, ec)) {
    std::error_code e2;
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory(e2) || !IsNumber(name)) continue;
    if (!fs::exists(entry.path() / config.model_file, e2)) continue;
    best = std::max(best, std::stoi(name));
  }
  KILN_CHECK(!ec, "cannot list model folder '", model_dir, "': ", ec.message());
  if (best >= 0) {
    return {std::to_string(best),
            (fs::path(model_dir) / std::to_string(best) / config.model_file).string()};
  }
  const fs::path direct = fs::path(model_dir) / config.model_file;
  KILN_CHECK(fs::exists(direct, ec), "model '", config.name, "' has no ", config.model_file,
             " (looked for ", model_dir, "/<version>/", config.model_file, " and ",
             direct.string(), ")");
  return {"1", direct.string()};
}

void CompleteAndValidateConfig(ModelConfig& config, const Model& model) {
  const std::string prefix = "model '" + config.name + "': ";
  try {
    const auto& graph_inputs = model.graph().inputs();
    const auto& graph_outputs = model.graph().outputs();
    if (config.inputs.empty()) {
      for (const TensorDesc& d : model.inputs()) {
        KILN_CHECK(graph_inputs[&d - model.inputs().data()]->type.has_rank(), "input '", d.name,
                   "' has an unknown rank in the model; list it in config.json");
        config.inputs.push_back(FromModel(d, config.max_batch_size));
      }
    }
    if (config.outputs.empty()) {
      for (const TensorDesc& d : model.outputs()) config.outputs.push_back(FromModel(d, config.max_batch_size));
    }
    for (const TensorIO& io : config.inputs) {
      auto it = std::find_if(model.inputs().begin(), model.inputs().end(),
                             [&](const TensorDesc& d) { return d.name == io.name; });
      if (it == model.inputs().end()) {
        std::string names;
        for (const TensorDesc& d : model.inputs()) names += (names.empty() ? "" : ", ") + d.name;
        Fail("input '", io.name, "' in config.json is not an input of the model (inputs: ", names,
             ")");
      }
      KILN_CHECK(io.dtype == it->dtype, "input '", io.name, "' is ", ConfigDatatype(io.dtype),
                 " in config.json but ", ConfigDatatype(it->dtype), " in the model");
      CheckDims("input", io, it->dims,
                graph_inputs[static_cast<size_t>(it - model.inputs().begin())]->type.has_rank(),
                config.max_batch_size);
    }
    for (const TensorDesc& d : model.inputs()) {
      bool listed = std::any_of(config.inputs.begin(), config.inputs.end(),
                                [&](const TensorIO& io) { return io.name == d.name; });
      KILN_CHECK(listed, "model input '", d.name, "' is missing from config.json's input list");
    }
    for (TensorIO& io : config.outputs) {
      auto it = std::find_if(model.outputs().begin(), model.outputs().end(),
                             [&](const TensorDesc& d) { return d.name == io.name; });
      if (it == model.outputs().end()) {
        std::string names;
        for (const TensorDesc& d : model.outputs()) names += (names.empty() ? "" : ", ") + d.name;
        Fail("output '", io.name, "' in config.json is not an output of the model (outputs: ",
             names, ")");
      }
      // Outputs of unknown type get theirs from the config.
      if (it->dtype != DType::kUndefined)
        KILN_CHECK(io.dtype == it->dtype, "output '", io.name, "' is ", ConfigDatatype(io.dtype),
                   " in config.json but ", ConfigDatatype(it->dtype), " in the model");
      CheckDims("output", io, it->dims,
                graph_outputs[static_cast<size_t>(it - model.outputs().begin())]->type.has_rank(),
                config.max_batch_size);
    }
    if (config.max_batch_size > 0) {
      for (const TensorDesc& d : model.outputs()) {
        if (!graph_outputs[static_cast<size_t>(&d - model.outputs().data())]->type.has_rank())
          continue;
        KILN_CHECK(!d.dims.empty(), "output '", d.name,
                   "' is a scalar, so the model cannot be batched (max_batch_size must be 0)");
      }
    }
  } catch (const Error& e) {
    Fail(prefix, e.what());
  }
}

std::string ConfigToJson(const ModelConfig& c) {
  auto tensors = [](const std::vector<TensorIO>& list) {
    json out = json::array();
    for (const TensorIO& io : list)
      out.push_back({{"name", io.name}, {"data_type", ConfigDatatype(io.dtype)}, {"dims", io.dims}});
    return out;
  };
  json j = {{"name", c.name},
            {"platform", c.platform},
            {"backend", "kiln"},
            {"max_batch_size", c.max_batch_size},
            {"input", tensors(c.inputs)},
            {"output", tensors(c.outputs)},
            {"default_model_filename", c.model_file}};
  if (c.dynamic_batching) {
    j["dynamic_batching"] = {
        {"preferred_batch_size", c.preferred_batch_sizes},
        {"max_queue_delay_microseconds", c.max_queue_delay_us},
        {"default_queue_policy",
         {{"max_queue_size", c.max_queue_size},
          {"default_timeout_microseconds", c.default_timeout_us}}}};
  }
  const std::string kind =
      c.instance_kind == "cpu" ? "KIND_CPU" : c.instance_kind == "gpu" ? "KIND_GPU" : "KIND_AUTO";
  j["instance_group"] = json::array(
      {{{"name", c.name}, {"count", c.instance_count}, {"kind", kind}, {"gpus", c.gpus}}});
  j["parameters"] = {{"precision", {{"string_value", c.precision}}}};
  return j.dump();
}

}  // namespace kiln::serve
