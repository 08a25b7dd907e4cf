// The kiln command line, run as a user would: exit codes, messages, files.
// Also the .npy reader/writer it is built on.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>

#include "ir/npy.h"
#include "onnx.pb.h"
#include "onnx/importer.h"
#ifdef KILN_HAVE_CUDA
#include "cuda/device.h"
#endif
#include "test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// Debian's libonnx-testdata; KILN_ONNX_TESTDATA points elsewhere (GPU hosts).
const std::string kTestData = [] {
  const char* env = std::getenv("KILN_ONNX_TESTDATA");
  return std::string(env && *env ? env : "/usr/share/libonnx-testdata/data");
}();
const std::string kReluDir = kTestData + "/node/test_relu";

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("kiln_cli_") + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs `kiln <args>` in the temp dir, capturing stdout and stderr.
  CliResult Kiln(const std::string& args) const {
    // KILN_BINARY overrides the build tree's binary (a bundle on a GPU host).
    const char* env = std::getenv("KILN_BINARY");
    const std::string binary = env && *env ? std::string(env) : std::string(KILN_BINARY_DIR "/kiln");
    if (!fs::exists(binary)) ADD_FAILURE() << "kiln binary not built: " << binary;
    std::string command = "cd '" + dir_.string() + "' && '" + binary + "' " + args + " > '" +
                          Path("stdout.txt") + "' 2> '" + Path("stderr.txt") + "'";
    int status = std::system(command.c_str());
    CliResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = ReadFile(Path("stdout.txt"));
    r.err = ReadFile(Path("stderr.txt"));
    return r;
  }

  // A one-node model written with the protobuf API.
  std::string WriteOneNodeModel(const std::string& file, const std::string& op_type,
                                int opset = 13) const {
    ::onnx::ModelProto model;
    model.set_ir_version(7);
    model.set_producer_name("cli_test");
    model.add_opset_import()->set_version(opset);
    ::onnx::GraphProto* graph = model.mutable_graph();
    graph->set_name("one_node");
    ::onnx::NodeProto* node = graph->add_node();
    node->set_op_type(op_type);
    node->set_name("the_node");
    node->add_input("x");
    node->add_output("y");
    for (auto [list, name] : {std::pair{graph->add_input(), "x"}, {graph->add_output(), "y"}}) {
      list->set_name(name);
      auto* tensor_type = list->mutable_type()->mutable_tensor_type();
      tensor_type->set_elem_type(::onnx::TensorProto::FLOAT);
      tensor_type->mutable_shape()->add_dim()->set_dim_value(2);
    }
    std::string path = Path(file);
    WriteFile(path, model.SerializeAsString());
    return path;
  }

  // Gemm(x[2,3], W[4,3] (transB), b[4]) with initializers W and b.
  std::string WriteGemmModel(const std::string& file) const {
    ::onnx::ModelProto model;
    model.set_ir_version(7);
    model.set_producer_name("cli_test");
    model.set_producer_version("1.0");
    model.add_opset_import()->set_version(13);
    ::onnx::GraphProto* graph = model.mutable_graph();
    ::onnx::NodeProto* node = graph->add_node();
    node->set_op_type("Gemm");
    node->set_name("dense");
    for (const char* in : {"x", "W", "b"}) node->add_input(in);
    node->add_output("y");
    auto* trans_b = node->add_attribute();
    trans_b->set_name("transB");
    trans_b->set_type(::onnx::AttributeProto::INT);
    trans_b->set_i(1);
    for (auto [name, dims] : {std::pair{"W", std::vector<int64_t>{4, 3}}, {"b", {4}}}) {
      ::onnx::TensorProto* t = graph->add_initializer();
      t->set_name(name);
      t->set_data_type(::onnx::TensorProto::FLOAT);
      int64_t n = 1;
      for (int64_t d : dims) {
        t->add_dims(d);
        n *= d;
      }
      for (int64_t i = 0; i < n; ++i) t->add_float_data(GemmWeight(name, i));
    }
    for (auto [list, name, dims] : {std::tuple{graph->add_input(), "x", std::vector<int64_t>{2, 3}},
                                    {graph->add_output(), "y", {2, 4}}}) {
      list->set_name(name);
      auto* tensor_type = list->mutable_type()->mutable_tensor_type();
      tensor_type->set_elem_type(::onnx::TensorProto::FLOAT);
      for (int64_t d : dims) tensor_type->mutable_shape()->add_dim()->set_dim_value(d);
    }
    std::string path = Path(file);
    WriteFile(path, model.SerializeAsString());
    return path;
  }
  static float GemmWeight(const std::string& name, int64_t i) {
    return name == "W" ? 0.25f * static_cast<float>(i) - 1.f : static_cast<float>(i) - 2.f;
  }

  fs::path dir_;
};

void ExpectContains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in:\n" << text;
}

// ---- kiln run ----

TEST_F(CliTest, RunReluMatchesTheReferenceOutput) {
  Tensor input = onnx_import::LoadTensorProtoFile(kReluDir + "/test_data_set_0/input_0.pb");
  Tensor expected = onnx_import::LoadTensorProtoFile(kReluDir + "/test_data_set_0/output_0.pb");
  npy::WriteNpyFile(input, Path("x.npy"));
  CliResult r = Kiln("run " + kReluDir + "/model.onnx --input x=x.npy --output-dir out -n 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectContains(r.out, "output 'y': float32 [3,4,5]");
  ExpectContains(r.out, "median of 3");
  Tensor actual = npy::ReadNpyFile(Path("out/y.npy"));
  EXPECT_EQ(actual.dims(), expected.dims());
  EXPECT_EQ(testing::MaxAbsoluteError(actual, expected), 0.0);
}

TEST_F(CliTest, RunWithRandomInputsIsSeededAndPrintsTopOne) {
  // A 2-D float output gets a top-1 line; the same seed gives the same data.
  CliResult a =
      Kiln("run " + kTestData + "/simple/test_single_relu_model/model.onnx --seed 5 -o a");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ExpectContains(a.out, "argmax per row: [");
  CliResult b =
      Kiln("run " + kTestData + "/simple/test_single_relu_model/model.onnx --seed 5 -o b");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(Path("a")))
    names.push_back(entry.path().filename());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(ReadFile(Path("a/" + names[0])), ReadFile(Path("b/" + names[0])));
  Tensor y = npy::ReadNpyFile(Path("a/" + names[0]));
  EXPECT_EQ(y.dims(), (std::vector<int64_t>{1, 2}));
  for (float v : y.ToFloatVector()) EXPECT_GE(v, 0.f);  // Relu.
}

TEST_F(CliTest, RunRejectsMisshapedAndMistypedInputs) {
  npy::WriteNpyFile(testing::RandomTensor({2, 2}), Path("small.npy"));
  CliResult r = Kiln("run " + kReluDir + "/model.onnx --input x=small.npy");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "kiln: error:");
  ExpectContains(r.err, "input 'x'");
  ExpectContains(r.err, "float32[3,4,5]");
  ExpectContains(r.err, "float32[2,2]");

  npy::WriteNpyFile(Tensor::FromInt64s({3, 4, 5}, std::vector<int64_t>(60, 1)), Path("ints.npy"));
  r = Kiln("run " + kReluDir + "/model.onnx --input x=ints.npy");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "input 'x'");
  ExpectContains(r.err, "int64[3,4,5]");
  ExpectContains(r.err, "float32");

  r = Kiln("run " + kReluDir + "/model.onnx --input nosuch=small.npy");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "no input named 'nosuch'");

  r = Kiln("run " + kReluDir + "/model.onnx --input x=missing.npy");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "missing.npy");

  WriteFile(Path("junk.npy"), "not numpy at all");
  r = Kiln("run " + kReluDir + "/model.onnx --input x=junk.npy");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "junk.npy");
}

TEST_F(CliTest, RunRejectsBadFilesAndOptions) {
  WriteFile(Path("garbage.onnx"),
            std::string("\xff\xfe garbage \x01\x02\x03 this is no model", 36));
  CliResult r = Kiln("run garbage.onnx");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "kiln: error:");
  ExpectContains(r.err, "garbage.onnx");

  // A model with weights, cut in half.
  std::string model = ReadFile(WriteGemmModel("gemm.onnx"));
  ASSERT_GT(model.size(), 60u);
  WriteFile(Path("truncated.onnx"), model.substr(0, model.size() / 2));
  r = Kiln("run truncated.onnx");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "kiln: error:");
  ExpectContains(r.err, "truncated.onnx");

  r = Kiln("run no_such_file.onnx");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "no_such_file.onnx");

  r = Kiln("run " + kReluDir + "/model.onnx --backend gpu");
#ifdef KILN_HAVE_CUDA
  if (cuda::DeviceAvailable()) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    ExpectContains(r.out, "gpu backend");
  } else
#endif
  {
    // No GPU (or no CUDA build): a clear error, never a crash.
    EXPECT_EQ(r.exit_code, 1);
    ExpectContains(r.err, "CUDA");
  }

  // Engine files are checked before anything touches the GPU.
  std::string bogus = Path("bogus.kiln");
  WriteFile(bogus, "definitely not an engine");
  r = Kiln("run " + bogus);
  EXPECT_EQ(r.exit_code, 1);
#ifdef KILN_HAVE_CUDA
  ExpectContains(r.err, "not a kiln engine file");
#else
  ExpectContains(r.err, "without CUDA");
#endif
  r = Kiln("build " + kReluDir + "/model.onnx -o " + Path("relu.kiln"));
#ifdef KILN_HAVE_CUDA
  if (cuda::DeviceAvailable()) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
  } else
#endif
  {
    // No GPU or no CUDA build: a clear error, never a crash.
    EXPECT_EQ(r.exit_code, 1);
    ExpectContains(r.err, "kiln: error:");
  }
#ifdef KILN_HAVE_CUDA
  r = Kiln("bench " + Path("missing.kiln"));
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "missing.kiln");
#endif

  r = Kiln("run " + kReluDir + "/model.onnx --shapes x=3x4");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "input 'x'");

  r = Kiln("run " + kReluDir + "/model.onnx --shapes x=3xAx5");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "'A' is not a dimension");

  r = Kiln("frobnicate");
  EXPECT_EQ(r.exit_code, 1);
}

TEST_F(CliTest, UnknownOperatorAndOpsetAreNamed) {
  std::string unknown = WriteOneNodeModel("unknown.onnx", "FrobnicateOp");
  CliResult r = Kiln("run unknown.onnx");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "FrobnicateOp");
  ExpectContains(r.err, "the_node");

  // inspect still reports the model, lists the node, and exits 2.
  r = Kiln("inspect unknown.onnx");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ExpectContains(r.out, "producer:    cli_test");
  ExpectContains(r.out, "FrobnicateOp");
  ExpectContains(r.out, "the_node");
  ExpectContains(r.err, "FrobnicateOp");

  r = Kiln("inspect unknown.onnx --json");
  EXPECT_EQ(r.exit_code, 2);
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["unsupported"].size(), 1u);
  EXPECT_EQ(j["unsupported"][0]["op_type"], "FrobnicateOp");
  EXPECT_EQ(j["unsupported"][0]["node"], "the_node");
  EXPECT_TRUE(j["flops"].is_null());

  WriteOneNodeModel("old.onnx", "Relu", /*opset=*/22);
  r = Kiln("run old.onnx");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "opset 22");
}

// ---- kiln inspect ----

TEST_F(CliTest, InspectReportsInputsOperatorsAndCounts) {
  CliResult r = Kiln("inspect " + kReluDir + "/model.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectContains(r.out, "producer:    backend-test");
  ExpectContains(r.out, "ai.onnx 14");
  ExpectContains(r.out, "float32  [3,4,5]");
  ExpectContains(r.out, "Relu");
  ExpectContains(r.out, "FLOPs:       60 per inference");

  r = Kiln("inspect " + WriteGemmModel("gemm.onnx") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["parameters"]["count"], 16);  // W[4,3] + b[4]
  EXPECT_EQ(j["parameters"]["bytes"], 64);
  EXPECT_EQ(j["parameters"]["tensors"], 2);
  EXPECT_EQ(j["num_nodes"], 1);
  EXPECT_EQ(j["operators"][0]["op_type"], "Gemm");
  EXPECT_EQ(j["operators"][0]["count"], 1);
  EXPECT_EQ(j["producer"]["name"], "cli_test");
  EXPECT_EQ(j["producer"]["version"], "1.0");
  EXPECT_EQ(j["opsets"][0]["version"], 13);
  EXPECT_EQ(j["outputs"][0]["shape"], nlohmann::json::parse("[2, 4]"));
  // At least the 2*M*N*K multiply-adds of the product.
  EXPECT_GE(j["flops"].get<double>(), 2.0 * 2 * 4 * 3);
}

TEST_F(CliTest, RunGemmMatchesAHandComputedProduct) {
  std::string model = WriteGemmModel("gemm.onnx");
  Tensor x = Tensor::FromFloats({2, 3}, {1, 2, 3, -1, 0.5f, 2});
  npy::WriteNpyFile(x, Path("x.npy"));
  CliResult r = Kiln("run gemm.onnx --input x.npy");  // The only input: no name needed.
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Tensor y = npy::ReadNpyFile(Path("kiln_outputs/y.npy"));
  ASSERT_EQ(y.dims(), (std::vector<int64_t>{2, 4}));
  std::vector<int64_t> top1;
  for (int64_t row = 0; row < 2; ++row) {
    int64_t best = 0;
    for (int64_t col = 0; col < 4; ++col) {
      float expected = GemmWeight("b", col);
      for (int64_t k = 0; k < 3; ++k)
        expected += x.data<float>()[row * 3 + k] * GemmWeight("W", col * 3 + k);
      EXPECT_NEAR(y.data<float>()[row * 4 + col], expected, 1e-5f);
      if (y.data<float>()[row * 4 + col] > y.data<float>()[row * 4 + best]) best = col;
    }
    top1.push_back(best);
  }
  ExpectContains(
      r.out, "argmax per row: [" + std::to_string(top1[0]) + ", " + std::to_string(top1[1]) + "]");
}

// Declares a float32 graph input or output; dims are sizes or symbol names.
void DeclareValue(::onnx::ValueInfoProto* info, const std::string& name,
                  const std::vector<std::string>& dims) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(::onnx::TensorProto::FLOAT);
  for (const std::string& d : dims) {
    auto* dim = tensor_type->mutable_shape()->add_dim();
    if (d.find_first_not_of("0123456789") == std::string::npos) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

TEST_F(CliTest, InspectFlopsFollowGivenShapes) {
  // Relu counts one FLOP per element; a symbolic batch defaults to 1 and
  // --shapes overrides it.
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  ::onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Relu");
  node->add_input("x");
  node->add_output("y");
  DeclareValue(graph->add_input(), "x", {"batch", "10"});
  DeclareValue(graph->add_output(), "y", {"batch", "10"});
  WriteFile(Path("dyn.onnx"), model.SerializeAsString());
  CliResult r = Kiln("inspect dyn.onnx --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["inputs"][0]["shape"], nlohmann::json::parse(R"(["batch", 10])"));
  EXPECT_EQ(j["flops"].get<double>(), 10.0);
  r = Kiln("inspect dyn.onnx --json --shapes x=8x10");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["flops"].get<double>(), 80.0);
  r = Kiln("inspect dyn.onnx --shapes x=8x11");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "input 'x'");
}

TEST_F(CliTest, RunGivesInputsSharingASymbolTheSameSize) {
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  ::onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Add");
  node->add_input("x");
  node->add_input("mask");
  node->add_output("y");
  DeclareValue(graph->add_input(), "x", {"batch", "seq"});
  DeclareValue(graph->add_input(), "mask", {"batch", "seq"});
  DeclareValue(graph->add_output(), "y", {"batch", "seq"});
  WriteFile(Path("add.onnx"), model.SerializeAsString());
  CliResult r = Kiln("run add.onnx --shapes x=3x5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectContains(r.out, "output 'y': float32 [3,5]");
  // A mask input is all ones, so y = x + 1 with x in [-1, 1).
  Tensor y = npy::ReadNpyFile(Path("kiln_outputs/y.npy"));
  for (float v : y.ToFloatVector()) {
    EXPECT_GE(v, 0.f);
    EXPECT_LT(v, 2.f);
  }
  r = Kiln("run add.onnx --shapes x=3x5 --shapes mask=3x4");
  EXPECT_EQ(r.exit_code, 1);
  ExpectContains(r.err, "dim 'seq'");
}

// ---- .npy ----

TEST_F(CliTest, NpyRoundTripsEverySupportedDType) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kInt8,
                      DType::kUInt8, DType::kInt32, DType::kInt64, DType::kBool, DType::kInt16,
                      DType::kUInt16, DType::kUInt32, DType::kUInt64}) {
    SCOPED_TRACE(DTypeName(dtype));
    Tensor t(dtype, {2, 3});
    auto* bytes = static_cast<uint8_t*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + 1);
    if (dtype == DType::kBool)
      for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] &= 1;
    std::string file = npy::SerializeNpy(t);
    EXPECT_EQ((file.size() - t.nbytes()) % 64, 0u);  // Data is 64-byte aligned.
    Tensor back = npy::ParseNpy(file);
    EXPECT_EQ(back.dtype(), dtype);
    EXPECT_EQ(back.dims(), t.dims());
    EXPECT_EQ(std::memcmp(back.raw_data(), t.raw_data(), t.nbytes()), 0);
  }
  // Scalars and 1-D shapes use NumPy's tuple spelling.
  EXPECT_NE(npy::SerializeNpy(Tensor::Scalar(1.f)).find("'shape': ()"), std::string::npos);
  EXPECT_NE(npy::SerializeNpy(Tensor::FromFloats({5}, {1, 2, 3, 4, 5})).find("'shape': (5,)"),
            std::string::npos);
  EXPECT_EQ(npy::ParseNpy(npy::SerializeNpy(Tensor::Scalar(2.5f))).GetAsDouble(0), 2.5);
}

// Builds a .npy file by hand: version, header dict and payload.
std::string HandMadeNpy(int major, const std::string& dict, const std::string& payload) {
  std::string header = dict;
  size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i)
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + payload;
}

TEST_F(CliTest, NpyReadsVersion2AndNumpySpellings) {
  std::string payload(4 * sizeof(float), '\0');
  float values[4] = {1, -2, 3.5f, 4};
  std::memcpy(payload.data(), values, sizeof(values));
  Tensor t = npy::ParseNpy(
      HandMadeNpy(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", payload));
  EXPECT_EQ(t.dims(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.ToFloatVector(), (std::vector<float>{1, -2, 3.5f, 4}));
  // Key order is free; '=' is native (little-endian) order.
  t = npy::ParseNpy(
      HandMadeNpy(1, "{'shape': (4,), 'fortran_order': False, 'descr': '=f4'}", payload));
  EXPECT_EQ(t.dims(), (std::vector<int64_t>{4}));
}

TEST_F(CliTest, NpyRejectsWhatItCannotRead) {
  std::string payload(16, '\0');
  auto expect_error = [](const std::string& bytes, const std::string& part) {
    try {
      npy::ParseNpy(bytes, "file.npy");
      ADD_FAILURE() << "no error; expected one containing '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("file.npy"), std::string::npos) << e.what();
    }
  };
  expect_error(
      HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", payload),
      "Fortran");
  expect_error(HandMadeNpy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", payload),
               "big-endian");
  expect_error(HandMadeNpy(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", payload),
               "unsupported .npy dtype '<c8'");
  expect_error(HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", payload),
               "truncated");
  expect_error(HandMadeNpy(1,
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, "
                           "100000000, 100000000), }",
                           payload),
               "truncated");
  expect_error(
      HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", payload),
      "malformed .npy shape");
  expect_error(HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False}", payload), "'shape'");
  expect_error(HandMadeNpy(7, "{}", payload), "version 7");
  expect_error("\x93NUMPY\x01", "bad magic");
  std::string good =
      HandMadeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", payload);
  expect_error(good.substr(0, 40), "truncated .npy header");
  EXPECT_THROW(npy::SerializeNpy(Tensor(DType::kBFloat16, {2})), Error);
}

}  // namespace
}  // namespace kiln

// ---- kiln bench --sweep / --contexts (flag checks run on every machine;
// the sweep and the contexts run where a GPU is) ----
namespace kiln {
namespace {

TEST_F(CliTest, BenchSweepAndContextsCheckTheirFlagsFirst) {
  // Two inputs sharing the batch and sequence symbols, like BERT's.
  ::onnx::ModelProto model;
  model.set_ir_version(7);
  model.add_opset_import()->set_version(17);
  ::onnx::GraphProto* graph = model.mutable_graph();
  ::onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Add");
  node->add_input("x");
  node->add_input("mask");
  node->add_output("y");
  DeclareValue(graph->add_input(), "x", {"batch", "seq"});
  DeclareValue(graph->add_input(), "mask", {"batch", "seq"});
  DeclareValue(graph->add_output(), "y", {"batch", "seq"});
  WriteFile(Path("add.onnx"), model.SerializeAsString());

  const std::pair<const char*, const char*> bad[] = {
      {"--sweep 1,0,4", "--sweep '1,0,4': batch size 0 is out of range"},
      {"--sweep 4,2", "strictly increasing (2 comes after 4)"},
      {"--sweep 1,x", "'x' is not a batch size"},
      {"--sweep 1,,2", "empty entry"},
      {"--plot sweep.svg", "--plot needs --sweep"},
      {"--sweep 1,2 --contexts 2", "choose one of --sweep and --contexts"},
      {"--sweep 1,2 --batch 4", "drop --batch"},
      {"--sweep 1,2 --profile", "--profile is not available with --sweep"},
      {"--threads 2", "--threads needs --contexts"},
      {"--contexts 0", "--contexts must be between 1 and 1024"},
      {"--contexts 2 --threads 3", "--threads must be between 1 and --contexts (2)"},
  };
  for (const auto& [flags, message] : bad) {
    CliResult r = Kiln(std::string("bench add.onnx ") + flags);
    EXPECT_EQ(r.exit_code, 1) << flags;
    ExpectContains(r.err, message);
  }

  bool gpu = false;
#ifdef KILN_HAVE_CUDA
  gpu = cuda::DeviceAvailable();
  // A model without a dynamic batch dim is refused before any build.
  CliResult fixed = Kiln("bench " + kReluDir + "/model.onnx --sweep 1,2");
  EXPECT_EQ(fixed.exit_code, 1);
  ExpectContains(fixed.err, "dynamic batch dim");
#endif
  if (!gpu) {
    // No CUDA backend, or no GPU: a clear error, never a crash.
    for (const char* flags : {"--sweep 1,2", "--contexts 2 --threads 2"}) {
      CliResult r = Kiln(std::string("bench add.onnx --shapes x=1x16 ") + flags);
      EXPECT_EQ(r.exit_code, 1) << flags;
      ExpectContains(r.err, "kiln: error:");
#ifndef KILN_HAVE_CUDA
      ExpectContains(r.err, "needs the CUDA backend");
#endif
    }
    return;
  }

  // The sweep: one engine per batch, the sequence dim from --shapes x (and
  // shared with mask); every row measured, the plot and JSON written.
  CliResult r = Kiln("bench add.onnx --shapes x=1x16 --sweep 1,2,4 --iterations 20 --warmup 2 "
                     "--plot sweep.svg --json sweep.json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectContains(r.out, "best throughput: batch");
  ExpectContains(r.out, "the knee is the last batch size");
  nlohmann::json j = nlohmann::json::parse(ReadFile(Path("sweep.json")));
  ASSERT_EQ(j["sweep"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json& row = j["sweep"][i];
    EXPECT_EQ(row["batch"].get<int64_t>(), int64_t{1} << i);
    ASSERT_TRUE(row["ok"].get<bool>()) << row.dump();
    EXPECT_GT(row["p50_ms"].get<double>(), 0);
    EXPECT_GE(row["p99_ms"].get<double>(), row["p50_ms"].get<double>());
    EXPECT_GT(row["samples_per_s"].get<double>(), 0);
    EXPECT_GE(row["context_bytes"].get<double>(), 0);  // 0 when every value lives in a binding.
  }
  EXPECT_FALSE(j["best_batch"].is_null());
  const std::string svg = ReadFile(Path("sweep.svg"));
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  ExpectContains(svg, "<polyline class=\"throughput\"");
  ExpectContains(svg, "</svg>");

  // Three contexts on two threads: contexts 0 and 2 on thread 0, 1 on thread 1.
  r = Kiln("bench add.onnx --shapes x=8x16 --contexts 3 --threads 2 --cuda-graph --iterations 20 "
           "--json contexts.json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectContains(r.out, "1 context, 1 thread");
  ExpectContains(r.out, "3 contexts, 2 threads");
  j = nlohmann::json::parse(ReadFile(Path("contexts.json")));
  EXPECT_EQ(j["batch"].get<int64_t>(), 8);
  EXPECT_EQ(j["context_bytes"].size(), 3u);
  ASSERT_EQ(j["concurrent"]["threads"].size(), 2u);
  EXPECT_EQ(j["concurrent"]["threads"][0]["contexts"], nlohmann::json::parse("[0, 2]"));
  EXPECT_EQ(j["concurrent"]["threads"][1]["contexts"], nlohmann::json::parse("[1]"));
  EXPECT_GT(j["concurrent"]["samples_per_s"].get<double>(), 0);
  EXPECT_GT(j["single_context"]["samples_per_s"].get<double>(), 0);
  EXPECT_EQ(j["non_finite_outputs"].get<int64_t>(), 0);
  // --batch sets the dynamic dim 0 of both inputs; seq from --shapes.
  r = Kiln("bench add.onnx --shapes x=1x16 --batch 4 --contexts 2 --iterations 10 --json b.json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(nlohmann::json::parse(ReadFile(Path("b.json")))["batch"].get<int64_t>(), 4);
}

}  // namespace
}  // namespace kiln
