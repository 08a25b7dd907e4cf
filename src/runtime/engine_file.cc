// The engine file: a versioned, checksummed binary holding the lowered graph
// (weights in their final dtype and layout), the chosen tactics, the build
// report and the compatibility facts it was built under.
//
//   "KILNENG\0" | u32 format version | u64 payload bytes | u64 FNV-1a of payload | payload
//   version 1 (static shapes): payload = compat JSON | report JSON | graph
//   version 2 (optimization profiles): payload = compat JSON | report JSON |
//     profiles JSON | frozen inputs | source ONNX bytes | weight pool |
//     base graph | plan count | per plan: profile, report JSON, graph
//   (in version 2, graphs name their constants by index in the weight pool,
//   so weights identical across plans are stored once).
//
// Loading recreates layers with the stored tactics (no re-timing).
#include <cublasLt.h>
#include <cudnn.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "builder/image_input.h"
#include "cuda/device.h"
#include "runtime/engine_impl.h"

namespace kiln {
namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'E', 'N', 'G', '\0'};
constexpr uint32_t kFormatVersion = 1;          // Static-shape engines.
constexpr uint32_t kProfilesFormatVersion = 2;  // Engines with optimization profiles.

uint64_t Fnv1a(const char* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

class Writer {
 public:
  template <typename T>
  void Pod(T v) {
    const char* p = reinterpret_cast<const char*>(&v);
    buf_.insert(buf_.end(), p, p + sizeof(T));
  }
  void Bytes(const void* p, size_t n) {
    Pod<uint64_t>(n);
    const char* c = static_cast<const char*>(p);
    buf_.insert(buf_.end(), c, c + n);
  }
  void Str(const std::string& s) { Bytes(s.data(), s.size()); }
  void Append(const std::vector<char>& other) { buf_.insert(buf_.end(), other.begin(), other.end()); }
  void TensorData(const Tensor& t) {
    Pod<int32_t>(static_cast<int32_t>(t.dtype()));
    Pod<uint32_t>(static_cast<uint32_t>(t.rank()));
    for (int64_t d : t.dims()) Pod<int64_t>(d);
    Bytes(t.raw_data(), t.nbytes());
  }
  std::vector<char>& buffer() { return buf_; }

 private:
  std::vector<char> buf_;
};

class Reader {
 public:
  Reader(const char* data, size_t size, std::string path) : p_(data), end_(data + size), path_(std::move(path)) {}
  template <typename T>
  T Pod() {
    Need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string Str() {
    uint64_t n = Pod<uint64_t>();
    Need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  Tensor TensorData() {
    DType dtype = static_cast<DType>(Pod<int32_t>());
    uint32_t rank = Pod<uint32_t>();
    KILN_CHECK(rank <= 16, path_, ": corrupt engine file (tensor rank ", rank, ")");
    std::vector<int64_t> dims;
    for (uint32_t i = 0; i < rank; ++i) {
      dims.push_back(Pod<int64_t>());
      KILN_CHECK(dims.back() >= 0, path_, ": corrupt engine file (negative dim)");
    }
    KILN_CHECK(DTypeSize(dtype) > 0, path_, ": corrupt engine file (dtype ", static_cast<int>(dtype), ")");
    uint64_t n = Pod<uint64_t>();
    Need(n);
    Tensor t(dtype, dims);
    KILN_CHECK(t.nbytes() == n, path_, ": corrupt engine file (tensor size)");
    if (n) std::memcpy(t.raw_data(), p_, n);
    p_ += n;
    return t;
  }
  bool done() const { return p_ == end_; }

 private:
  void Need(uint64_t n) {
    KILN_CHECK(n <= static_cast<uint64_t>(end_ - p_), path_, ": corrupt or truncated engine file");
  }
  const char* p_;
  const char* end_;
  std::string path_;
};

enum AttrKind : uint8_t { kInt, kFloat, kString, kTensor, kInts, kFloats, kStrings };

void WriteAttr(Writer& w, const ir::AttrValue& v) {
  w.Pod<uint8_t>(static_cast<uint8_t>(v.index()));
  switch (v.index()) {
    case kInt: w.Pod<int64_t>(std::get<int64_t>(v)); break;
    case kFloat: w.Pod<float>(std::get<float>(v)); break;
    case kString: w.Str(std::get<std::string>(v)); break;
    case kTensor: w.TensorData(std::get<Tensor>(v)); break;
    case kInts: {
      const auto& x = std::get<std::vector<int64_t>>(v);
      w.Pod<uint64_t>(x.size());
      for (int64_t e : x) w.Pod<int64_t>(e);
      break;
    }
    case kFloats: {
      const auto& x = std::get<std::vector<float>>(v);
      w.Pod<uint64_t>(x.size());
      for (float e : x) w.Pod<float>(e);
      break;
    }
    case kStrings: {
      const auto& x = std::get<std::vector<std::string>>(v);
      w.Pod<uint64_t>(x.size());
      for (const auto& e : x) w.Str(e);
      break;
    }
  }
}

ir::AttrValue ReadAttr(Reader& r, const std::string& path) {
  uint8_t kind = r.Pod<uint8_t>();
  auto count = [&] {
    uint64_t n = r.Pod<uint64_t>();
    KILN_CHECK(n < (1u << 24), path, ": corrupt engine file (attribute length)");
    return n;
  };
  switch (kind) {
    case kInt: return r.Pod<int64_t>();
    case kFloat: return r.Pod<float>();
    case kString: return r.Str();
    case kTensor: return r.TensorData();
    case kInts: {
      std::vector<int64_t> x(count());
      for (auto& e : x) e = r.Pod<int64_t>();
      return x;
    }
    case kFloats: {
      std::vector<float> x(count());
      for (auto& e : x) e = r.Pod<float>();
      return x;
    }
    case kStrings: {
      std::vector<std::string> x(count());
      for (auto& e : x) e = r.Str();
      return x;
    }
  }
  Fail(path, ": corrupt engine file (attribute kind ", static_cast<int>(kind), ")");
}

nlohmann::json CompatFacts(Precision precision) {
  cuda::DeviceInfo device = cuda::QueryDevice(0);
  return {{"sm", device.compute_major * 10 + device.compute_minor},
          {"gpu", device.name},
          {"cudnn", cudnnGetVersion()},
          {"cublasLt", cublasLtGetVersion()},
          {"precision", PrecisionName(precision)}};
}

nlohmann::json InfoToJson(const EngineInfo& info) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerInfo& l : info.layers)
    layers.push_back({{"name", l.name}, {"op", l.op_type}, {"fused", l.fused}, {"tactic", l.tactic},
                      {"num_tactics", l.num_tactics}, {"tactic_ms", l.tactic_time_ms},
                      {"inputs", l.inputs}, {"outputs", l.outputs}, {"flops", l.flops},
                      {"bytes", l.bytes}, {"launches", l.kernel_launches}, {"alias", l.alias}});
  return {{"build_seconds", info.build_seconds}, {"tactics_timed", info.tactics_timed},
          {"tactics_cached", info.tactics_cached}, {"layers", layers}};
}

void InfoFromJson(const nlohmann::json& j, EngineInfo& info) {
  info.build_seconds = j.value("build_seconds", 0.0);
  info.tactics_timed = j.value("tactics_timed", 0);
  info.tactics_cached = j.value("tactics_cached", 0);
  for (const auto& l : j.at("layers")) {
    LayerInfo li;
    li.name = l.value("name", "");
    li.op_type = l.value("op", "");
    li.fused = l.value("fused", "");
    li.tactic = l.value("tactic", "");
    li.num_tactics = l.value("num_tactics", 1);
    li.tactic_time_ms = l.value("tactic_ms", 0.0);
    li.inputs = l.value("inputs", "");
    li.outputs = l.value("outputs", "");
    li.flops = l.value("flops", 0.0);
    li.bytes = l.value("bytes", 0.0);
    li.kernel_launches = l.value("launches", 0);
    li.alias = l.value("alias", false);
    info.layers.push_back(std::move(li));
  }
}

// Constants of version-2 graphs, stored once per distinct content.
class TensorPool {
 public:
  uint32_t Add(const Tensor& t) {
    uint64_t h = Fnv1a(static_cast<const char*>(t.raw_data()), t.nbytes());
    for (uint32_t i : by_hash_[h]) {
      const Tensor& o = tensors_[i];
      if (o.dtype() == t.dtype() && o.dims() == t.dims() &&
          (t.nbytes() == 0 || std::memcmp(o.raw_data(), t.raw_data(), t.nbytes()) == 0))
        return i;
    }
    tensors_.push_back(t);
    by_hash_[h].push_back(static_cast<uint32_t>(tensors_.size() - 1));
    return static_cast<uint32_t>(tensors_.size() - 1);
  }
  const std::vector<Tensor>& tensors() const { return tensors_; }

 private:
  std::vector<Tensor> tensors_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> by_hash_;
};

// A plan's lowered graph and tactics; constants inline, or by pool index.
void WriteGraph(Writer& w, const runtime::Plan& e, TensorPool* pool) {
  const ir::Graph& g = *e.graph;
  w.Pod<int32_t>(g.opset_version);
  w.Str(g.name);
  std::unordered_map<const ir::Value*, int32_t> index;
  w.Pod<uint64_t>(g.values().size());
  for (const auto& v : g.values()) {
    index[v.get()] = static_cast<int32_t>(index.size());
    w.Str(v->name);
    w.Pod<int32_t>(static_cast<int32_t>(v->type.dtype));
    w.Pod<uint8_t>(v->type.has_rank());
    if (v->type.has_rank()) {
      std::vector<int64_t> dims = ir::KnownDims(*v->type.shape);
      w.Pod<uint32_t>(static_cast<uint32_t>(dims.size()));
      for (int64_t d : dims) w.Pod<int64_t>(d);
    }
    auto it = e.layouts.find(v.get());
    w.Pod<uint8_t>(static_cast<uint8_t>(it == e.layouts.end() ? gpu::Layout::kRowMajor : it->second));
    w.Pod<uint8_t>(v->is_graph_input);
    w.Pod<uint8_t>(v->is_constant());
    if (v->is_constant()) {
      if (pool) {
        w.Pod<uint32_t>(pool->Add(v->constant));
      } else {
        w.TensorData(v->constant);
      }
    }
  }
  auto ref = [&](const ir::Value* v) { return v ? index.at(v) : -1; };
  w.Pod<uint64_t>(g.nodes().size());
  for (size_t n = 0; n < g.nodes().size(); ++n) {
    const ir::Node& node = *g.nodes()[n];
    w.Str(node.op_type);
    w.Str(node.name);
    w.Str(node.domain);
    w.Pod<int32_t>(node.opset);
    w.Pod<uint32_t>(static_cast<uint32_t>(node.inputs.size()));
    for (const ir::Value* v : node.inputs) w.Pod<int32_t>(ref(v));
    w.Pod<uint32_t>(static_cast<uint32_t>(node.outputs.size()));
    for (const ir::Value* v : node.outputs) w.Pod<int32_t>(ref(v));
    w.Pod<uint32_t>(static_cast<uint32_t>(node.attrs.all().size()));
    for (const auto& [name, value] : node.attrs.all()) {
      w.Str(name);
      WriteAttr(w, value);
    }
    w.Pod<int32_t>(e.tactics[n]);
  }
  w.Pod<uint32_t>(static_cast<uint32_t>(g.inputs().size()));
  for (const ir::Value* v : g.inputs()) w.Pod<int32_t>(ref(v));
  w.Pod<uint32_t>(static_cast<uint32_t>(g.outputs().size()));
  for (const ir::Value* v : g.outputs()) w.Pod<int32_t>(ref(v));
}

nlohmann::json ShapesToJson(const InputShapes& shapes) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, dims] : shapes) j[name] = dims;
  return j;
}

nlohmann::json ProfilesToJson(const Engine::Impl& e) {
  nlohmann::json profiles = nlohmann::json::array();
  for (const OptimizationProfile& p : e.profiles) {
    nlohmann::json inputs = nlohmann::json::object();
    for (const auto& [name, r] : p.inputs) inputs[name] = {{"min", r.min}, {"opt", r.opt}, {"max", r.max}};
    profiles.push_back(inputs);
  }
  return {{"profiles", profiles},
          {"base_profile", e.profile},
          {"conv_layout", e.lowering.conv_layout},
          {"conv_pool_stems", e.lowering.conv_pool_stems},
          {"shapes", ShapesToJson(e.lowering.shapes)}};
}

// The image input option (BuildConfig::image_input) rides in a JSON section
// both formats have (compatibility facts in version 1, profiles in version
// 2) under a key files without it lack: older files load as "no image input".
constexpr char kImageInputKey[] = "image_input";
void PutImageInput(const Engine::Impl& e, nlohmann::json& j) {
  if (e.lowering.image_input.enabled()) j[kImageInputKey] = builder::ImageInputToJson(e.lowering.image_input);
}
void GetImageInput(const nlohmann::json& j, Engine::Impl& e, const std::string& path) {
  if (!j.contains(kImageInputKey)) return;
  try {
    e.lowering.image_input = builder::ImageInputFromJson(j.at(kImageInputKey));
  } catch (const Error& error) {
    Fail(path, ": corrupt engine file (", error.what(), ")");
  }
}

}  // namespace

void Engine::Save(const std::string& path) const {
  const Impl& e = *impl_;
  const bool dynamic = !e.profiles.empty();
  Writer w;
  nlohmann::json compat = CompatFacts(e.precision);
  if (!dynamic) PutImageInput(e, compat);
  w.Str(compat.dump());
  w.Str(InfoToJson(e.info).dump());
  if (!dynamic) {
    WriteGraph(w, e, nullptr);
  } else {
    nlohmann::json profiles = ProfilesToJson(e);
    PutImageInput(e, profiles);
    w.Str(profiles.dump());
    w.Pod<uint32_t>(static_cast<uint32_t>(e.lowering.frozen_inputs.size()));
    for (const auto& [name, t] : e.lowering.frozen_inputs) {
      w.Str(name);
      w.TensorData(t);
    }
    w.Str(e.source_onnx);
    // Graphs first (they fill the pool), then the pool ahead of them.
    TensorPool pool;
    Writer graphs;
    WriteGraph(graphs, e, &pool);
    std::lock_guard<std::mutex> lock(e.plans_mutex);
    graphs.Pod<uint32_t>(static_cast<uint32_t>(e.plans.size()));
    for (const auto& plan : e.plans) {
      graphs.Pod<int32_t>(plan->profile);
      graphs.Str(InfoToJson(plan->info).dump());
      WriteGraph(graphs, *plan, &pool);
    }
    w.Pod<uint64_t>(pool.tensors().size());
    for (const Tensor& t : pool.tensors()) w.TensorData(t);
    w.Append(graphs.buffer());
  }

  const std::vector<char>& payload = w.buffer();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  KILN_CHECK(out, "cannot write engine file '", path, "'");
  out.write(kMagic, sizeof(kMagic));
  uint32_t version = dynamic ? kProfilesFormatVersion : kFormatVersion;
  uint64_t size = payload.size(), checksum = Fnv1a(payload.data(), payload.size());
  out.write(reinterpret_cast<const char*>(&version), sizeof(version));
  out.write(reinterpret_cast<const char*>(&size), sizeof(size));
  out.write(reinterpret_cast<const char*>(&checksum), sizeof(checksum));
  out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
  KILN_CHECK(out.good(), "writing engine file '", path, "' failed");
}

namespace {

// Reads what WriteGraph wrote into plan.graph/layouts/tactics.
void ReadGraph(Reader& r, runtime::Plan& plan, const std::vector<Tensor>* pool, const std::string& path) {
  plan.graph = std::make_unique<ir::Graph>();
  ir::Graph& g = *plan.graph;
  g.opset_version = r.Pod<int32_t>();
  g.name = r.Str();
  uint64_t n_values = r.Pod<uint64_t>();
  KILN_CHECK(n_values < (1u << 24), path, ": corrupt engine file (value count)");
  std::vector<ir::Value*> values;
  for (uint64_t i = 0; i < n_values; ++i) {
    std::string name = r.Str();
    ir::TensorType type;
    type.dtype = static_cast<DType>(r.Pod<int32_t>());
    if (r.Pod<uint8_t>()) {
      uint32_t rank = r.Pod<uint32_t>();
      KILN_CHECK(rank <= 16, path, ": corrupt engine file (rank)");
      std::vector<int64_t> dims;
      for (uint32_t d = 0; d < rank; ++d) dims.push_back(r.Pod<int64_t>());
      type.shape = ir::ShapeFromDims(dims);
    }
    auto layout = static_cast<gpu::Layout>(r.Pod<uint8_t>());
    bool is_input = r.Pod<uint8_t>();
    bool is_constant = r.Pod<uint8_t>();
    ir::Value* v = nullptr;
    if (is_constant && pool) {
      uint32_t k = r.Pod<uint32_t>();
      KILN_CHECK(k < pool->size(), path, ": corrupt engine file (weight index)");
      v = g.AddConstant(name, (*pool)[k]);
    } else {
      v = is_constant ? g.AddConstant(name, r.TensorData()) : g.AddValue(name, type);
    }
    v->type = type;
    v->is_graph_input = is_input;
    if (layout != gpu::Layout::kRowMajor) plan.layouts[v] = layout;
    values.push_back(v);
  }
  auto value = [&](int32_t idx) -> ir::Value* {
    if (idx < 0) return nullptr;
    KILN_CHECK(static_cast<uint64_t>(idx) < values.size(), path, ": corrupt engine file (value index)");
    return values[static_cast<size_t>(idx)];
  };
  auto count = [&] {
    uint32_t n = r.Pod<uint32_t>();
    KILN_CHECK(n < (1u << 20), path, ": corrupt engine file (count)");
    return n;
  };
  uint64_t n_nodes = r.Pod<uint64_t>();
  KILN_CHECK(n_nodes < (1u << 24), path, ": corrupt engine file (node count)");
  for (uint64_t n = 0; n < n_nodes; ++n) {
    std::string op_type = r.Str(), name = r.Str(), domain = r.Str();
    int32_t opset = r.Pod<int32_t>();
    std::vector<ir::Value*> ins, outs;
    for (uint32_t i = 0, k = count(); i < k; ++i) ins.push_back(value(r.Pod<int32_t>()));
    for (uint32_t i = 0, k = count(); i < k; ++i) outs.push_back(value(r.Pod<int32_t>()));
    ir::Node* node = g.AddNode(op_type, name, ins, outs);
    node->domain = domain;
    node->opset = opset;
    for (uint32_t i = 0, k = count(); i < k; ++i) {
      std::string attr = r.Str();
      node->attrs.set(attr, ReadAttr(r, path));
    }
    plan.tactics.push_back(r.Pod<int32_t>());
  }
  for (uint32_t i = 0, k = count(); i < k; ++i) g.inputs().push_back(value(r.Pod<int32_t>()));
  for (uint32_t i = 0, k = count(); i < k; ++i) g.outputs().push_back(value(r.Pod<int32_t>()));
  g.Validate();
}

InputShapes ShapesFromJson(const nlohmann::json& j) {
  InputShapes shapes;
  for (const auto& [name, dims] : j.items()) shapes[name] = dims.get<std::vector<int64_t>>();
  return shapes;
}

void ProfilesFromJson(const nlohmann::json& j, Engine::Impl& e) {
  for (const auto& p : j.at("profiles")) {
    OptimizationProfile profile;
    for (const auto& [name, r] : p.items())
      profile.inputs[name] = {r.at("min").get<std::vector<int64_t>>(), r.at("opt").get<std::vector<int64_t>>(),
                              r.at("max").get<std::vector<int64_t>>()};
    e.profiles.push_back(std::move(profile));
  }
  ValidateProfiles(e.profiles);
  e.profile = j.at("base_profile").get<int>();
  e.lowering.conv_layout = j.at("conv_layout").get<std::string>();
  e.lowering.conv_pool_stems = j.value("conv_pool_stems", true);  // Absent before the fused stem.
  e.lowering.shapes = ShapesFromJson(j.at("shapes"));
}

}  // namespace

std::unique_ptr<Engine> Engine::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "cannot open engine file '", path, "'");
  char magic[8] = {};
  uint32_t version = 0;
  uint64_t size = 0, checksum = 0;
  in.read(magic, sizeof(magic));
  KILN_CHECK(in.good() && std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, path,
             ": not a kiln engine file (bad magic)");
  in.read(reinterpret_cast<char*>(&version), sizeof(version));
  in.read(reinterpret_cast<char*>(&size), sizeof(size));
  in.read(reinterpret_cast<char*>(&checksum), sizeof(checksum));
  KILN_CHECK(in.good(), path, ": truncated engine file header");
  KILN_CHECK(version == kFormatVersion || version == kProfilesFormatVersion, path,
             ": engine format version ", version, ", this kiln reads versions ", kFormatVersion,
             " and ", kProfilesFormatVersion, "; rebuild the engine");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  const uint64_t header = sizeof(magic) + sizeof(version) + sizeof(size) + sizeof(checksum);
  KILN_CHECK(file_size >= header && file_size - header == size, path,
             ": truncated or padded engine file (header says ", size, " payload bytes, file has ",
             file_size - header, ")");
  in.seekg(static_cast<std::streamoff>(header));
  std::vector<char> payload(size);
  in.read(payload.data(), static_cast<std::streamsize>(size));
  KILN_CHECK(in.good(), path, ": reading engine file failed");
  KILN_CHECK(Fnv1a(payload.data(), payload.size()) == checksum, path,
             ": engine file checksum mismatch (corrupted file)");

  Reader r(payload.data(), payload.size(), path);
  auto impl = std::make_unique<Impl>();
  nlohmann::json compat = nlohmann::json::parse(r.Str(), nullptr, false);
  KILN_CHECK(!compat.is_discarded() && compat.is_object(), path, ": corrupt compatibility header");
  nlohmann::json here = CompatFacts(Precision::kFP32);
  for (const char* key : {"sm", "cudnn", "cublasLt"})
    KILN_CHECK(compat.value(key, -1) == here.value(key, -2), path, ": built for ", key, " ",
               compat.value(key, -1), " (", compat.value("gpu", "?"), "), this machine has ",
               here.value(key, -2), " (", here.value("gpu", "?"), "); rebuild the engine here");
  impl->precision = ParsePrecision(compat.value("precision", "fp32"));
  nlohmann::json report = nlohmann::json::parse(r.Str(), nullptr, false);
  KILN_CHECK(!report.is_discarded(), path, ": corrupt report section");
  InfoFromJson(report, impl->info);
  impl->info.gpu_name = compat.value("gpu", "");
  impl->info.sm = compat.value("sm", 0);

  if (version == kFormatVersion) {
    GetImageInput(compat, *impl, path);
    ReadGraph(r, *impl, nullptr, path);
    KILN_CHECK(r.done(), path, ": corrupt engine file (trailing bytes)");
    impl->Create();
    impl->Summarize();
    return std::unique_ptr<Engine>(new Engine(std::move(impl)));
  }

  nlohmann::json dyn = nlohmann::json::parse(r.Str(), nullptr, false);
  KILN_CHECK(!dyn.is_discarded() && dyn.is_object(), path, ": corrupt profiles section");
  try {
    ProfilesFromJson(dyn, *impl);
  } catch (const nlohmann::json::exception& e) {
    Fail(path, ": corrupt profiles section (", e.what(), ")");
  }
  GetImageInput(dyn, *impl, path);
  impl->lowering.precision = impl->precision;
  for (uint32_t i = 0, k = r.Pod<uint32_t>(); i < k; ++i) {
    KILN_CHECK(i < (1u << 16), path, ": corrupt engine file (frozen input count)");
    std::string name = r.Str();
    impl->lowering.frozen_inputs[name] = r.TensorData();
  }
  impl->source_onnx = r.Str();
  uint64_t n_pool = r.Pod<uint64_t>();
  KILN_CHECK(n_pool < (1u << 24), path, ": corrupt engine file (weight count)");
  std::vector<Tensor> pool;
  for (uint64_t i = 0; i < n_pool; ++i) pool.push_back(r.TensorData());
  ReadGraph(r, *impl, &pool, path);
  uint32_t n_plans = r.Pod<uint32_t>();
  KILN_CHECK(n_plans < (1u << 16), path, ": corrupt engine file (plan count)");
  impl->weight_store = std::make_unique<runtime::WeightStore>();
  impl->Create(impl->weight_store.get());
  for (uint32_t i = 0; i < n_plans; ++i) {
    auto plan = std::make_unique<runtime::Plan>();
    plan->precision = impl->precision;
    plan->profile = r.Pod<int32_t>();
    nlohmann::json plan_report = nlohmann::json::parse(r.Str(), nullptr, false);
    KILN_CHECK(!plan_report.is_discarded(), path, ": corrupt plan report");
    InfoFromJson(plan_report, plan->info);
    ReadGraph(r, *plan, &pool, path);
    plan->handles = impl->handles;
    plan->owns_handles = false;
    plan->Create(impl->weight_store.get());
    impl->plans.push_back(std::move(plan));
  }
  KILN_CHECK(r.done(), path, ": corrupt engine file (trailing bytes)");
  impl->Summarize();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

}  // namespace kiln
