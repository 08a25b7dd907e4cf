#include "cli/cli_util.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/wire_format_lite.h>
#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "onnx.pb.h"

#ifdef KILN_HAVE_CUDA
#include "cuda/cuda_check.h"
#endif

namespace kiln::cli {

using google::protobuf::internal::WireFormatLite;

ModelMetadata ReadModelMetadata(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  KILN_CHECK(file, "cannot open '", path, "'");
  google::protobuf::io::IstreamInputStream raw(&file);
  google::protobuf::io::CodedInputStream in(&raw);
  in.SetTotalBytesLimit(INT32_MAX);
  ModelMetadata meta;
  auto bad = [&path] { Fail(path, ": not a valid ONNX model (malformed ModelProto)"); };
  // ModelProto field numbers (onnx.proto); the graph (7) is skipped unparsed.
  for (uint32_t tag = in.ReadTag(); tag != 0; tag = in.ReadTag()) {
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const auto wire = WireFormatLite::GetTagWireType(tag);
    uint64_t number = 0;
    std::string text;
    if (wire == WireFormatLite::WIRETYPE_VARINT && (field == 1 || field == 5)) {
      if (!in.ReadVarint64(&number)) bad();
      (field == 1 ? meta.ir_version : meta.model_version) = static_cast<int64_t>(number);
    } else if (wire == WireFormatLite::WIRETYPE_LENGTH_DELIMITED &&
               (field == 2 || field == 3 || field == 4 || field == 8)) {
      if (!WireFormatLite::ReadString(&in, &text)) bad();
      if (field == 2) meta.producer_name = text;
      if (field == 3) meta.producer_version = text;
      if (field == 4) meta.domain = text;
      if (field == 8) {
        ::onnx::OperatorSetIdProto opset;
        if (!opset.ParseFromString(text)) bad();
        meta.opsets.emplace_back(opset.domain(), opset.version());
      }
    } else if (!WireFormatLite::SkipField(&in, tag)) {
      bad();
    }
  }
  if (!in.ConsumedEntireMessage()) bad();
  return meta;
}

std::pair<std::string, std::vector<int64_t>> ParseShapeSpec(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  KILN_CHECK(eq != std::string::npos && eq > 0, "bad shape '", spec,
             "': expected name=DIMS, e.g. input=1x3x224x224");
  std::string name = spec.substr(0, eq);
  std::string text = spec.substr(eq + 1);
  std::vector<int64_t> dims;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find_first_of("x,", pos);
    if (end == std::string::npos) end = text.size();
    std::string part = text.substr(pos, end - pos);
    KILN_CHECK(!part.empty() && part.size() < 19 &&
                   part.find_first_not_of("0123456789") == std::string::npos,
               "bad shape '", spec, "': '", part, "' is not a dimension (use e.g. ", name,
               "=1x3x224x224)");
    dims.push_back(std::stoll(part));
    pos = end + 1;
  }
  return {name, dims};
}

std::pair<std::string, std::string> ParseNamedFile(const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos) return {"", spec};
  return {spec.substr(0, eq), spec.substr(eq + 1)};
}

ir::Value* FindGraphInput(ir::Graph& graph, const std::string& name) {
  std::string names;
  for (ir::Value* v : graph.inputs()) {
    if (v->name == name) return v;
    names += (names.empty() ? "" : ", ") + v->name;
  }
  Fail("the model has no input named '", name, "' (its inputs: ", names, ")");
}

void SetInputDims(ir::Value& input, const std::vector<int64_t>& dims, DimBindings& bindings) {
  const ir::TensorType& declared = input.type;
  if (declared.has_rank()) {
    KILN_CHECK(declared.rank() == static_cast<int>(dims.size()), "input '", input.name,
               "' has shape ", declared.ToString(), ", which does not match ", DimsToString(dims),
               " (rank ", declared.rank(), " vs ", dims.size(), ")");
    for (size_t i = 0; i < dims.size(); ++i) {
      const ir::Dim& d = (*declared.shape)[i];
      KILN_CHECK(!d.is_known() || d.value == dims[i], "input '", input.name, "' has shape ",
                 declared.ToString(), ", which does not match ", DimsToString(dims), " (dim ", i,
                 ")");
      if (d.is_known() || d.symbol.empty()) continue;
      auto [it, inserted] = bindings.emplace(d.symbol, dims[i]);
      KILN_CHECK(inserted || it->second == dims[i], "input '", input.name, "' sets dim '", d.symbol,
                 "' to ", dims[i], ", but another input set it to ", it->second);
    }
  }
  input.type.shape = ir::ShapeFromDims(dims);
}

void SetDynamicInputDims(ir::Graph& graph, const DimBindings& bindings) {
  for (ir::Value* v : graph.inputs()) {
    KILN_CHECK(v->type.has_rank(), "input '", v->name,
               "' has no declared shape; give one with --shapes ", v->name, "=DIMS");
    for (ir::Dim& d : *v->type.shape) {
      if (d.is_known()) continue;
      auto it = bindings.find(d.symbol);
      d = ir::Dim::Known(!d.symbol.empty() && it != bindings.end() ? it->second : 1);
    }
  }
}

namespace {
std::string Scaled(double value, double base, const char* const* units, int num_units) {
  int unit = 0;
  while (std::fabs(value) >= base && unit + 1 < num_units) {
    value /= base;
    ++unit;
  }
  char buffer[64];
  if (unit == 0 && value == std::floor(value)) {
    std::snprintf(buffer, sizeof(buffer), "%.0f%s%s", value, units[0][0] ? " " : "", units[0]);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.2f %s", value, units[unit]);
  }
  return buffer;
}
}  // namespace

std::string HumanCount(double count) {
  static const char* const kUnits[] = {"", "K", "M", "G", "T", "P"};
  return Scaled(count, 1000, kUnits, 6);
}

std::string HumanBytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  return Scaled(bytes, 1024, kUnits, 5);
}

std::string SafeFileName(const std::string& name) {
  std::string out = name.empty() ? "output" : name;
  for (char& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (out[0] == '.') out[0] = '_';  // No hidden files, no "..".
  return out;
}

}  // namespace kiln::cli

namespace kiln::cli {

bool IsEngineFile(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".kiln") == 0;
}

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
  };
  p.min = v.front();
  p.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  p.median = at(0.5);
  p.p90 = at(0.9);
  p.p95 = at(0.95);
  p.p99 = at(0.99);
  return p;
}

nlohmann::json ToJson(const Percentiles& p) {
  return {{"min", p.min}, {"mean", p.mean}, {"median", p.median}, {"p90", p.p90},
          {"p95", p.p95}, {"p99", p.p99},   {"max", p.max}};
}

void PrintPercentiles(const char* what, const Percentiles& p) {
  std::cout << std::fixed << std::setprecision(4) << "  " << std::left << std::setw(18) << what
            << std::right << "min " << p.min << "  mean " << p.mean << "  median " << p.median
            << "  p90 " << p.p90 << "  p95 " << p.p95 << "  p99 " << p.p99 << "  max " << p.max
            << " ms\n";
}

void FillRandom(const TensorDesc& d, void* host, std::mt19937& rng) {
  Tensor wide(DType::kFloat32, d.dims);
  std::string lower = d.name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const bool mask = lower.find("mask") != std::string::npos;
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::uniform_int_distribution<int> small(0, 99);
  for (int64_t i = 0; i < wide.numel(); ++i) {
    float v = IsFloatingPoint(d.dtype)
                  ? uniform(rng)
                  : static_cast<float>(small(rng) % (d.dtype == DType::kBool ? 2 : 100));
    wide.data<float>()[i] = mask ? 1.f : v;
  }
  Tensor t = wide.CastTo(d.dtype);
  std::memcpy(host, t.raw_data(), t.nbytes());
}

#ifdef KILN_HAVE_CUDA
std::unique_ptr<Engine> LoadOrBuildEngine(const std::string& path, const EngineFlags& flags) {
  if (IsEngineFile(path)) {
    KILN_CHECK(!flags.fp16 && !flags.bf16 && !flags.tf32 && flags.shapes.empty(), path,
               " is a built engine: precision and shapes were fixed by `kiln build`");
    return Engine::Load(path);
  }
  return Engine::Build(path, MakeBuildConfig(flags));
}

DeviceBindings::DeviceBindings(const Engine& engine, uint32_t seed) : engine_(engine) {
  std::mt19937 rng(seed);
  auto allocate = [this](size_t bytes) {
    void* p = nullptr;
    // At least one byte, so that every binding has a distinct pointer.
    KILN_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
    buffers_.push_back(p);
    return p;
  };
  try {
    for (const TensorDesc& d : engine.inputs()) {
      Tensor host(d.dtype, d.dims);
      FillRandom(d, host.raw_data(), rng);
      void* p = allocate(host.nbytes());
      KILN_CUDA_CHECK(cudaMemcpy(p, host.raw_data(), host.nbytes(), cudaMemcpyHostToDevice));
      inputs_.push_back(p);
    }
    for (const TensorDesc& d : engine.outputs())
      outputs_.push_back(allocate(d.nbytes()));
  } catch (...) {
    for (void* p : buffers_) cudaFree(p);
    throw;
  }
}

DeviceBindings::~DeviceBindings() {
  for (void* p : buffers_) cudaFree(p);
}

int64_t DeviceBindings::CountNonFiniteOutputs() const {
  int64_t non_finite = 0;
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const TensorDesc& d = engine_.outputs()[i];
    if (!IsFloatingPoint(d.dtype)) continue;
    Tensor t(d.dtype, d.dims);
    KILN_CUDA_CHECK(cudaMemcpy(t.raw_data(), outputs_[i], t.nbytes(), cudaMemcpyDeviceToHost));
    for (int64_t k = 0; k < t.numel(); ++k)
      if (!std::isfinite(t.GetAsDouble(k))) ++non_finite;
  }
  return non_finite;
}

CudaStream::CudaStream() { KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
CudaStream::~CudaStream() {
  if (stream) cudaStreamDestroy(stream);
}
CudaEvent::CudaEvent() { KILN_CUDA_CHECK(cudaEventCreate(&event)); }
CudaEvent::~CudaEvent() {
  if (event) cudaEventDestroy(event);
}
#endif

}  // namespace kiln::cli
