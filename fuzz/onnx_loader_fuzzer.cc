// libFuzzer target for the ONNX importer: any byte string must either import
// or throw kiln::Error. Any other exception, a crash or a sanitizer report is
// a bug. Built and run by scripts/fuzz-onnx-loader.
#include <google/protobuf/stubs/logging.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "kiln/error.h"
#include "onnx/importer.h"

namespace {

// A private folder holding one small weight file, so external-data paths are
// exercised (path checks, mapping, offset and length checks) without reading
// anything outside it.
std::string g_base_dir;

void MakeBaseDir() {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("kiln_fuzz_onnx_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream weights(dir / "w.bin", std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 256; ++i) weights.put(static_cast<char>(i));
  g_base_dir = dir.string();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Debug builds of protobuf log invalid UTF-8 in string fields; that is noise here.
  google::protobuf::SetLogHandler(nullptr);
  MakeBaseDir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  // Inputs that start like a serialized model (the ir_version tag, 0x08) may
  // resolve external data; mutants of that byte cover the in-memory rule.
  std::string base_dir = (size > 0 && data[0] == 0x08) ? g_base_dir : "";
  try {
    std::unique_ptr<kiln::ir::Graph> graph =
        kiln::onnx_import::ImportModelBytes(bytes, base_dir, "<fuzz>");
    // Touch every constant's bytes so ASan sees reads past a bad alias.
    size_t checksum = 0;
    for (const auto& value : graph->values()) {
      if (!value->is_constant()) continue;
      const auto* p = static_cast<const uint8_t*>(value->constant.raw_data());
      for (size_t i = 0; i < value->constant.nbytes(); ++i) checksum += p[i];
    }
    if (checksum == 1) return 0;  // Keeps the loop from being optimised away.
  } catch (const kiln::Error&) {
    // Expected for malformed input.
  }
  return 0;
}
