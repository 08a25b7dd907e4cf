#include "onnx/importer.h"
#include "ops/registry.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "onnx.pb.h"

namespace kiln::onnx_import {
namespace {

namespace fs = std::filesystem;

// Debian's libonnx-testdata; KILN_ONNX_TESTDATA points elsewhere (GPU hosts).
const std::string kTestData = [] {
  const char* env = std::getenv("KILN_ONNX_TESTDATA");
  return std::string(env && *env ? env : "/usr/share/libonnx-testdata/data");
}();

bool HaveTestData() { return fs::exists(kTestData + "/node/test_add/model.onnx"); }

#define SKIP_WITHOUT_TEST_DATA() \
  if (!HaveTestData()) GTEST_SKIP() << "ONNX backend test data not installed"

// Runs `fn` and returns the kiln::Error message it throws (fails the test if
// it throws nothing).
template <typename Fn>
std::string ErrorOf(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a kiln::Error";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

// A fresh, empty folder under the system temp dir, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("kiln_importer_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---- Building models with the protobuf API ----

onnx::ModelProto NewModel(int opset = 17) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  model.mutable_graph()->set_name("g");
  return model;
}

void AddTensorValueInfo(onnx::ValueInfoProto* info, const std::string& name, int elem_type,
                        const std::vector<int64_t>& dims) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(elem_type);
  auto* shape = tensor->mutable_shape();
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

void AddInput(onnx::ModelProto& m, const std::string& name, std::vector<int64_t> dims = {2},
              int elem_type = onnx::TensorProto::FLOAT) {
  AddTensorValueInfo(m.mutable_graph()->add_input(), name, elem_type, dims);
}
void AddOutput(onnx::ModelProto& m, const std::string& name, std::vector<int64_t> dims = {2},
               int elem_type = onnx::TensorProto::FLOAT) {
  AddTensorValueInfo(m.mutable_graph()->add_output(), name, elem_type, dims);
}

onnx::NodeProto* AddNode(onnx::ModelProto& m, const std::string& op_type,
                         const std::vector<std::string>& inputs,
                         const std::vector<std::string>& outputs, const std::string& name = "") {
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type(op_type);
  node->set_name(name);
  for (const auto& i : inputs) node->add_input(i);
  for (const auto& o : outputs) node->add_output(o);
  return node;
}

onnx::TensorProto FloatTensorProto(const std::string& name, const std::vector<int64_t>& dims,
                                   const std::vector<float>& values, bool raw = true) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  if (raw) {
    t.set_raw_data(values.data(), values.size() * sizeof(float));
  } else {
    for (float v : values) t.add_float_data(v);
  }
  return t;
}

std::unique_ptr<ir::Graph> Import(const onnx::ModelProto& m, const std::string& base_dir = "") {
  return ImportModelBytes(m.SerializeAsString(), base_dir, "test-model");
}

// Relu(x) -> y: the smallest valid model.
onnx::ModelProto ReluModel(int opset = 17) {
  onnx::ModelProto m = NewModel(opset);
  AddInput(m, "x");
  AddOutput(m, "y");
  AddNode(m, "Relu", {"x"}, {"y"}, "relu");
  return m;
}

// ---- Real files from the ONNX backend test suite ----

TEST(ImporterTest, ImportsNodeTestAdd) {
  SKIP_WITHOUT_TEST_DATA();
  auto g = ImportModelFile(kTestData + "/node/test_add/model.onnx");
  EXPECT_EQ(g->name, "test_add");
  EXPECT_EQ(g->opset_version, 14);
  ASSERT_EQ(g->inputs().size(), 2u);
  EXPECT_EQ(g->inputs()[0]->name, "x");
  EXPECT_EQ(g->inputs()[1]->name, "y");
  EXPECT_TRUE(g->inputs()[0]->is_graph_input);
  EXPECT_EQ(g->inputs()[0]->type.ToString(), "float32[3,4,5]");
  ASSERT_EQ(g->outputs().size(), 1u);
  EXPECT_EQ(g->outputs()[0]->name, "sum");
  EXPECT_EQ(g->outputs()[0]->type.ToString(), "float32[3,4,5]");
  ASSERT_EQ(g->nodes().size(), 1u);
  const ir::Node& add = *g->nodes()[0];
  EXPECT_EQ(add.op_type, "Add");
  EXPECT_EQ(add.name, "Add_0");  // Unnamed in the file.
  EXPECT_EQ(add.opset, 14);
  EXPECT_EQ(add.domain, "");
  ASSERT_EQ(add.inputs.size(), 2u);
  EXPECT_EQ(add.inputs[0], g->inputs()[0]);
  EXPECT_EQ(add.outputs[0], g->outputs()[0]);
  EXPECT_EQ(add.outputs[0]->producer, &add);
}

TEST(ImporterTest, ImportsPytorchConvertedMaxPoolWithAttributes) {
  SKIP_WITHOUT_TEST_DATA();
  auto g = ImportModelFile(kTestData +
                           "/pytorch-converted/test_MaxPool2d_stride_padding_dilation/model.onnx");
  EXPECT_EQ(g->opset_version, 12);
  ASSERT_EQ(g->nodes().size(), 1u);
  const ir::Node& pool = *g->nodes()[0];
  EXPECT_EQ(pool.op_type, "MaxPool");
  EXPECT_EQ(pool.attrs.GetInts("kernel_shape"), (std::vector<int64_t>{60, 80}));
  EXPECT_EQ(pool.attrs.GetInts("pads"), (std::vector<int64_t>{10, 20, 10, 20}));
  EXPECT_EQ(pool.attrs.GetInts("dilations"), (std::vector<int64_t>{10, 10}));
  EXPECT_EQ(g->inputs()[0]->type.ToString(), "float32[1,1,1000,1000]");
  EXPECT_EQ(g->outputs()[0]->type.ToString(), "float32[1,1,43,25]");
}

TEST(ImporterTest, ConstantNodeModelHasNoNodes) {
  SKIP_WITHOUT_TEST_DATA();
  const std::string dir = kTestData + "/node/test_constant";
  auto g = ImportModelFile(dir + "/model.onnx");
  EXPECT_TRUE(g->nodes().empty());
  ASSERT_EQ(g->outputs().size(), 1u);
  const ir::Value* values = g->outputs()[0];
  ASSERT_TRUE(values->is_constant());
  Tensor expected = LoadTensorProtoFile(dir + "/test_data_set_0/output_0.pb");
  EXPECT_EQ(values->constant.TypeString(), "float32[5,5]");
  EXPECT_EQ(values->constant.ToFloatVector(), expected.ToFloatVector());
}

TEST(ImporterTest, ExpandedFunctionConstantsAreFolded) {
  SKIP_WITHOUT_TEST_DATA();
  auto g = ImportModelFile(kTestData + "/node/test_blackmanwindow_expanded/model.onnx");
  EXPECT_EQ(g->nodes().size(), 18u);  // 26 nodes in the file, 8 of them Constant.
  for (const auto& n : g->nodes()) EXPECT_NE(n->op_type, "Constant");
  const ir::Value* a0 = g->FindValue("BlackmanWindow_test_blackmanwindow_expanded_function_A0");
  ASSERT_NE(a0, nullptr);
  ASSERT_TRUE(a0->is_constant());
  EXPECT_EQ(a0->constant.TypeString(), "float32[]");
  EXPECT_FLOAT_EQ(a0->constant.data<float>()[0], 0.42f);
  const ir::Value* periodic =
      g->FindValue("BlackmanWindow_test_blackmanwindow_expanded_function_IsPeriodic");
  ASSERT_NE(periodic, nullptr);
  EXPECT_EQ(periodic->constant.TypeString(), "int64[]");  // value_int
  EXPECT_EQ(periodic->constant.data<int64_t>()[0], 1);
  // The input is a scalar: known rank 0.
  ASSERT_TRUE(g->inputs()[0]->type.has_rank());
  EXPECT_EQ(g->inputs()[0]->type.rank(), 0);
  EXPECT_EQ(g->inputs()[0]->type.dtype, DType::kInt32);
}

TEST(ImporterTest, EmptyNamesAreOmittedOptionalInputsAndOutputs) {
  SKIP_WITHOUT_TEST_DATA();
  auto clip = ImportModelFile(kTestData + "/node/test_clip_default_inbounds/model.onnx");
  ASSERT_EQ(clip->nodes()[0]->inputs.size(), 3u);
  EXPECT_NE(clip->nodes()[0]->inputs[0], nullptr);
  EXPECT_EQ(clip->nodes()[0]->inputs[1], nullptr);
  EXPECT_EQ(clip->nodes()[0]->inputs[2], nullptr);
  auto gru = ImportModelFile(kTestData + "/node/test_gru_defaults/model.onnx");
  const ir::Node& node = *gru->nodes()[0];
  ASSERT_EQ(node.outputs.size(), 2u);
  EXPECT_EQ(node.outputs[0], nullptr);
  ASSERT_NE(node.outputs[1], nullptr);
  EXPECT_EQ(node.outputs[1]->name, "Y_h");
}

TEST(ImporterTest, SubgraphAttributeIsRejectedNamingTheNode) {
  SKIP_WITHOUT_TEST_DATA();
  std::string msg = ErrorOf([] { ImportModelFile(kTestData + "/node/test_if/model.onnx"); });
  EXPECT_CONTAINS(msg, "subgraphs (If/Loop/Scan) are not supported");
  EXPECT_CONTAINS(msg, "If_0");
  EXPECT_CONTAINS(msg, "test_if/model.onnx");
}

TEST(ImporterTest, OldOpsetModelImportsAndOpsOutsideTheirRangeAreNamed) {
  SKIP_WITHOUT_TEST_DATA();
  // Opset-6 models import; whether each node's opset is implemented is the
  // registry's call, per operator.
  auto graph = ImportModelFile(kTestData + "/pytorch-converted/test_Conv2d/model.onnx");
  EXPECT_EQ(graph->opset_version, 6);
  ir::Graph g;
  g.opset_version = 11;  // Einsum exists from opset 12.
  ir::Value* a = g.AddValue("a");
  ir::Node* einsum = g.AddNode("Einsum", "old_einsum", {a}, {g.AddValue("b")});
  std::string msg = ErrorOf([&] { OpRegistry::Global().Lookup(*einsum); });
  EXPECT_CONTAINS(msg, "opset 11");
  EXPECT_CONTAINS(msg, "old_einsum");
}

TEST(ImporterTest, LoadsSuiteTensorFile) {
  SKIP_WITHOUT_TEST_DATA();
  std::string name;
  Tensor x = LoadTensorProtoFile(kTestData + "/node/test_add/test_data_set_0/input_0.pb", &name);
  EXPECT_EQ(name, "x");
  EXPECT_EQ(x.TypeString(), "float32[3,4,5]");
  // Cross-check the first value against the raw little-endian bytes of the file.
  std::string bytes = ReadFile(kTestData + "/node/test_add/test_data_set_0/input_0.pb");
  float first = x.data<float>()[0];
  EXPECT_NE(bytes.find(std::string(reinterpret_cast<const char*>(&first), 4)), std::string::npos);
}

// ---- Files that are not models ----

TEST(ImporterTest, MissingFileIsAnError) {
  std::string msg = ErrorOf([] { ImportModelFile("/nonexistent/kiln/model.onnx"); });
  EXPECT_CONTAINS(msg, "/nonexistent/kiln/model.onnx");
  EXPECT_CONTAINS(msg, "cannot open");
}

TEST(ImporterTest, DirectoryIsAnError) {
  TempDir dir;
  std::string msg = ErrorOf([&] { ImportModelFile(dir.path().string()); });
  EXPECT_CONTAINS(msg, "not a regular file");
}

TEST(ImporterTest, GarbageBytesAreNotAModel) {
  TempDir dir;
  WriteFile(dir.file("garbage.onnx"), "\xff\xff\xff\xff this is not a protobuf \x01\x02");
  std::string msg = ErrorOf([&] { ImportModelFile(dir.file("garbage.onnx")); });
  EXPECT_CONTAINS(msg, "not a valid ONNX model");
  EXPECT_CONTAINS(msg, "garbage.onnx");
  msg = ErrorOf([] { ImportModelBytes("\x0a\xff\xff", "", "bytes-source"); });
  EXPECT_CONTAINS(msg, "not a valid ONNX model");
  EXPECT_CONTAINS(msg, "bytes-source");
  // Valid protobuf, but not a model (no ir_version, no graph).
  msg = ErrorOf([] { ImportModelBytes("", "", "empty"); });
  EXPECT_CONTAINS(msg, "not a valid ONNX model");
}

TEST(ImporterTest, TruncatedFileIsNotAModel) {
  TempDir dir;
  onnx::ModelProto m = ReluModel();
  m.mutable_graph()->add_initializer()->CopyFrom(
      FloatTensorProto("w", {64}, std::vector<float>(64, 1.f)));
  std::string bytes = m.SerializeAsString();
  WriteFile(dir.file("cut.onnx"), bytes.substr(0, bytes.size() / 2));
  std::string msg = ErrorOf([&] { ImportModelFile(dir.file("cut.onnx")); });
  EXPECT_CONTAINS(msg, "not a valid ONNX model");
  EXPECT_CONTAINS(msg, "cut.onnx");
}

// ---- Model-level checks ----

TEST(ImporterTest, UnsupportedOpsetsAreRejected) {
  EXPECT_CONTAINS(ErrorOf([] { Import(ReluModel(0)); }), "opset 0 of the default ONNX domain");
  EXPECT_CONTAINS(ErrorOf([] { Import(ReluModel(99)); }), "opset 99");
  EXPECT_EQ(Import(ReluModel(7))->opset_version, 7);
  EXPECT_EQ(Import(ReluModel(21))->nodes()[0]->opset, 21);

  onnx::ModelProto no_default = ReluModel();
  no_default.mutable_opset_import(0)->set_domain("ai.onnx.ml");
  EXPECT_CONTAINS(ErrorOf([&] { Import(no_default); }), "no opset of the default ONNX domain");

  onnx::ModelProto old_ir = ReluModel();
  old_ir.set_ir_version(2);
  EXPECT_CONTAINS(ErrorOf([&] { Import(old_ir); }), "IR version 2");
}

TEST(ImporterTest, AiOnnxDomainIsTheDefaultDomain) {
  onnx::ModelProto m = ReluModel(13);
  m.mutable_opset_import(0)->set_domain("ai.onnx");
  m.mutable_graph()->mutable_node(0)->set_domain("ai.onnx");
  auto g = Import(m);
  EXPECT_EQ(g->opset_version, 13);
  EXPECT_EQ(g->nodes()[0]->domain, "");
}

TEST(ImporterTest, ForeignDomainNodesImportAndAreRejectedByTheRegistry) {
  onnx::ModelProto m = ReluModel();
  auto* ms = m.add_opset_import();
  ms->set_domain("com.microsoft");
  ms->set_version(1);
  EXPECT_EQ(Import(m)->nodes().size(), 1u);

  // Import keeps the node (so `kiln inspect` can list it as unsupported); the
  // registry refuses it by name and domain.
  AddNode(m, "FusedGemm", {"x"}, {"z"}, "fused")->set_domain("com.microsoft");
  auto graph = Import(m);
  const ir::Node* fused = nullptr;
  for (const auto& n : graph->nodes())
    if (n->name == "fused") fused = n.get();
  ASSERT_NE(fused, nullptr);
  EXPECT_EQ(fused->domain, "com.microsoft");
  EXPECT_EQ(fused->opset, 1);
  std::string msg = ErrorOf([&] { OpRegistry::Global().Lookup(*fused); });
  EXPECT_CONTAINS(msg, "com.microsoft");
  EXPECT_CONTAINS(msg, "'fused'");
}

// ---- Graph structure ----

TEST(ImporterTest, InitializerListedAsInputIsAConstantNotAnInput) {
  onnx::ModelProto m = NewModel(9);
  AddInput(m, "x");
  AddInput(m, "w");  // Older exporters list initializers as inputs too.
  AddOutput(m, "y");
  *m.mutable_graph()->add_initializer() = FloatTensorProto("w", {2}, {1.5f, -2.f});
  AddNode(m, "Add", {"x", "w"}, {"y"}, "add");
  auto g = Import(m);
  ASSERT_EQ(g->inputs().size(), 1u);
  EXPECT_EQ(g->inputs()[0]->name, "x");
  const ir::Value* w = g->FindValue("w");
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(w->is_constant());
  EXPECT_FALSE(w->is_graph_input);
  EXPECT_EQ(w->constant.ToFloatVector(), (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(g->nodes()[0]->inputs[1], w);
}

TEST(ImporterTest, ConstantNodeVariantsBecomeConstants) {
  onnx::ModelProto m = NewModel(13);
  AddOutput(m, "t");
  AddOutput(m, "f");
  AddOutput(m, "fs");
  AddOutput(m, "i");
  AddOutput(m, "is");
  auto* a = AddNode(m, "Constant", {}, {"t"}, "c_t")->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  *a->mutable_t() = FloatTensorProto("", {2, 2}, {1, 2, 3, 4}, /*raw=*/false);
  a = AddNode(m, "Constant", {}, {"f"})->add_attribute();
  a->set_name("value_float");
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(2.5f);
  a = AddNode(m, "Constant", {}, {"fs"})->add_attribute();
  a->set_name("value_floats");
  a->set_type(onnx::AttributeProto::FLOATS);
  a->add_floats(1.f);
  a->add_floats(-1.f);
  a = AddNode(m, "Constant", {}, {"i"})->add_attribute();
  a->set_name("value_int");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(-7);
  a = AddNode(m, "Constant", {}, {"is"})->add_attribute();
  a->set_name("value_ints");
  a->set_type(onnx::AttributeProto::INTS);
  a->add_ints(3);
  a->add_ints(4);
  a->add_ints(5);
  auto g = Import(m);
  EXPECT_TRUE(g->nodes().empty());
  ASSERT_EQ(g->outputs().size(), 5u);
  EXPECT_EQ(g->outputs()[0]->constant.TypeString(), "float32[2,2]");
  EXPECT_EQ(g->outputs()[0]->constant.ToFloatVector(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(g->outputs()[1]->constant.TypeString(), "float32[]");
  EXPECT_EQ(g->outputs()[1]->constant.data<float>()[0], 2.5f);
  EXPECT_EQ(g->outputs()[2]->constant.TypeString(), "float32[2]");
  EXPECT_EQ(g->outputs()[2]->constant.ToFloatVector(), (std::vector<float>{1.f, -1.f}));
  EXPECT_EQ(g->outputs()[3]->constant.TypeString(), "int64[]");
  EXPECT_EQ(g->outputs()[3]->constant.data<int64_t>()[0], -7);
  EXPECT_EQ(g->outputs()[4]->constant.TypeString(), "int64[3]");
  EXPECT_EQ(g->outputs()[4]->constant.ToInt64Vector(), (std::vector<int64_t>{3, 4, 5}));
}

TEST(ImporterTest, StringAndSparseConstantsAreRejected) {
  onnx::ModelProto m = NewModel(13);
  AddOutput(m, "s");
  auto* a = AddNode(m, "Constant", {}, {"s"}, "str_const")->add_attribute();
  a->set_name("value_string");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("hello");
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "string constants are not supported");
  EXPECT_CONTAINS(msg, "str_const");

  a->Clear();
  a->set_name("sparse_value");
  a->set_type(onnx::AttributeProto::SPARSE_TENSOR);
  a->mutable_sparse_tensor()->add_dims(4);
  msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "sparse");
  EXPECT_CONTAINS(msg, "str_const");
}

TEST(ImporterTest, AllAttributeTypesConvert) {
  onnx::ModelProto m = ReluModel();
  auto* node = m.mutable_graph()->mutable_node(0);
  auto add = [&](const std::string& name, onnx::AttributeProto::AttributeType type) {
    auto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(type);
    return a;
  };
  add("i", onnx::AttributeProto::INT)->set_i(42);
  add("f", onnx::AttributeProto::FLOAT)->set_f(0.25f);
  add("s", onnx::AttributeProto::STRING)->set_s("NOTSET");
  *add("t", onnx::AttributeProto::TENSOR)->mutable_t() = FloatTensorProto("tt", {1}, {9.f});
  auto* ints = add("ints", onnx::AttributeProto::INTS);
  ints->add_ints(1);
  ints->add_ints(-2);
  auto* floats = add("floats", onnx::AttributeProto::FLOATS);
  floats->add_floats(0.5f);
  auto* strings = add("strings", onnx::AttributeProto::STRINGS);
  strings->add_strings("a");
  strings->add_strings("bc");
  // IR < 3 files leave `type` unset; the value field decides.
  auto* untyped = node->add_attribute();
  untyped->set_name("untyped");
  untyped->set_i(5);
  auto g = Import(m);
  const ir::Attributes& attrs = g->nodes()[0]->attrs;
  EXPECT_EQ(attrs.GetInt("i"), 42);
  EXPECT_EQ(attrs.GetFloat("f"), 0.25f);
  EXPECT_EQ(attrs.GetString("s"), "NOTSET");
  EXPECT_EQ(attrs.GetTensor("t").ToFloatVector(), (std::vector<float>{9.f}));
  EXPECT_EQ(attrs.GetInts("ints"), (std::vector<int64_t>{1, -2}));
  EXPECT_EQ(attrs.GetFloats("floats"), (std::vector<float>{0.5f}));
  EXPECT_EQ(attrs.GetStrings("strings"), (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(attrs.GetInt("untyped"), 5);

  auto* dup = node->add_attribute();
  dup->CopyFrom(node->attribute(0));
  EXPECT_CONTAINS(ErrorOf([&] { Import(m); }), "attribute 'i' twice");
}

TEST(ImporterTest, GraphAttributeIsRejected) {
  onnx::ModelProto m = ReluModel();
  auto* a = m.mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name("body");
  a->set_type(onnx::AttributeProto::GRAPH);
  a->mutable_g()->set_name("body");
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "subgraphs (If/Loop/Scan) are not supported");
  EXPECT_CONTAINS(msg, "'relu'");
  EXPECT_CONTAINS(msg, "'body'");
}

TEST(ImporterTest, UndefinedInputNamesTheNodeAndValue) {
  onnx::ModelProto m = ReluModel();
  AddNode(m, "Add", {"y", "ghost"}, {"z"}, "adder");
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "'adder'");
  EXPECT_CONTAINS(msg, "'ghost'");
  EXPECT_CONTAINS(msg, "not defined");
}

TEST(ImporterTest, UndefinedGraphOutputIsAnError) {
  onnx::ModelProto m = ReluModel();
  AddOutput(m, "nowhere");
  EXPECT_CONTAINS(ErrorOf([&] { Import(m); }), "graph output 'nowhere' is never produced");
}

TEST(ImporterTest, DuplicateDefinitionsAreErrors) {
  onnx::ModelProto m = ReluModel();
  AddNode(m, "Relu", {"x"}, {"y"}, "again");
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "'again'");
  EXPECT_CONTAINS(msg, "'y' is already defined");

  onnx::ModelProto shadow = ReluModel();
  AddNode(shadow, "Relu", {"y"}, {"x"}, "shadow");
  EXPECT_CONTAINS(ErrorOf([&] { Import(shadow); }), "graph input");
}

TEST(ImporterTest, OutOfOrderNodesAreSorted) {
  onnx::ModelProto m = NewModel();
  AddInput(m, "x");
  AddOutput(m, "z");
  AddNode(m, "Neg", {"y"}, {"z"}, "second");
  AddNode(m, "Relu", {"x"}, {"y"}, "first");
  auto g = Import(m);
  ASSERT_EQ(g->nodes().size(), 2u);
  EXPECT_EQ(g->nodes()[0]->name, "first");
  EXPECT_EQ(g->nodes()[1]->name, "second");

  onnx::ModelProto cycle = NewModel();
  AddInput(cycle, "x");
  AddOutput(cycle, "b");
  AddNode(cycle, "Add", {"x", "b"}, {"a"}, "n1");
  AddNode(cycle, "Relu", {"a"}, {"b"}, "n2");
  EXPECT_CONTAINS(ErrorOf([&] { Import(cycle); }), "cycle");
}

TEST(ImporterTest, NodesGetUniqueNames) {
  onnx::ModelProto m = NewModel();
  AddInput(m, "x");
  AddOutput(m, "d");
  AddNode(m, "Relu", {"x"}, {"a"}, "Relu_1");  // Collides with the generated name below.
  AddNode(m, "Relu", {"a"}, {"b"});            // Unnamed, index 1.
  AddNode(m, "Neg", {"b"}, {"c"}, "dup");
  AddNode(m, "Neg", {"c"}, {"d"}, "dup");      // Repeated name.
  auto g = Import(m);
  ASSERT_EQ(g->nodes().size(), 4u);
  EXPECT_EQ(g->nodes()[0]->name, "Relu_1");
  EXPECT_EQ(g->nodes()[1]->name, "Relu_1_1");
  EXPECT_EQ(g->nodes()[2]->name, "dup");
  EXPECT_EQ(g->nodes()[3]->name, "dup_1");
}

TEST(ImporterTest, DimsAndTypesFromValueInfo) {
  onnx::ModelProto m = NewModel();
  auto* x = m.mutable_graph()->add_input();
  x->set_name("x");
  auto* tensor = x->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT16);
  tensor->mutable_shape()->add_dim()->set_dim_param("batch");
  tensor->mutable_shape()->add_dim();  // Neither value nor param: unknown.
  tensor->mutable_shape()->add_dim()->set_dim_value(8);
  auto* r = m.mutable_graph()->add_input();  // No shape: unknown rank.
  r->set_name("r");
  r->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  AddTensorValueInfo(m.mutable_graph()->add_value_info(), "mid", onnx::TensorProto::FLOAT16,
                     {4, 8});
  AddOutput(m, "y", {}, onnx::TensorProto::FLOAT16);
  m.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  AddNode(m, "Relu", {"x"}, {"mid"});
  AddNode(m, "Relu", {"mid"}, {"y"});
  auto g = Import(m);
  const ir::TensorType& xt = g->inputs()[0]->type;
  EXPECT_EQ(xt.dtype, DType::kFloat16);
  ASSERT_TRUE(xt.has_rank());
  ASSERT_EQ(xt.rank(), 3);
  EXPECT_EQ((*xt.shape)[0], ir::Dim::Symbol("batch"));
  EXPECT_FALSE((*xt.shape)[1].is_known());
  EXPECT_TRUE((*xt.shape)[1].symbol.empty());
  EXPECT_EQ((*xt.shape)[2], ir::Dim::Known(8));
  EXPECT_EQ(g->inputs()[1]->type.dtype, DType::kInt64);
  EXPECT_FALSE(g->inputs()[1]->type.has_rank());
  EXPECT_EQ(g->FindValue("mid")->type.ToString(), "float16[4,8]");
  EXPECT_EQ(g->outputs()[0]->type.dtype, DType::kFloat16);
  EXPECT_FALSE(g->outputs()[0]->type.has_rank());
}

TEST(ImporterTest, UnsupportedInputTypesAreRejected) {
  onnx::ModelProto m = ReluModel();
  AddInput(m, "names", {2}, onnx::TensorProto::STRING);
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "graph input 'names'");
  EXPECT_CONTAINS(msg, "STRING");

  onnx::ModelProto seq = ReluModel();
  auto* s = seq.mutable_graph()->add_input();
  s->set_name("seq");
  s->mutable_type()->mutable_sequence_type()->mutable_elem_type()->mutable_tensor_type()
      ->set_elem_type(onnx::TensorProto::FLOAT);
  msg = ErrorOf([&] { Import(seq); });
  EXPECT_CONTAINS(msg, "graph input 'seq'");
  EXPECT_CONTAINS(msg, "sequence");
}

// ---- Tensors ----

TEST(ImporterTest, TypedDataFieldsConvert) {
  onnx::TensorProto t;
  t.set_name("h");
  t.set_data_type(onnx::TensorProto::FLOAT16);
  t.add_dims(3);
  for (float v : {1.f, -2.f, 0.5f}) t.add_int32_data(FloatToHalf(v));
  EXPECT_EQ(TensorFromProto(t, "").ToFloatVector(), (std::vector<float>{1.f, -2.f, 0.5f}));

  t.set_data_type(onnx::TensorProto::BFLOAT16);
  t.clear_int32_data();
  for (float v : {3.f, -0.25f, 8.f}) t.add_int32_data(FloatToBFloat16(v));
  EXPECT_EQ(TensorFromProto(t, "").ToFloatVector(), (std::vector<float>{3.f, -0.25f, 8.f}));

  t.set_data_type(onnx::TensorProto::BOOL);
  t.clear_int32_data();
  for (int v : {0, 1, 5}) t.add_int32_data(v);
  Tensor b = TensorFromProto(t, "");
  EXPECT_EQ(b.dtype(), DType::kBool);
  EXPECT_EQ((std::vector<uint8_t>(b.data<uint8_t>(), b.data<uint8_t>() + 3)),
            (std::vector<uint8_t>{0, 1, 1}));

  t.set_data_type(onnx::TensorProto::INT8);
  t.clear_int32_data();
  for (int v : {-128, 0, 127}) t.add_int32_data(v);
  EXPECT_EQ(TensorFromProto(t, "").ToInt64Vector(), (std::vector<int64_t>{-128, 0, 127}));

  t.set_data_type(onnx::TensorProto::UINT16);
  t.clear_int32_data();
  for (int v : {0, 40000, 65535}) t.add_int32_data(v);
  EXPECT_EQ(TensorFromProto(t, "").ToInt64Vector(), (std::vector<int64_t>{0, 40000, 65535}));

  t.clear_int32_data();
  t.set_data_type(onnx::TensorProto::UINT32);
  for (uint64_t v : {0ull, 4000000000ull, 7ull}) t.add_uint64_data(v);
  EXPECT_EQ(TensorFromProto(t, "").ToInt64Vector(), (std::vector<int64_t>{0, 4000000000, 7}));

  t.set_data_type(onnx::TensorProto::DOUBLE);
  for (double v : {0.1, -1e300, 2.0}) t.add_double_data(v);
  Tensor d = TensorFromProto(t, "");
  EXPECT_EQ(d.dtype(), DType::kFloat64);
  EXPECT_EQ(d.data<double>()[1], -1e300);

  t.set_data_type(onnx::TensorProto::INT64);
  for (int64_t v : {int64_t{-1}, int64_t{1} << 40, int64_t{3}}) t.add_int64_data(v);
  EXPECT_EQ(TensorFromProto(t, "").ToInt64Vector(),
            (std::vector<int64_t>{-1, int64_t{1} << 40, 3}));
}

TEST(ImporterTest, RawDataIsLittleEndianAndBoolsAreNormalised) {
  onnx::TensorProto t;
  t.set_data_type(onnx::TensorProto::INT32);
  t.add_dims(2);
  const unsigned char bytes[] = {0x01, 0x02, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff};
  t.set_raw_data(bytes, sizeof(bytes));
  EXPECT_EQ(TensorFromProto(t, "").ToInt64Vector(), (std::vector<int64_t>{0x0201, -1}));

  t.set_data_type(onnx::TensorProto::BOOL);
  t.clear_dims();
  t.add_dims(3);
  t.set_raw_data(std::string("\x00\x01\x07", 3));
  Tensor b = TensorFromProto(t, "");
  EXPECT_EQ((std::vector<uint8_t>(b.data<uint8_t>(), b.data<uint8_t>() + 3)),
            (std::vector<uint8_t>{0, 1, 1}));
}

TEST(ImporterTest, WrongElementCountNamesTheTensor) {
  onnx::ModelProto m = ReluModel();
  *m.mutable_graph()->add_initializer() = FloatTensorProto("weights", {2, 2}, {1, 2, 3}, false);
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "initializer 'weights'");
  EXPECT_CONTAINS(msg, "3 values");

  onnx::ModelProto raw = ReluModel();
  *raw.mutable_graph()->add_initializer() = FloatTensorProto("raww", {2, 2}, {1, 2, 3});
  msg = ErrorOf([&] { Import(raw); });
  EXPECT_CONTAINS(msg, "initializer 'raww'");
  EXPECT_CONTAINS(msg, "12 bytes of raw_data");

  onnx::TensorProto huge = FloatTensorProto("huge", {int64_t{1} << 40, int64_t{1} << 40}, {});
  EXPECT_CONTAINS(ErrorOf([&] { TensorFromProto(huge, ""); }), "'huge'");
  onnx::TensorProto negative = FloatTensorProto("neg", {-1}, {});
  EXPECT_CONTAINS(ErrorOf([&] { TensorFromProto(negative, ""); }), "negative dimension");
}

TEST(ImporterTest, StringTensorsAreRejected) {
  onnx::TensorProto t;
  t.set_name("words");
  t.set_data_type(onnx::TensorProto::STRING);
  t.add_dims(1);
  t.add_string_data("hi");
  std::string msg = ErrorOf([&] { TensorFromProto(t, ""); });
  EXPECT_CONTAINS(msg, "'words'");
  EXPECT_CONTAINS(msg, "string tensor");
}

TEST(ImporterTest, TensorFileRoundTrip) {
  TempDir dir;
  Tensor f = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  SaveTensorProtoFile(f, "f", dir.file("f.pb"));
  std::string name;
  Tensor back = LoadTensorProtoFile(dir.file("f.pb"), &name);
  EXPECT_EQ(name, "f");
  EXPECT_EQ(back.TypeString(), "float32[2,3]");
  EXPECT_EQ(back.ToFloatVector(), f.ToFloatVector());

  Tensor h = f.CastTo(DType::kFloat16);
  SaveTensorProtoFile(h, "", dir.file("h.pb"));
  Tensor hb = LoadTensorProtoFile(dir.file("h.pb"));
  EXPECT_EQ(hb.dtype(), DType::kFloat16);
  EXPECT_EQ(hb.ToFloatVector(), f.ToFloatVector());

  Tensor scalar = Tensor::FromInt64s({}, {-9});
  SaveTensorProtoFile(scalar, "s", dir.file("s.pb"));
  EXPECT_EQ(LoadTensorProtoFile(dir.file("s.pb")).TypeString(), "int64[]");

  EXPECT_CONTAINS(ErrorOf([&] { LoadTensorProtoFile(dir.file("missing.pb")); }), "missing.pb");
  EXPECT_CONTAINS(ErrorOf([&] { SaveTensorProtoFile(f, "f", "/nonexistent/dir/f.pb"); }),
                  "/nonexistent/dir/f.pb");
}

// ---- External data ----

// A model y = x + w where w (float32[4]) lives in `location` at `offset`.
onnx::ModelProto ExternalWeightModel(const std::string& location, int64_t offset,
                                     std::optional<int64_t> length = 16) {
  onnx::ModelProto m = NewModel();
  AddInput(m, "x", {4});
  AddOutput(m, "y", {4});
  auto* w = m.mutable_graph()->add_initializer();
  w->set_name("ext_w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto entry = [&](const std::string& key, const std::string& value) {
    auto* e = w->add_external_data();
    e->set_key(key);
    e->set_value(value);
  };
  entry("location", location);
  entry("offset", std::to_string(offset));
  if (length) entry("length", std::to_string(*length));
  AddNode(m, "Add", {"x", "ext_w"}, {"y"}, "add");
  return m;
}

// Writes `prefix_bytes` of padding then four floats.
void WriteWeights(const std::string& path, size_t prefix_bytes, const std::vector<float>& values) {
  std::string bytes(prefix_bytes, '\x5a');
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  WriteFile(path, bytes);
}

TEST(ImporterTest, ExternalDataIsReadRelativeToTheModel) {
  TempDir dir;
  fs::create_directories(dir.path() / "weights");
  WriteWeights(dir.file("weights/data.bin"), 64, {1.f, 2.f, 3.f, 4.f});
  WriteFile(dir.file("model.onnx"),
            ExternalWeightModel("weights/data.bin", 64).SerializeAsString());
  auto g = ImportModelFile(dir.file("model.onnx"));
  const ir::Value* w = g->FindValue("ext_w");
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->is_constant());
  EXPECT_EQ(w->constant.ToFloatVector(), (std::vector<float>{1.f, 2.f, 3.f, 4.f}));

  // Unaligned offset (copied) and no explicit length.
  WriteWeights(dir.file("odd.bin"), 3, {5.f, 6.f, 7.f, 8.f});
  WriteFile(dir.file("odd.onnx"),
            ExternalWeightModel("odd.bin", 3, std::nullopt).SerializeAsString());
  auto odd = ImportModelFile(dir.file("odd.onnx"));
  EXPECT_EQ(odd->FindValue("ext_w")->constant.ToFloatVector(),
            (std::vector<float>{5.f, 6.f, 7.f, 8.f}));

  // The tensor keeps its mapping alive after the graph and file are gone.
  Tensor kept = g->FindValue("ext_w")->constant;
  g.reset();
  fs::remove(dir.file("weights/data.bin"));
  EXPECT_EQ(kept.ToFloatVector(), (std::vector<float>{1.f, 2.f, 3.f, 4.f}));
}

TEST(ImporterTest, BadExternalDataIsRejectedNamingTensorAndFile) {
  TempDir dir;
  WriteWeights(dir.file("data.bin"), 0, {1.f, 2.f, 3.f, 4.f});
  auto error_for = [&](const onnx::ModelProto& m) {
    WriteFile(dir.file("model.onnx"), m.SerializeAsString());
    return ErrorOf([&] { ImportModelFile(dir.file("model.onnx")); });
  };
  std::string msg = error_for(ExternalWeightModel("../outside.bin", 0));
  EXPECT_CONTAINS(msg, "'ext_w'");
  EXPECT_CONTAINS(msg, "../outside.bin");
  EXPECT_CONTAINS(msg, "leaves the model's folder");

  msg = error_for(ExternalWeightModel("/etc/passwd", 0));
  EXPECT_CONTAINS(msg, "'ext_w'");
  EXPECT_CONTAINS(msg, "absolute path");

  msg = error_for(ExternalWeightModel("absent.bin", 0));
  EXPECT_CONTAINS(msg, "'ext_w'");
  EXPECT_CONTAINS(msg, "absent.bin");

  msg = error_for(ExternalWeightModel("data.bin", 8));  // 16 bytes at 8 in a 16-byte file.
  EXPECT_CONTAINS(msg, "'ext_w'");
  EXPECT_CONTAINS(msg, "data.bin");
  EXPECT_CONTAINS(msg, "only 16 bytes");

  msg = error_for(ExternalWeightModel("data.bin", 100));
  EXPECT_CONTAINS(msg, "past the end");

  msg = error_for(ExternalWeightModel("data.bin", 0, 12));
  EXPECT_CONTAINS(msg, "length 12");

  onnx::ModelProto bad_offset = ExternalWeightModel("data.bin", 0);
  bad_offset.mutable_graph()->mutable_initializer(0)->mutable_external_data(1)->set_value("-4");
  EXPECT_CONTAINS(error_for(bad_offset), "offset");

  // From memory there is no folder to resolve the file in.
  msg = ErrorOf([] { Import(ExternalWeightModel("data.bin", 0)); });
  EXPECT_CONTAINS(msg, "'ext_w'");
  EXPECT_CONTAINS(msg, "not loaded from a file");
  // ...unless the caller names one.
  auto g = Import(ExternalWeightModel("data.bin", 0), dir.path().string());
  EXPECT_EQ(g->FindValue("ext_w")->constant.ToFloatVector(),
            (std::vector<float>{1.f, 2.f, 3.f, 4.f}));
}

TEST(ImporterTest, SparseInitializerIsRejected) {
  onnx::ModelProto m = ReluModel();
  auto* sparse = m.mutable_graph()->add_sparse_initializer();
  sparse->mutable_values()->set_name("sp");
  sparse->add_dims(4);
  std::string msg = ErrorOf([&] { Import(m); });
  EXPECT_CONTAINS(msg, "sparse initializer 'sp'");
}

}  // namespace
}  // namespace kiln::onnx_import
