#include "ir/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "kiln/error.h"

namespace kiln::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct DescrEntry {
  const char* descr;  // As written by NumPy for little-endian data.
  DType dtype;
};
constexpr DescrEntry kDescrs[] = {
    {"<f2", DType::kFloat16}, {"<f4", DType::kFloat32}, {"<f8", DType::kFloat64},
    {"|i1", DType::kInt8},    {"<i2", DType::kInt16},   {"<i4", DType::kInt32},
    {"<i8", DType::kInt64},   {"|u1", DType::kUInt8},   {"<u2", DType::kUInt16},
    {"<u4", DType::kUInt32},  {"<u8", DType::kUInt64},  {"|b1", DType::kBool},
};

DType DTypeFromDescr(std::string descr, const std::string& source) {
  // '=' (native) is little-endian on every host kiln runs on; single-byte
  // types may carry any byte-order mark.
  if (!descr.empty() && (descr[0] == '=' || descr[0] == '<' || descr[0] == '|')) {
    for (const DescrEntry& e : kDescrs) {
      if (descr.substr(1) == std::string(e.descr).substr(1)) return e.dtype;
    }
  }
  if (!descr.empty() && descr[0] == '>')
    Fail(source, ": big-endian .npy data ('", descr, "') is not supported; save it little-endian");
  Fail(source, ": unsupported .npy dtype '", descr,
       "' (kiln reads float16/32/64, int8/16/32/64, uint8/16/32/64 and bool)");
}

const char* DescrFromDType(DType dtype) {
  for (const DescrEntry& e : kDescrs)
    if (e.dtype == dtype) return e.descr;
  Fail("cannot write ", DTypeName(dtype), " to .npy: NumPy has no such dtype");
}

void SkipSpaces(const std::string& s, size_t& pos) {
  while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n')) ++pos;
}

// The text after `'key':` in the header dict, up to the end of the value.
std::string HeaderField(const std::string& header, const std::string& key,
                        const std::string& source) {
  std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  size_t pos = std::string::npos;
  for (const std::string& q : quoted) {
    pos = header.find(q);
    if (pos != std::string::npos) {
      pos += q.size();
      break;
    }
  }
  KILN_CHECK(pos != std::string::npos, source, ": .npy header has no '", key, "' field");
  SkipSpaces(header, pos);
  KILN_CHECK(pos < header.size() && header[pos] == ':', source, ": malformed .npy header near '",
             key, "'");
  ++pos;
  SkipSpaces(header, pos);
  KILN_CHECK(pos < header.size(), source, ": malformed .npy header near '", key, "'");
  size_t end = pos;
  if (header[pos] == '(') {
    end = header.find(')', pos);
    KILN_CHECK(end != std::string::npos, source, ": malformed .npy shape");
    return header.substr(pos, end - pos + 1);
  }
  if (header[pos] == '\'' || header[pos] == '"') {
    end = header.find(header[pos], pos + 1);
    KILN_CHECK(end != std::string::npos, source, ": malformed .npy header near '", key, "'");
    return header.substr(pos + 1, end - pos - 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  std::string value = header.substr(pos, end - pos);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}

std::vector<int64_t> ParseShape(const std::string& text, const std::string& source) {
  // "(2, 3)", "(5,)" or "()".
  std::vector<int64_t> dims;
  std::string inner = text.substr(1, text.size() - 2);
  std::stringstream parts(inner);
  std::string part;
  while (std::getline(parts, part, ',')) {
    size_t b = part.find_first_not_of(" \t\n");
    if (b == std::string::npos) continue;  // The trailing comma of "(5,)".
    size_t e = part.find_last_not_of(" \t\nL");
    std::string digits = part.substr(b, e - b + 1);
    KILN_CHECK(!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos &&
                   digits.size() < 19,
               source, ": malformed .npy shape ", text);
    dims.push_back(std::stoll(digits));
  }
  return dims;
}

}  // namespace

Tensor ParseNpy(const std::string& bytes, const std::string& source) {
  KILN_CHECK(bytes.size() >= 10 && std::memcmp(bytes.data(), kMagic, kMagicSize) == 0, source,
             ": not a .npy file (bad magic)");
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len =
        static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    KILN_CHECK(bytes.size() >= 12, source, ": truncated .npy header");
    for (int i = 3; i >= 0; --i)
      header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + static_cast<size_t>(i)]);
    header_start = 12;
  } else {
    Fail(source, ": unsupported .npy format version ", major);
  }
  KILN_CHECK(header_start + header_len <= bytes.size(), source, ": truncated .npy header");
  const std::string header = bytes.substr(header_start, header_len);

  const std::string fortran = HeaderField(header, "fortran_order", source);
  KILN_CHECK(fortran == "False", source,
             ": Fortran-order .npy arrays are not supported; save with np.ascontiguousarray");
  const DType dtype = DTypeFromDescr(HeaderField(header, "descr", source), source);
  const std::vector<int64_t> dims = ParseShape(HeaderField(header, "shape", source), source);

  // Check the size before allocating: a corrupt shape must not ask for
  // exabytes (or overflow).
  const size_t data_start = header_start + header_len;
  const size_t available = bytes.size() - data_start;
  size_t needed = DTypeSize(dtype);
  for (int64_t d : dims) {
    if (d != 0 && needed > available / static_cast<size_t>(d)) {
      Fail(source, ": truncated .npy data (shape ", DimsToString(dims), " of ", DTypeName(dtype),
           " needs more than the ", available, " bytes in the file)");
    }
    needed *= static_cast<size_t>(d);
  }
  KILN_CHECK(available >= needed, source, ": truncated .npy data (", DTypeName(dtype),
             DimsToString(dims), " needs ", needed, " bytes, the file has ", available, ")");
  Tensor tensor(dtype, dims);
  if (tensor.nbytes()) std::memcpy(tensor.raw_data(), bytes.data() + data_start, tensor.nbytes());
  return tensor;
}

Tensor ReadNpyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "cannot open '", path, "'");
  std::ostringstream contents;
  contents << in.rdbuf();
  return ParseNpy(contents.str(), path);
}

std::string SerializeNpy(const Tensor& tensor) {
  std::string shape = "(";
  for (int i = 0; i < tensor.rank(); ++i) shape += std::to_string(tensor.dim(i)) + ", ";
  if (tensor.rank() > 1) shape.resize(shape.size() - 2);  // (2, 3) but (5,)
  if (tensor.rank() == 1) shape.pop_back();
  shape += ")";
  std::string header = StrCat("{'descr': '", DescrFromDType(tensor.dtype()),
                              "', 'fortran_order': False, 'shape': ", shape, ", }");
  // The data starts 64-byte aligned; the header ends with '\n'.
  size_t prefix = 10;
  size_t total = prefix + header.size() + 1;
  if (total % 64) header.append(64 - total % 64, ' ');
  header += '\n';
  int major = 1;
  if (header.size() > 65535) {
    major = 2;
    prefix = 12;
    header.pop_back();
    while ((prefix + header.size() + 1) % 64) header.push_back(' ');
    header += '\n';
  }
  std::string out(kMagic, kMagicSize);
  out += static_cast<char>(major);
  out += '\0';
  const size_t len = header.size();
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out += static_cast<char>((len >> (8 * i)) & 0xff);
  out += header;
  out.append(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
  return out;
}

void WriteNpyFile(const Tensor& tensor, const std::string& path) {
  std::string bytes = SerializeNpy(tensor);
  std::ofstream out(path, std::ios::binary);
  KILN_CHECK(out, "cannot write '", path, "'");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  KILN_CHECK(out.good(), "error writing '", path, "'");
}

}  // namespace kiln::npy
