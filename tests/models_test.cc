// End-to-end checks on real models exported by scripts/export_models.py:
// kiln::Model::Load (import + optimize) then the CPU backend, compared with
// PyTorch's float32 outputs. The models are not in the repository; without
// them each test skips with the command that makes them.
//
//   /usr/bin/python3 scripts/export_models.py --out models
//   KILN_MODELS_DIR=/elsewhere ./kiln_tests --gtest_filter='ModelsTest*'

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ir/graph.h"
#include "kiln/kiln.h"
#include "onnx/importer.h"
#include "test_util.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

constexpr double kMaxRelativeError = 1e-4;  // max|a-b| / max|b|, per output.

fs::path ModelsDir() {
  const char* env = std::getenv("KILN_MODELS_DIR");
  return env && *env ? fs::path(env) : fs::path(KILN_SOURCE_DIR) / "models";
}

std::vector<fs::path> DataSets(const fs::path& dir) {
  std::vector<fs::path> sets;
  if (!fs::is_directory(dir)) return sets;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory() && entry.path().filename().string().rfind("test_data_set_", 0) == 0)
      sets.push_back(entry.path());
  }
  std::sort(sets.begin(), sets.end());
  return sets;
}

std::vector<fs::path> NumberedFiles(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (int i = 0; fs::exists(dir / (prefix + std::to_string(i) + ".pb")); ++i)
    files.push_back(dir / (prefix + std::to_string(i) + ".pb"));
  return files;
}

// Index of the largest element of each row of a [rows, cols] float tensor.
std::vector<int64_t> ArgmaxPerRow(const Tensor& logits) {
  std::vector<int64_t> result;
  if (logits.rank() != 2) return result;
  std::vector<float> values = logits.ToFloatVector();
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = values.data() + r * cols;
    result.push_back(std::max_element(row, row + cols) - row);
  }
  return result;
}

class ModelsTest : public ::testing::Test {
 protected:
  // Loads the model and checks, in order: dynamic batch dims, BatchNorm folded
  // (CNNs), and every test_data_set_* against PyTorch.
  void CheckModel(const std::string& name, bool is_cnn) {
    const fs::path model_path = ModelsDir() / (name + ".onnx");
    const fs::path data_dir = ModelsDir() / name;
    if (!fs::exists(model_path) || DataSets(data_dir).empty()) {
      GTEST_SKIP() << model_path.string() << " or its test data is missing; export it with\n"
                   << "  /usr/bin/python3 " << KILN_SOURCE_DIR << "/scripts/export_models.py --out "
                   << ModelsDir().string() << " --models " << name
                   << "\n(or point KILN_MODELS_DIR at a folder holding the exported models)";
    }
    auto start = std::chrono::steady_clock::now();
    std::unique_ptr<Model> model = Model::Load(model_path.string());
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::cout << "  load " << name << ": " << took.count() << " s, "
              << model->graph().nodes().size() << " nodes after optimization\n";

    CheckDynamicBatch(*model);
    if (is_cnn) {
      // Exported with BatchNormalization kept: optimization must fold them all into the Convs.
      int batch_norms = 0;
      for (const auto& node : model->graph().nodes())
        batch_norms += node->op_type == "BatchNormalization";
      EXPECT_EQ(batch_norms, 0) << "BatchNormalization nodes left after Model::Load";
    }
    for (const fs::path& set_dir : DataSets(data_dir)) {
      SCOPED_TRACE(set_dir.string());
      CheckDataSet(*model, set_dir, is_cnn);
    }
  }

  static void CheckDynamicBatch(const Model& model) {
    ASSERT_FALSE(model.inputs().empty());
    for (const TensorDesc& input : model.inputs()) {
      ASSERT_FALSE(input.dims.empty()) << input.name << " has no known rank";
      EXPECT_EQ(input.dims[0], -1) << input.name << " " << input.ShapeString();
      ASSERT_EQ(input.dim_names.size(), input.dims.size());
      EXPECT_EQ(input.dim_names[0], "batch") << input.name << " " << input.ShapeString();
    }
    for (const TensorDesc& output : model.outputs()) {
      ASSERT_FALSE(output.dims.empty()) << output.name << " has no known rank";
      EXPECT_EQ(output.dims[0], -1) << output.name << " " << output.ShapeString();
    }
  }

  static void CheckDataSet(const Model& model, const fs::path& set_dir, bool is_cnn) {
    std::vector<fs::path> input_files = NumberedFiles(set_dir, "input_");
    std::vector<fs::path> output_files = NumberedFiles(set_dir, "output_");
    ASSERT_EQ(input_files.size(), model.inputs().size());
    ASSERT_EQ(output_files.size(), model.outputs().size());

    std::map<std::string, Tensor> feeds;
    for (size_t i = 0; i < input_files.size(); ++i) {
      std::string proto_name;
      Tensor t = onnx_import::LoadTensorProtoFile(input_files[i].string(), &proto_name);
      EXPECT_EQ(proto_name, model.inputs()[i].name) << "input order differs from the export";
      feeds[model.inputs()[i].name] = t;
    }
    auto start = std::chrono::steady_clock::now();
    std::vector<Tensor> actual = model.RunCpu(feeds);
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    std::cout << "  run " << set_dir.parent_path().filename().string() << "/"
              << set_dir.filename().string() << ": " << took.count() << " s\n";
    ASSERT_EQ(actual.size(), output_files.size());

    for (size_t i = 0; i < output_files.size(); ++i) {
      const std::string& name = model.outputs()[i].name;
      Tensor expected = onnx_import::LoadTensorProtoFile(output_files[i].string());
      ASSERT_EQ(actual[i].dtype(), expected.dtype()) << name;
      ASSERT_EQ(actual[i].dims(), expected.dims()) << name;
      double error = testing::MaxRelativeError(actual[i], expected);
      std::cout << "    " << name << " " << expected.TypeString()
                << ": max|a-b|/max|b| = " << error << "\n";
      EXPECT_LE(error, kMaxRelativeError) << name;
      if (is_cnn && i == 0) {
        EXPECT_EQ(ArgmaxPerRow(actual[i]), ArgmaxPerRow(expected)) << "top-1 class differs";
      }
    }
  }
};

TEST_F(ModelsTest, Resnet18) { CheckModel("resnet18", /*is_cnn=*/true); }
TEST_F(ModelsTest, Resnet50) { CheckModel("resnet50", /*is_cnn=*/true); }
TEST_F(ModelsTest, MobilenetV2) { CheckModel("mobilenet_v2", /*is_cnn=*/true); }
TEST_F(ModelsTest, Bert) { CheckModel("bert", /*is_cnn=*/false); }

}  // namespace
}  // namespace kiln
