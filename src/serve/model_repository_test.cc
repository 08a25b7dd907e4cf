// Triton's config.pbtxt in the model repository: parsed like config.json,
// and served by a real ServerCore.
#include "serve/model_repository.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "kiln/error.h"
#include "onnx.pb.h"

namespace kiln::serve {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTritonPbtxt = R"pb(
# As Triton's documentation writes them.
name: "relu"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 1 } }
input [
  {
    name: "X"
    data_type: TYPE_FP32
    format: FORMAT_NONE
    dims: [ 4 ]
  }
]
output [
  {
    name: "Y"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 300
  default_queue_policy { max_queue_size: 7 default_timeout_microseconds: 5000 }
}
instance_group [ { count: 2, kind: KIND_CPU } ]
parameters { key: "precision" value { string_value: "fp16" } }
optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" } ] } }
model_warmup [ { name: "w" batch_size: 1 } ]
)pb";

TEST(ConfigPbtxtTest, MeansTheSameAsConfigJson) {
  const ModelConfig p = ParseModelConfigPbtxt(kTritonPbtxt, "relu");
  const ModelConfig j = ParseModelConfig(R"({"name": "relu", "platform": "onnxruntime_onnx",
      "max_batch_size": 8,
      "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
      "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}],
      "dynamic_batching": {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 300,
          "default_queue_policy": {"max_queue_size": 7, "default_timeout_microseconds": 5000}},
      "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
      "parameters": {"precision": {"string_value": "fp16"}}})",
                                           "relu");
  for (const ModelConfig* c : {&p, &j}) {
    EXPECT_EQ(c->max_batch_size, 8);
    ASSERT_EQ(c->inputs.size(), 1u);
    EXPECT_EQ(c->inputs[0].name, "X");
    EXPECT_EQ(c->inputs[0].dtype, DType::kFloat32);
    EXPECT_EQ(c->inputs[0].dims, (std::vector<int64_t>{4}));
    ASSERT_EQ(c->outputs.size(), 1u);
    EXPECT_EQ(c->outputs[0].name, "Y");
    EXPECT_TRUE(c->dynamic_batching);
    EXPECT_EQ(c->preferred_batch_sizes, (std::vector<int>{2, 4}));
    EXPECT_EQ(c->max_queue_delay_us, 300);
    EXPECT_EQ(c->max_queue_size, 7);
    EXPECT_EQ(c->default_timeout_us, 5000);
    EXPECT_EQ(c->instance_count, 2);
    EXPECT_EQ(c->instance_kind, "cpu");
    EXPECT_EQ(c->precision, "fp16");
  }
  // An empty dynamic_batching block still turns batching on; defaults elsewhere.
  const ModelConfig minimal =
      ParseModelConfigPbtxt("max_batch_size: 4\ndynamic_batching { }\n", "m");
  EXPECT_TRUE(minimal.dynamic_batching);
  EXPECT_EQ(minimal.instance_count, 1);
  EXPECT_EQ(minimal.instance_kind, "auto");
  EXPECT_FALSE(ParseModelConfigPbtxt("max_batch_size: 4\n", "m").dynamic_batching);
}

TEST(ConfigPbtxtTest, ErrorsNameTheModelLineAndField) {
  auto error = [](const std::string& text) {
    try {
      ParseModelConfigPbtxt(text, "m");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string e = error("max_batch_size: 4\nsequence_batching { }\n");
  EXPECT_NE(e.find("config.pbtxt of model 'm'"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("'sequence_batching' is not supported"), std::string::npos) << e;
  e = error("max_batch_size: [oops\n");
  EXPECT_NE(e.find("not valid protobuf text"), std::string::npos) << e;
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  e = error("name: \"other\"\n");
  EXPECT_NE(e.find("does not match the model folder"), std::string::npos) << e;
  e = error("input [ { name: \"X\" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]");
  EXPECT_NE(e.find("'reshape' is not supported"), std::string::npos) << e;
  e = error("instance_group [ { kind: KIND_MODEL } ]");
  EXPECT_NE(e.find("KIND_MODEL"), std::string::npos) << e;
}

// DIR/<name>/{config.pbtxt,1/model.onnx}: Y = Relu(X), X float [batch, 4].
void WriteReluModel(const fs::path& dir) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("relu");
  for (auto [info, name] : {std::pair{g->add_input(), "X"}, {g->add_output(), "Y"}}) {
    info->set_name(name);
    auto* t = info->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    t->mutable_shape()->add_dim()->set_dim_value(4);
  }
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->add_input("X");
  n->add_output("Y");
  fs::create_directories(dir / "1");
  std::ofstream(dir / "1" / "model.onnx", std::ios::binary) << m.SerializeAsString();
}

TEST(ConfigPbtxtTest, ServerCoreServesAPbtxtModel) {
  const fs::path repo =
      fs::temp_directory_path() / ("kiln_pbtxt_test_" + std::to_string(getpid()));
  fs::remove_all(repo);
  WriteReluModel(repo / "relu");
  std::string text = kTritonPbtxt;
  text.replace(text.find("\"fp16\""), 6, "\"fp32\"");
  std::ofstream(repo / "relu" / "config.pbtxt") << text;
  WriteReluModel(repo / "both");
  std::ofstream(repo / "both" / "config.pbtxt") << "max_batch_size: 2\n";
  std::ofstream(repo / "both" / "config.json") << R"({"max_batch_size": 2})";
  {
    ServerOptions options;
    options.model_repository = repo.string();
    ServerCore core(options);
    ASSERT_TRUE(core.ModelReady("relu"));
    const ModelConfig config = *core.Config("relu");
    EXPECT_EQ(config.instance_count, 2);
    EXPECT_EQ(config.preferred_batch_sizes, (std::vector<int>{2, 4}));
    InferRequest request;
    request.model = "relu";
    request.inputs.emplace_back("X", Tensor::FromFloats({2, 4}, {-1, 2, -3, 4, 5, -6, 7, -8}));
    const InferResponse response = core.Infer(request);
    ASSERT_TRUE(response.status.ok()) << response.status.message;
    EXPECT_EQ(response.outputs.at(0).second.ToFloatVector(),
              (std::vector<float>{0, 2, 0, 4, 5, 0, 7, 0}));

    EXPECT_FALSE(core.ModelReady("both"));
    bool reported = false;
    for (const auto& e : core.Index()) {
      if (e.name != "both") continue;
      reported = true;
      EXPECT_EQ(e.state, "UNAVAILABLE");
      EXPECT_NE(e.reason.find("both config.json and config.pbtxt"), std::string::npos) << e.reason;
    }
    EXPECT_TRUE(reported);
  }
  fs::remove_all(repo);
}

}  // namespace
}  // namespace kiln::serve
