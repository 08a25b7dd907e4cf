#include "onnx/importer.h"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <unordered_set>

#include "onnx.pb.h"
#include "ops/registry.h"  // kMinSupportedOpset, kMaxSupportedOpset

namespace kiln::onnx_import {
namespace {

// raw_data and external data are little-endian; aliasing them needs a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "the ONNX importer assumes a little-endian host");

// IR 3 introduced opset_import; older files cannot say which semantics they
// use. Newer IR versions are accepted: tools stamp the newest IR version even on
// old-opset models, and features kiln lacks (new dtypes, ...) fail by name.
constexpr int64_t kMinIrVersion = 3;

using Owner = std::shared_ptr<const void>;

// ---- External data files ----

// A private (copy-on-write) mapping of a whole external data file. Tensors
// alias it and hold it through their storage; writes (a pass updating weights
// in place) never reach the file.
class FileMapping {
 public:
  FileMapping(uint8_t* data, size_t size) : data_(data), size_(size) {}
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_;
  size_t size_;
};

std::string ErrnoText() { return std::strerror(errno); }

// Opens and maps `path`; `what` names the tensor asking for it in errors.
std::shared_ptr<FileMapping> MapFile(const std::string& path, const std::string& what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, what, ": cannot open external data file '", path, "': ", ErrnoText());
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    Fail(what, ": external data file '", path, "' is not a regular file");
  }
  size_t size = static_cast<size_t>(info.st_size);
  if (size == 0) {
    close(fd);
    return std::make_shared<FileMapping>(nullptr, 0);
  }
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  KILN_CHECK(data != MAP_FAILED, what, ": cannot map external data file '", path,
             "': ", std::strerror(map_errno));
  return std::make_shared<FileMapping>(static_cast<uint8_t*>(data), size);
}

// Per-import state for tensor conversion: where external data lives, the files
// mapped so far (tensors sharing a file share one mapping), and the owner of
// the parsed protobuf that raw_data tensors may alias (nullptr: copy).
struct TensorSource {
  std::string base_dir;  // "" when external data is not allowed.
  Owner proto_owner;
  std::map<std::string, std::shared_ptr<FileMapping>> mapped_files;
};

// ---- Tensors ----

std::string OnnxDataTypeName(int32_t data_type) {
  if (onnx::TensorProto_DataType_IsValid(data_type))
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(data_type));
  return StrCat("<unknown data type ", data_type, ">");
}

bool IsSupportedDType(int32_t data_type) {
  switch (static_cast<DType>(data_type)) {
    case DType::kFloat32: case DType::kUInt8: case DType::kInt8: case DType::kUInt16:
    case DType::kInt16: case DType::kInt32: case DType::kInt64: case DType::kBool:
    case DType::kFloat16: case DType::kFloat64: case DType::kUInt32: case DType::kUInt64:
    case DType::kBFloat16:
      return true;
    default:
      return false;
  }
}

// Element count of dims, refusing negative dims and counts whose byte size
// would overflow (fuzzed or corrupt files).
int64_t CheckedNumel(const std::vector<int64_t>& dims, DType dtype, const std::string& what) {
  int64_t numel = 1;
  for (int64_t d : dims) {
    KILN_CHECK(d >= 0, what, " has a negative dimension in ", DimsToString(dims));
    KILN_CHECK(!__builtin_mul_overflow(numel, d, &numel), what, " has too many elements ",
               DimsToString(dims));
  }
  int64_t bytes = 0;
  KILN_CHECK(!__builtin_mul_overflow(numel, static_cast<int64_t>(DTypeSize(dtype)), &bytes),
             what, " is too large ", DimsToString(dims));
  return numel;
}

// ONNX bools are bytes that should be 0 or 1; kernels rely on that.
bool HasNonCanonicalBools(const uint8_t* data, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (data[i] > 1) return true;
  return false;
}

// A tensor over `bytes`: aliased when an owner keeps them alive and they are
// aligned for the element type, else copied.
Tensor TensorOverBytes(DType dtype, std::vector<int64_t> dims, const uint8_t* bytes,
                       size_t nbytes, const Owner& owner) {
  bool bools_ok = dtype != DType::kBool || !HasNonCanonicalBools(bytes, nbytes);
  bool aligned = reinterpret_cast<uintptr_t>(bytes) % DTypeSize(dtype) == 0;
  if (owner && aligned && bools_ok && nbytes > 0)
    return Tensor::Borrow(dtype, std::move(dims), owner, bytes);
  Tensor t(dtype, std::move(dims));
  if (nbytes > 0) std::memcpy(t.raw_data(), bytes, nbytes);
  if (!bools_ok) {
    uint8_t* b = t.data<uint8_t>();
    for (size_t i = 0; i < nbytes; ++i) b[i] = b[i] != 0;
  }
  return t;
}

// Copies a typed repeated field (float_data, int32_data, ...) into a new tensor.
template <typename Dst, typename Field>
Tensor TensorFromField(DType dtype, std::vector<int64_t> dims, int64_t numel, const Field& field,
                       const char* field_name, const std::string& what) {
  KILN_CHECK(static_cast<int64_t>(field.size()) == numel, what, " has ", field.size(),
             " values in ", field_name, ", but its shape ", DimsToString(dims), " needs ", numel);
  Tensor t(dtype, std::move(dims));
  Dst* out = t.data<Dst>();
  for (int64_t i = 0; i < numel; ++i) {
    auto v = field.Get(static_cast<int>(i));
    if constexpr (std::is_same_v<Dst, uint8_t>) {
      // bool and uint8 share storage; bools are normalised to 0/1.
      out[i] = dtype == DType::kBool ? static_cast<uint8_t>(v != 0) : static_cast<uint8_t>(v);
    } else {
      // float16/bfloat16 arrive as their bit patterns in int32_data.
      out[i] = static_cast<Dst>(v);
    }
  }
  return t;
}

// Parses a non-negative decimal integer from an external_data entry.
int64_t ParseExternalInt(const std::string& text, const char* key, const std::string& what) {
  int64_t value = -1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  KILN_CHECK(ec == std::errc() && ptr == end && value >= 0, what, ": external data '", key,
             "' is '", text, "', not a non-negative integer");
  return value;
}

Tensor ExternalTensor(const onnx::TensorProto& proto, DType dtype, std::vector<int64_t> dims,
                      int64_t numel, TensorSource& source, const std::string& what) {
  std::string location;
  std::optional<int64_t> offset, length;
  for (const onnx::StringStringEntryProto& entry : proto.external_data()) {
    if (entry.key() == "location") {
      location = entry.value();
    } else if (entry.key() == "offset") {
      offset = ParseExternalInt(entry.value(), "offset", what);
    } else if (entry.key() == "length") {
      length = ParseExternalInt(entry.value(), "length", what);
    }  // "checksum" and unknown keys are ignored.
  }
  KILN_CHECK(!location.empty(), what, " uses external data but gives no 'location'");
  KILN_CHECK(!source.base_dir.empty(), what, " uses external data file '", location,
             "', but the model was not loaded from a file, so there is no folder to find it in");
  // Keep the data inside the model's folder: a crafted model must not read
  // arbitrary files.
  KILN_CHECK(location.find('\0') == std::string::npos, what,
             ": external data location contains a NUL byte");
  std::filesystem::path relative(location);
  KILN_CHECK(!relative.is_absolute() && !relative.has_root_path(), what,
             ": external data location '", location,
             "' is an absolute path; it must be relative to the model's folder");
  for (const auto& part : relative)
    KILN_CHECK(part != "..", what, ": external data location '", location,
               "' leaves the model's folder ('..')");
  std::string path = (std::filesystem::path(source.base_dir) / relative).string();

  auto& mapping = source.mapped_files[path];
  if (!mapping) mapping = MapFile(path, what);

  size_t nbytes = static_cast<size_t>(numel) * DTypeSize(dtype);
  size_t start = static_cast<size_t>(offset.value_or(0));
  size_t file_size = mapping->size();
  KILN_CHECK(start <= file_size, what, ": external data offset ", start, " is past the end of '",
             path, "' (", file_size, " bytes)");
  if (length) {
    KILN_CHECK(static_cast<size_t>(*length) == nbytes, what, ": external data length ", *length,
               " does not match its type ", DTypeName(dtype), DimsToString(dims), " (", nbytes,
               " bytes)");
  }
  KILN_CHECK(nbytes <= file_size - start, what, ": needs ", nbytes, " bytes at offset ", start,
             " of '", path, "', but the file has only ", file_size, " bytes");
  if (nbytes == 0) return Tensor(dtype, std::move(dims));
  return TensorOverBytes(dtype, std::move(dims), mapping->data() + start, nbytes, mapping);
}

// `what` names the tensor in errors ("initializer 'w'").
Tensor ConvertTensor(const onnx::TensorProto& proto, TensorSource& source,
                     const std::string& what) {
  KILN_CHECK(!proto.has_segment(), what, " is segmented, which kiln does not support");
  KILN_CHECK(proto.data_type() != onnx::TensorProto::STRING, what,
             " is a string tensor; kiln supports numeric tensors only");
  KILN_CHECK(IsSupportedDType(proto.data_type()), what, " has unsupported data type ",
             OnnxDataTypeName(proto.data_type()));
  DType dtype = static_cast<DType>(proto.data_type());
  std::vector<int64_t> dims(proto.dims().begin(), proto.dims().end());
  int64_t numel = CheckedNumel(dims, dtype, what);
  size_t nbytes = static_cast<size_t>(numel) * DTypeSize(dtype);

  if (proto.data_location() == onnx::TensorProto::EXTERNAL)
    return ExternalTensor(proto, dtype, std::move(dims), numel, source, what);

  if (proto.has_raw_data()) {
    const std::string& raw = proto.raw_data();
    KILN_CHECK(raw.size() == nbytes, what, " has ", raw.size(), " bytes of raw_data, but its type ",
               DTypeName(dtype), DimsToString(dims), " needs ", nbytes);
    return TensorOverBytes(dtype, std::move(dims), reinterpret_cast<const uint8_t*>(raw.data()),
                           nbytes, source.proto_owner);
  }

  switch (dtype) {
    case DType::kFloat32:
      return TensorFromField<float>(dtype, dims, numel, proto.float_data(), "float_data", what);
    case DType::kFloat64:
      return TensorFromField<double>(dtype, dims, numel, proto.double_data(), "double_data", what);
    case DType::kInt64:
      return TensorFromField<int64_t>(dtype, dims, numel, proto.int64_data(), "int64_data", what);
    case DType::kUInt64:
      return TensorFromField<uint64_t>(dtype, dims, numel, proto.uint64_data(), "uint64_data",
                                       what);
    case DType::kUInt32:
      return TensorFromField<uint32_t>(dtype, dims, numel, proto.uint64_data(), "uint64_data",
                                       what);
    case DType::kInt32:
      return TensorFromField<int32_t>(dtype, dims, numel, proto.int32_data(), "int32_data", what);
    case DType::kInt16:
      return TensorFromField<int16_t>(dtype, dims, numel, proto.int32_data(), "int32_data", what);
    case DType::kInt8:
      return TensorFromField<int8_t>(dtype, dims, numel, proto.int32_data(), "int32_data", what);
    case DType::kUInt16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return TensorFromField<uint16_t>(dtype, dims, numel, proto.int32_data(), "int32_data",
                                       what);
    case DType::kUInt8:
    case DType::kBool:
      return TensorFromField<uint8_t>(dtype, dims, numel, proto.int32_data(), "int32_data", what);
    default:
      break;
  }
  Fail(what, " has unsupported data type ", DTypeName(dtype));
}

std::string TensorLabel(const char* kind, const std::string& name) {
  return name.empty() ? StrCat("unnamed ", kind) : StrCat(kind, " '", name, "'");
}

// ---- Types ----

const char* TypeCaseName(const onnx::TypeProto& type) {
  switch (type.value_case()) {
    case onnx::TypeProto::kTensorType: return "a tensor";
    case onnx::TypeProto::kSequenceType: return "a sequence";
    case onnx::TypeProto::kMapType: return "a map";
    case onnx::TypeProto::kOptionalType: return "an optional";
    case onnx::TypeProto::kSparseTensorType: return "a sparse tensor";
    default: return "of unknown kind";
  }
}

ir::Shape ConvertShape(const onnx::TensorShapeProto& shape) {
  ir::Shape dims;
  dims.reserve(static_cast<size_t>(shape.dim_size()));
  for (const onnx::TensorShapeProto::Dimension& d : shape.dim()) {
    if (d.has_dim_value() && d.dim_value() >= 0) {
      dims.push_back(ir::Dim::Known(d.dim_value()));
    } else if (d.has_dim_param() && !d.dim_param().empty()) {
      dims.push_back(ir::Dim::Symbol(d.dim_param()));
    } else {
      dims.push_back(ir::Dim::Unknown());  // Neither set, or a negative placeholder.
    }
  }
  return dims;
}

// The value's tensor type. A missing type or element type gives an unknown
// type; a non-tensor type or an unsupported element type throws.
ir::TensorType ConvertValueType(const onnx::ValueInfoProto& info, const std::string& what) {
  ir::TensorType type;
  if (!info.has_type() || info.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) return type;
  KILN_CHECK(info.type().has_tensor_type(), what, " is ", TypeCaseName(info.type()),
             "; kiln supports tensors only");
  const onnx::TypeProto::Tensor& tensor = info.type().tensor_type();
  int32_t elem_type = tensor.elem_type();
  if (elem_type != onnx::TensorProto::UNDEFINED) {
    KILN_CHECK(IsSupportedDType(elem_type), what, " has element type ",
               OnnxDataTypeName(elem_type), ", which kiln does not support");
    type.dtype = static_cast<DType>(elem_type);
  }
  if (tensor.has_shape()) type.shape = ConvertShape(tensor.shape());
  return type;
}

// ---- Attributes ----

// Old exporters (IR < 3) leave AttributeProto.type unset; infer it from the field present.
onnx::AttributeProto::AttributeType AttributeTypeOf(const onnx::AttributeProto& a) {
  if (a.type() != onnx::AttributeProto::UNDEFINED) return a.type();
  if (a.has_f()) return onnx::AttributeProto::FLOAT;
  if (a.has_i()) return onnx::AttributeProto::INT;
  if (a.has_s()) return onnx::AttributeProto::STRING;
  if (a.has_t()) return onnx::AttributeProto::TENSOR;
  if (a.has_g()) return onnx::AttributeProto::GRAPH;
  if (a.has_sparse_tensor()) return onnx::AttributeProto::SPARSE_TENSOR;
  if (a.floats_size()) return onnx::AttributeProto::FLOATS;
  if (a.ints_size()) return onnx::AttributeProto::INTS;
  if (a.strings_size()) return onnx::AttributeProto::STRINGS;
  if (a.tensors_size()) return onnx::AttributeProto::TENSORS;
  if (a.graphs_size()) return onnx::AttributeProto::GRAPHS;
  if (a.sparse_tensors_size()) return onnx::AttributeProto::SPARSE_TENSORS;
  return onnx::AttributeProto::UNDEFINED;
}

ir::AttrValue ConvertAttribute(const onnx::AttributeProto& a, const std::string& node_label,
                               TensorSource& source) {
  const std::string& name = a.name();
  KILN_CHECK(a.ref_attr_name().empty(), node_label, ": attribute '", name,
             "' refers to a function attribute ('", a.ref_attr_name(),
             "'), which is only valid inside functions");
  switch (AttributeTypeOf(a)) {
    case onnx::AttributeProto::FLOAT: return a.f();
    case onnx::AttributeProto::INT: return static_cast<int64_t>(a.i());
    case onnx::AttributeProto::STRING: return a.s();
    case onnx::AttributeProto::TENSOR:
      return ConvertTensor(a.t(), source,
                           StrCat("tensor of attribute '", name, "' of ", node_label));
    case onnx::AttributeProto::FLOATS:
      return std::vector<float>(a.floats().begin(), a.floats().end());
    case onnx::AttributeProto::INTS:
      return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    case onnx::AttributeProto::STRINGS:
      return std::vector<std::string>(a.strings().begin(), a.strings().end());
    case onnx::AttributeProto::GRAPH:
    case onnx::AttributeProto::GRAPHS:
      Fail(node_label, ": subgraphs (If/Loop/Scan) are not supported (attribute '", name, "')");
    case onnx::AttributeProto::SPARSE_TENSOR:
    case onnx::AttributeProto::SPARSE_TENSORS:
      Fail(node_label, ": sparse tensor attributes are not supported (attribute '", name, "')");
    case onnx::AttributeProto::TENSORS:
      Fail(node_label, ": tensor-list attributes are not supported (attribute '", name, "')");
    case onnx::AttributeProto::TYPE_PROTO:
    case onnx::AttributeProto::TYPE_PROTOS:
      Fail(node_label, ": type attributes are not supported (attribute '", name, "')");
    default:
      Fail(node_label, ": attribute '", name, "' has no value or an unknown type (",
           static_cast<int>(a.type()), ")");
  }
}

// The value of a Constant node (value, value_float(s), value_int(s)).
Tensor ConstantNodeValue(const onnx::NodeProto& node, const std::string& node_label,
                         TensorSource& source) {
  KILN_CHECK(node.attribute_size() == 1, node_label, " must have exactly one value attribute, has ",
             node.attribute_size());
  const onnx::AttributeProto& a = node.attribute(0);
  const std::string& name = a.name();
  ir::AttrValue value = ConvertAttribute(a, node_label, source);
  auto expect = [&](bool ok, const char* type) {
    KILN_CHECK(ok, node_label, ": attribute '", name, "' must be of type ", type);
  };
  if (name == "value") {
    expect(std::holds_alternative<Tensor>(value), "tensor");
    return std::get<Tensor>(value);
  }
  if (name == "value_float") {
    expect(std::holds_alternative<float>(value), "float");
    return Tensor::Scalar(std::get<float>(value));
  }
  if (name == "value_floats") {
    expect(std::holds_alternative<std::vector<float>>(value), "floats");
    const auto& floats = std::get<std::vector<float>>(value);
    return Tensor::FromFloats({static_cast<int64_t>(floats.size())}, floats);
  }
  if (name == "value_int") {
    expect(std::holds_alternative<int64_t>(value), "int");
    return Tensor::FromInt64s({}, {std::get<int64_t>(value)});
  }
  if (name == "value_ints") {
    expect(std::holds_alternative<std::vector<int64_t>>(value), "ints");
    const auto& ints = std::get<std::vector<int64_t>>(value);
    return Tensor::FromInt64s({static_cast<int64_t>(ints.size())}, ints);
  }
  if (name == "value_string" || name == "value_strings")
    Fail(node_label, ": string constants are not supported (attribute '", name, "')");
  if (name == "sparse_value")
    Fail(node_label, ": sparse constants are not supported (attribute 'sparse_value')");
  Fail(node_label, ": unknown Constant attribute '", name, "'");
}

// ---- Model ----

bool IsDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

// The opset version the model imports for `domain` (0 if it imports none).
int ImportedOpset(const onnx::ModelProto& model, const std::string& domain) {
  for (const onnx::OperatorSetIdProto& entry : model.opset_import())
    if (entry.domain() == domain) return static_cast<int>(entry.version());
  return 0;
}

// Reads the default-domain opset and checks the IR version.
int CheckModelHeader(const onnx::ModelProto& model) {
  KILN_CHECK(model.has_ir_version(), "not a valid ONNX model (no ir_version)");
  KILN_CHECK(model.ir_version() >= kMinIrVersion, "ONNX IR version ", model.ir_version(),
             " is not supported (kiln reads IR version ", kMinIrVersion, " and newer)");
  KILN_CHECK(model.has_graph(), "not a valid ONNX model (no graph)");
  std::optional<int64_t> opset;
  for (const onnx::OperatorSetIdProto& entry : model.opset_import()) {
    if (!IsDefaultDomain(entry.domain())) continue;  // Checked per node.
    KILN_CHECK(!opset || *opset == entry.version(),
               "model imports the default ONNX domain twice, at opsets ", *opset, " and ",
               entry.version());
    opset = entry.version();
  }
  KILN_CHECK(opset.has_value(), "model imports no opset of the default ONNX domain");
  KILN_CHECK(*opset >= kMinSupportedOpset && *opset <= kMaxSupportedOpset, "opset ", *opset,
             " of the default ONNX domain is not supported (kiln supports opsets ",
             kMinSupportedOpset, " to ", kMaxSupportedOpset, ")");
  return static_cast<int>(*opset);
}

// Unique node names: a file's own names are kept where unique; unnamed nodes
// and repeats get "<op_type>_<index>" (plus a suffix if that is taken too).
std::vector<std::string> AssignNodeNames(const onnx::GraphProto& graph) {
  std::unordered_set<std::string> reserved;
  for (const onnx::NodeProto& node : graph.node())
    if (!node.name().empty()) reserved.insert(node.name());
  std::unordered_set<std::string> used;
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(graph.node_size()));
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& node = graph.node(i);
    std::string name = node.name();
    if (name.empty() || used.count(name)) {
      std::string base = node.name().empty() ? StrCat(node.op_type(), "_", i) : node.name();
      name = base;
      for (int k = 1; reserved.count(name) || used.count(name); ++k) name = StrCat(base, "_", k);
    }
    used.insert(name);
    names.push_back(std::move(name));
  }
  return names;
}

std::unique_ptr<ir::Graph> BuildGraph(const onnx::ModelProto& model, TensorSource& source) {
  int opset = CheckModelHeader(model);
  const onnx::GraphProto& g = model.graph();
  auto graph = std::make_unique<ir::Graph>();
  graph->opset_version = opset;
  graph->name = g.name();

  KILN_CHECK(g.sparse_initializer_size() == 0, "sparse initializer '",
             g.sparse_initializer_size() ? g.sparse_initializer(0).values().name() : "",
             "' is not supported");

  // Initializers become constants.
  for (const onnx::TensorProto& init : g.initializer()) {
    std::string what = TensorLabel("initializer", init.name());
    KILN_CHECK(!init.name().empty(), "an initializer has no name");
    KILN_CHECK(graph->FindValue(init.name()) == nullptr, "initializer '", init.name(),
               "' is defined twice");
    graph->AddConstant(init.name(), ConvertTensor(init, source, what));
  }

  // Graph inputs, except initializers listed as inputs (IR < 4 exporters).
  for (const onnx::ValueInfoProto& input : g.input()) {
    KILN_CHECK(!input.name().empty(), "a graph input has no name");
    ir::Value* existing = graph->FindValue(input.name());
    if (existing != nullptr && existing->is_constant()) continue;
    KILN_CHECK(existing == nullptr, "graph input '", input.name(), "' is listed twice");
    std::string what = StrCat("graph input '", input.name(), "'");
    ir::TensorType type = ConvertValueType(input, what);
    KILN_CHECK(type.dtype != DType::kUndefined, what, " has no element type");
    ir::Value* v = graph->AddValue(input.name(), std::move(type));
    v->is_graph_input = true;
    graph->inputs().push_back(v);
  }

  // Declared types seed the values nodes produce; graph outputs take precedence.
  std::map<std::string, ir::TensorType> declared;
  for (const onnx::ValueInfoProto& info : g.value_info()) {
    try {
      declared[info.name()] = ConvertValueType(info, info.name());
    } catch (const Error&) {
      // A value_info kiln cannot represent is only a hint; the producing node decides.
    }
  }
  for (const onnx::ValueInfoProto& output : g.output()) {
    KILN_CHECK(!output.name().empty(), "a graph output has no name");
    declared[output.name()] =
        ConvertValueType(output, StrCat("graph output '", output.name(), "'"));
  }

  // First pass: every node output exists before inputs are resolved, so files
  // whose nodes are not in topological order still import.
  std::vector<std::string> node_names = AssignNodeNames(g);
  std::vector<std::vector<ir::Value*>> node_outputs(static_cast<size_t>(g.node_size()));
  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& node = g.node(i);
    std::string label = StrCat("node '", node_names[static_cast<size_t>(i)], "' (",
                               node.op_type(), ")");
    KILN_CHECK(!node.op_type().empty(), "node '", node_names[static_cast<size_t>(i)],
               "' has no op_type");
    auto check_new = [&](const std::string& name) {
      const ir::Value* existing = graph->FindValue(name);
      KILN_CHECK(existing == nullptr, label, " output '", name, "' is already defined (as ",
                 existing == nullptr       ? ""
                 : existing->is_graph_input ? "a graph input"
                 : existing->is_constant()  ? "an initializer or constant"
                                            : "another node's output",
                 ")");
    };
    if (node.op_type() == "Constant") {
      // Constants become values at import, so the graph holds only compute nodes.
      KILN_CHECK(node.input_size() == 0, label, " must have no inputs");
      KILN_CHECK(node.output_size() == 1 && !node.output(0).empty(), label,
                 " must have exactly one output");
      check_new(node.output(0));
      graph->AddConstant(node.output(0), ConstantNodeValue(node, label, source));
      continue;
    }
    std::vector<ir::Value*>& outputs = node_outputs[static_cast<size_t>(i)];
    outputs.assign(static_cast<size_t>(node.output_size()), nullptr);
    for (int o = 0; o < node.output_size(); ++o) {
      const std::string& name = node.output(o);
      if (name.empty()) continue;  // An omitted optional output.
      check_new(name);
      auto it = declared.find(name);
      outputs[static_cast<size_t>(o)] =
          graph->AddValue(name, it != declared.end() ? it->second : ir::TensorType{});
    }
  }

  // Second pass: resolve inputs, convert attributes, add nodes in file order.
  bool in_order = true;
  std::unordered_set<const ir::Value*> produced;
  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& node = g.node(i);
    if (node.op_type() == "Constant") continue;
    const std::string& node_name = node_names[static_cast<size_t>(i)];
    std::string label = StrCat("node '", node_name, "' (", node.op_type(), ")");
    std::vector<ir::Value*> inputs;
    inputs.reserve(static_cast<size_t>(node.input_size()));
    for (int k = 0; k < node.input_size(); ++k) {
      const std::string& name = node.input(k);
      if (name.empty()) {  // An omitted optional input.
        inputs.push_back(nullptr);
        continue;
      }
      ir::Value* v = graph->FindValue(name);
      KILN_CHECK(v != nullptr, label, " input ", k, " '", name,
                 "' is not defined: it is not a graph input, an initializer or any node's output");
      if (!v->is_constant() && !v->is_graph_input && !produced.count(v)) in_order = false;
      inputs.push_back(v);
    }
    ir::Attributes attrs;
    for (const onnx::AttributeProto& a : node.attribute()) {
      KILN_CHECK(!attrs.has(a.name()), label, " has attribute '", a.name(), "' twice");
      attrs.set(a.name(), ConvertAttribute(a, label, source));
    }
    ir::Node* n = graph->AddNode(node.op_type(), node_name, std::move(inputs),
                                 std::move(node_outputs[static_cast<size_t>(i)]));
    // Nodes of other domains are kept (so inspect can list them); the operator
    // registry rejects them by name and domain.
    n->domain = IsDefaultDomain(node.domain()) ? "" : node.domain();
    n->opset = n->domain.empty() ? opset : ImportedOpset(model, node.domain());
    n->attrs = std::move(attrs);
    for (ir::Value* out : n->outputs)
      if (out) produced.insert(out);
  }

  for (const onnx::ValueInfoProto& output : g.output()) {
    ir::Value* v = graph->FindValue(output.name());
    KILN_CHECK(v != nullptr, "graph output '", output.name(),
               "' is never produced: no node, input or initializer defines it");
    graph->outputs().push_back(v);
  }

  if (!in_order) graph->SortTopologically();
  graph->Validate();
  return graph;
}

// Parses any message from a stream, allowing messages up to 2 GB (protobuf's
// default limit is 64 MB).
bool ParseMessage(google::protobuf::io::ZeroCopyInputStream* stream,
                  google::protobuf::MessageLite* message) {
  google::protobuf::io::CodedInputStream coded(stream);
  coded.SetTotalBytesLimit(INT_MAX);
  return message->ParseFromCodedStream(&coded) && coded.ConsumedEntireMessage();
}

// Parses a file into `message`; `kind` names what it should be in errors.
void ParseFile(const std::string& path, google::protobuf::MessageLite* message, const char* kind) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, "cannot open '", path, "': ", ErrnoText());
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    Fail("cannot read '", path, "': not a regular file");
  }
  if (info.st_size > INT_MAX) {
    close(fd);
    Fail("'", path, "' is ", info.st_size, " bytes; protobuf files are limited to 2 GB, so ",
         "larger models must keep their weights in external data files");
  }
  google::protobuf::io::FileInputStream stream(fd);
  bool ok = ParseMessage(&stream, message);
  int read_errno = stream.GetErrno();
  close(fd);
  KILN_CHECK(read_errno == 0, "cannot read '", path, "': ", std::strerror(read_errno));
  KILN_CHECK(ok, "'", path, "' is not a valid ", kind, " (unparsable or truncated protobuf)");
}

std::string ParentDir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

// Builds the graph, prefixing errors with the model's name.
std::unique_ptr<ir::Graph> ImportParsed(std::shared_ptr<onnx::ModelProto> model,
                                        const std::string& base_dir, const std::string& source) {
  TensorSource tensors;
  tensors.base_dir = base_dir;
  tensors.proto_owner = model;  // Weights alias the parsed model's raw_data.
  try {
    return BuildGraph(*model, tensors);
  } catch (const Error& e) {
    Fail(source, ": ", e.what());
  }
}

}  // namespace

std::unique_ptr<ir::Graph> ImportModelFile(const std::string& path) {
  auto model = std::make_shared<onnx::ModelProto>();
  ParseFile(path, model.get(), "ONNX model");
  return ImportParsed(std::move(model), ParentDir(path), path);
}

std::unique_ptr<ir::Graph> ImportModelBytes(const std::string& bytes, const std::string& base_dir,
                                            const std::string& source) {
  KILN_CHECK(bytes.size() <= static_cast<size_t>(INT_MAX), source, ": ", bytes.size(),
             " bytes is over protobuf's 2 GB limit");
  auto model = std::make_shared<onnx::ModelProto>();
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  KILN_CHECK(ParseMessage(&stream, model.get()), source,
             ": not a valid ONNX model (unparsable or truncated protobuf)");
  return ImportParsed(std::move(model), base_dir, source);
}

Tensor TensorFromProto(const ::onnx::TensorProto& proto, const std::string& base_dir) {
  TensorSource source;
  source.base_dir = base_dir;  // No owner: the caller's proto may not outlive the tensor.
  return ConvertTensor(proto, source, TensorLabel("tensor", proto.name()));
}

Tensor LoadTensorProtoFile(const std::string& path, std::string* name) {
  auto proto = std::make_shared<onnx::TensorProto>();
  ParseFile(path, proto.get(), "TensorProto file");
  TensorSource source;
  source.base_dir = ParentDir(path);
  source.proto_owner = proto;
  Tensor t;
  try {
    t = ConvertTensor(*proto, source, TensorLabel("tensor", proto->name()));
  } catch (const Error& e) {
    Fail(path, ": ", e.what());
  }
  if (name != nullptr) *name = proto->name();
  return t;
}

void SaveTensorProtoFile(const Tensor& tensor, const std::string& name, const std::string& path) {
  KILN_CHECK(tensor.defined(), "cannot save undefined tensor '", name, "' to '", path, "'");
  KILN_CHECK(IsSupportedDType(static_cast<int32_t>(tensor.dtype())), "cannot save tensor '", name,
             "' of dtype ", DTypeName(tensor.dtype()));
  onnx::TensorProto proto;
  proto.set_name(name);
  proto.set_data_type(static_cast<int32_t>(tensor.dtype()));
  for (int64_t d : tensor.dims()) proto.add_dims(d);
  proto.set_raw_data(tensor.raw_data(), tensor.nbytes());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  KILN_CHECK(out.is_open(), "cannot open '", path, "' for writing: ", ErrnoText());
  KILN_CHECK(proto.SerializeToOstream(&out), "cannot write tensor '", name, "' to '", path, "'");
  out.close();
  KILN_CHECK(!out.fail(), "cannot write tensor '", name, "' to '", path, "'");
}

}  // namespace kiln::onnx_import
