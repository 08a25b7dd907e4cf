#include "serve/backend.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "kiln/error.h"
#ifdef KILN_HAVE_CUDA
#include "cuda/device.h"
#include "kiln/engine.h"
#endif

namespace kiln::serve {
namespace {

// The CPU reference backend. Model::RunCpu creates an executor per call, so
// all instances share one Model.
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(std::shared_ptr<const Model> model) : model_(std::move(model)) {}

  std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                    int /*instance*/) override {
    std::vector<Tensor> outputs = model_->RunCpu(inputs);
    KILN_CHECK(outputs.size() == model_->outputs().size(), "the model returned ", outputs.size(),
               " outputs, expected ", model_->outputs().size());
    std::map<std::string, Tensor> named;
    for (size_t i = 0; i < outputs.size(); ++i) named[model_->outputs()[i].name] = outputs[i];
    return named;
  }
  std::string Kind() const override { return "cpu"; }

 private:
  std::shared_ptr<const Model> model_;
};

#ifdef KILN_HAVE_CUDA
// Engines have static shapes: one engine per batch size bucket (the preferred
// batch sizes and max_batch_size), all built at load. A batch runs on the
// smallest bucket that holds it, padded with zeros; outputs are cut back.
// Each instance has its own ExecutionContext per engine and is used by one
// worker thread only.
class GpuBackend : public Backend {
 public:
  GpuBackend(const ModelConfig& config, const std::string& path) : batched_(config.max_batch_size > 0) {
    std::set<int> sizes;
    if (batched_) {
      sizes.insert(config.preferred_batch_sizes.begin(), config.preferred_batch_sizes.end());
      sizes.insert(config.max_batch_size);
    } else {
      sizes.insert(0);
    }
    BuildConfig build;
    build.precision = ParsePrecision(config.precision);
    for (int size : sizes) {
      build.shapes.clear();
      for (const TensorIO& io : config.inputs) {
        std::vector<int64_t> dims;
        if (batched_) dims.push_back(size);
        for (int64_t d : io.dims) {
          KILN_CHECK(d >= 0, "GPU engines need concrete dims, but input '", io.name, "' has ",
                     DimsToString(io.dims), " in the config");
          dims.push_back(d);
        }
        build.shapes[io.name] = dims;
      }
      Bucket bucket;
      bucket.batch = size;
      bucket.engine = Engine::Build(path, build);
      buckets_.push_back(std::move(bucket));
    }
    for (Bucket& b : buckets_) {
      for (int i = 0; i < config.instance_count; ++i) b.contexts.push_back(b.engine->CreateContext());
    }
  }

  std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                    int instance) override {
    KILN_CHECK(!inputs.empty(), "no inputs");
    const int64_t n = batched_ ? inputs.begin()->second.dim(0) : 0;
    Bucket* bucket = nullptr;
    for (Bucket& b : buckets_) {
      if (b.batch >= n) {
        bucket = &b;
        break;
      }
    }
    KILN_CHECK(bucket, "batch size ", n, " is larger than every engine's batch size");
    std::map<std::string, Tensor> feeds;
    for (const auto& [name, t] : inputs) {
      if (!batched_ || bucket->batch == n) {
        feeds[name] = t;
        continue;
      }
      std::vector<int64_t> dims = t.dims();
      dims[0] = bucket->batch;
      Tensor padded(t.dtype(), dims);
      std::memset(padded.raw_data(), 0, padded.nbytes());
      std::memcpy(padded.raw_data(), t.raw_data(), t.nbytes());
      feeds[name] = padded;
    }
    ExecutionContext& context = *bucket->contexts.at(static_cast<size_t>(instance));
    std::vector<Tensor> outputs = context.Run(feeds);
    const auto& descs = bucket->engine->outputs();
    KILN_CHECK(outputs.size() == descs.size(), "the engine returned ", outputs.size(),
               " outputs, expected ", descs.size());
    std::map<std::string, Tensor> named;
    for (size_t i = 0; i < outputs.size(); ++i) {
      Tensor t = outputs[i];
      if (batched_ && bucket->batch != n) {
        KILN_CHECK(t.rank() >= 1 && t.dim(0) == bucket->batch, "engine output '", descs[i].name,
                   "' ", t.TypeString(), " does not have the batch dim ", bucket->batch);
        std::vector<int64_t> dims = t.dims();
        dims[0] = n;
        Tensor cut(t.dtype(), dims);
        std::memcpy(cut.raw_data(), t.raw_data(), cut.nbytes());
        t = cut;
      }
      named[descs[i].name] = t;
    }
    return named;
  }
  std::string Kind() const override { return "gpu"; }

 private:
  struct Bucket {
    int batch = 0;
    std::unique_ptr<Engine> engine;
    std::vector<std::unique_ptr<ExecutionContext>> contexts;  // One per instance.
  };
  bool batched_;
  std::vector<Bucket> buckets_;  // Ascending batch size.
};
#endif

}  // namespace

std::unique_ptr<Backend> CreateBackend(const ModelConfig& config, const std::string& model_path,
                                       std::shared_ptr<const Model> model, std::string* note) {
  if (config.instance_kind == "cpu") return std::make_unique<CpuBackend>(std::move(model));
#ifdef KILN_HAVE_CUDA
  std::string why;
  if (cuda::DeviceAvailable(&why)) {
    try {
      return std::make_unique<GpuBackend>(config, model_path);
    } catch (const Error& e) {
      if (config.instance_kind == "gpu") Fail("cannot build a GPU engine: ", e.what());
      if (note) *note = std::string("GPU engine build failed, using the CPU: ") + e.what();
      return std::make_unique<CpuBackend>(std::move(model));
    }
  }
  KILN_CHECK(config.instance_kind != "gpu", "instance_group kind KIND_GPU, but no GPU: ", why);
  if (note) *note = "no GPU (" + why + ")";
#else
  (void)model_path;
  KILN_CHECK(config.instance_kind != "gpu",
             "instance_group kind KIND_GPU, but this kiln was built without CUDA");
  if (note) *note = "kiln was built without CUDA";
#endif
  return std::make_unique<CpuBackend>(std::move(model));
}

}  // namespace kiln::serve
