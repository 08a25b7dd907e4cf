#include "serve/backend.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "kiln/error.h"
#include "serve/batcher.h"
#ifdef KILN_HAVE_CUDA
#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "kiln/engine.h"
#include "pipeline/parallel_copy.h"
#endif

namespace kiln::serve {

std::map<std::string, Tensor> Backend::RunBatch(
    const BatchParts& parts, int instance, std::chrono::steady_clock::time_point* inputs_ready) {
  std::map<std::string, Tensor> inputs;
  for (const auto& [name, list] : parts) {
    KILN_CHECK(!list.empty(), "input '", name, "' has no parts");
    // A lone request's tensor as it is; several concatenated.
    inputs[name] = list.size() == 1 ? *list[0] : ConcatBatch(list);
  }
  if (inputs_ready) *inputs_ready = std::chrono::steady_clock::now();
  return Run(inputs, instance);
}

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
// batch sizes, max_batch_size and the powers of two below it), all built at
// load. A batch runs on the smallest bucket that holds it; the pad rows hold
// stale but finite values (staging is zeroed at allocation) and their
// outputs are never copied back.
//
// Each instance is one worker thread that runs one batch at a time and waits
// for it, so its buckets share one stream, pinned staging and device binding
// buffers sized for the largest bucket. The binding pointers never change, so
// each (bucket, instance) context captures its CUDA Graph once (at load) and
// every batch replays it: per batch, each part goes to its rows of the
// device input (from page-locked memory, i.e. a registered shared memory
// region, by DMA where it lies; otherwise gathered into the instance's pinned
// staging by the instance's own copy threads first), the graph runs, and the
// n real rows of each output come back. Nothing is allocated.
class GpuBackend : public Backend {
 public:
  GpuBackend(const ModelConfig& config, const std::string& path)
      : batched_(config.max_batch_size > 0) {
    std::set<int> sizes;
    if (batched_) {
      sizes.insert(config.preferred_batch_sizes.begin(), config.preferred_batch_sizes.end());
      sizes.insert(config.max_batch_size);
      // Powers of two too, so that no batch is padded to more than twice its
      // rows whatever the preferred sizes (which steer batching, not padding).
      for (int size = 1; size < config.max_batch_size; size *= 2) sizes.insert(size);
    } else {
      sizes.insert(0);
    }
    BuildConfig build;
    build.precision = ParsePrecision(config.precision);
    for (int size : sizes) {
      KILN_CHECK(size >= 0, "batch size ", size, " is negative");
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
    // Bindings as the largest bucket has them; the others differ in dim 0 only.
    const Engine& largest = *buckets_.back().engine;
    for (const Bucket& b : buckets_) {
      CheckBindings(b, b.engine->inputs(), largest.inputs(), "input");
      CheckBindings(b, b.engine->outputs(), largest.outputs(), "output");
    }
    for (const TensorDesc& d : largest.inputs()) input_row_bytes_.push_back(RowBytes(d));
    for (const TensorDesc& d : largest.outputs()) output_row_bytes_.push_back(RowBytes(d));

    const int instances = std::max(1, config.instance_count);  // As the batcher starts workers.
    for (int i = 0; i < instances; ++i) {
      auto inst = std::make_unique<Instance>();
      for (const TensorDesc& d : largest.inputs()) {
        const size_t bytes = d.nbytes();
        inst->host_in.push_back(std::make_unique<cuda::PinnedBuffer>(bytes));
        inst->device_in.push_back(std::make_unique<cuda::DeviceBuffer>(bytes));
      }
      for (const TensorDesc& d : largest.outputs()) {
        const size_t bytes = d.nbytes();
        inst->host_out.push_back(std::make_unique<cuda::PinnedBuffer>(bytes));
        inst->device_out.push_back(std::make_unique<cuda::DeviceBuffer>(bytes));
      }
      // Zeroed once, so pad rows (never written by a batch) hold finite values.
      for (auto* list : {&inst->host_in, &inst->host_out})
        for (auto& b : *list)
          if (b->bytes) std::memset(b->ptr, 0, b->bytes);
      for (auto* list : {&inst->device_in, &inst->device_out})
        for (auto& b : *list)
          if (b->bytes) KILN_CUDA_CHECK(cudaMemsetAsync(b->ptr, 0, b->bytes, inst->stream));
      KILN_CUDA_CHECK(cudaStreamSynchronize(inst->stream));
      for (auto& b : inst->device_in) inst->in_ptrs.push_back(b->ptr);
      for (auto& b : inst->device_out) inst->out_ptrs.push_back(b->ptr);
      instances_.push_back(std::move(inst));
    }
    // Contexts share their engine's weights. One warm-up replay each captures
    // the graphs now rather than on the first requests.
    for (Bucket& b : buckets_) {
      for (int i = 0; i < instances; ++i) {
        b.contexts.push_back(b.engine->CreateContext());
        Instance& inst = *instances_[static_cast<size_t>(i)];
        b.contexts.back()->EnqueueGraph(inst.in_ptrs, inst.out_ptrs, inst.stream);
        KILN_CUDA_CHECK(cudaStreamSynchronize(inst.stream));
      }
    }
    // The staging threads (half the cores, at most 8) split between instances.
    const int threads = pipeline::StagingThreads(0);
    for (auto& inst : instances_)
      inst->copier =
          std::make_unique<pipeline::ParallelCopier>((threads + instances - 1) / instances);
  }

  // Owned copies of RunBatch's views (this entry point's contract).
  std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                    int instance) override {
    BatchParts parts;
    for (const auto& [name, t] : inputs) parts[name] = {&t};
    std::map<std::string, Tensor> outputs = RunBatch(parts, instance, nullptr);
    for (auto& [name, t] : outputs) t = t.Clone();
    return outputs;
  }

  std::map<std::string, Tensor> RunBatch(
      const BatchParts& parts, int instance,
      std::chrono::steady_clock::time_point* inputs_ready) override {
    KILN_CHECK(instance >= 0 && static_cast<size_t>(instance) < instances_.size(), "instance ",
               instance, " is out of range: the GPU backend has ", instances_.size());
    Instance& inst = *instances_[static_cast<size_t>(instance)];
    const Engine& largest = *buckets_.back().engine;
    const std::vector<TensorDesc>& input_descs = largest.inputs();

    // Validate every part (the staging copies rely on it) and count rows.
    KILN_CHECK(parts.size() == input_descs.size(), "the batch has ", parts.size(),
               " inputs, the engine takes ", input_descs.size());
    int64_t n = 0;
    for (size_t b = 0; b < input_descs.size(); ++b) {
      const TensorDesc& desc = input_descs[b];
      auto it = parts.find(desc.name);
      KILN_CHECK(it != parts.end() && !it->second.empty(), "the batch has no input '", desc.name,
                 "'");
      KILN_CHECK(batched_ || it->second.size() == 1, "model without a batch dim: input '",
                 desc.name, "' comes in ", it->second.size(), " parts");
      int64_t rows = 0;
      for (const Tensor* t : it->second) {
        const bool fits =
            t->dtype() == desc.dtype && t->rank() == static_cast<int>(desc.dims.size()) &&
            (batched_ ? std::equal(desc.dims.begin() + 1, desc.dims.end(), t->dims().begin() + 1)
                      : t->dims() == desc.dims);
        KILN_CHECK(fits, "input '", desc.name, "' is ", t->TypeString(), ", the GPU engine takes ",
                   DTypeName(desc.dtype), DimsToString(desc.dims),
                   batched_ ? " (any batch size up to dim 0)" : "");
        if (batched_) rows += t->dim(0);
      }
      KILN_CHECK(b == 0 || rows == n, "input '", desc.name, "' has ", rows, " rows, but '",
                 input_descs[0].name, "' has ", n);
      n = rows;
    }
    Bucket* bucket = nullptr;
    for (Bucket& b : buckets_) {
      if (b.batch >= n) {
        bucket = &b;
        break;
      }
    }
    KILN_CHECK(bucket, "batch size ", n, " is larger than every engine's batch size");

    // Each part goes to its rows of the device binding: parts in page-locked
    // memory (registered shared memory regions) by DMA straight from where
    // they are, the others gathered into the instance's pinned staging first;
    // adjacent staged parts go up as one copy.
    inst.copies.clear();  // Capacities stay: no allocation once warm.
    inst.uploads.clear();
    for (size_t b = 0; b < input_descs.size(); ++b) {
      char* staging = static_cast<char*>(inst.host_in[b]->ptr);
      char* device = static_cast<char*>(inst.device_in[b]->ptr);
      size_t offset = 0;
      bool previous_staged = false;
      for (const Tensor* t : parts.find(input_descs[b].name)->second) {
        const size_t bytes = t->nbytes();
        if (bytes == 0) continue;
        if (cuda::IsPinnedHost(t->raw_data())) {
          inst.uploads.push_back({device + offset, t->raw_data(), bytes});
          previous_staged = false;
        } else {
          inst.copies.push_back({staging + offset, t->raw_data(), bytes});
          if (previous_staged)
            inst.uploads.back().bytes += bytes;  // Extends the staged run before it.
          else
            inst.uploads.push_back({device + offset, staging + offset, bytes});
          previous_staged = true;
        }
        offset += bytes;
      }
    }
    inst.copier->Copy(inst.copies);
    if (inputs_ready) *inputs_ready = std::chrono::steady_clock::now();

    ExecutionContext& context = *bucket->contexts.at(static_cast<size_t>(instance));
    try {
      for (const pipeline::CopyJob& up : inst.uploads)
        KILN_CUDA_CHECK(
            cudaMemcpyAsync(up.dst, up.src, up.bytes, cudaMemcpyHostToDevice, inst.stream));
      context.EnqueueGraph(inst.in_ptrs, inst.out_ptrs, inst.stream);
      for (size_t b = 0; b < output_row_bytes_.size(); ++b) {
        const size_t bytes =
            batched_ ? static_cast<size_t>(n) * output_row_bytes_[b] : inst.host_out[b]->bytes;
        if (bytes)
          KILN_CUDA_CHECK(cudaMemcpyAsync(inst.host_out[b]->ptr, inst.device_out[b]->ptr, bytes,
                                          cudaMemcpyDeviceToHost, inst.stream));
      }
      KILN_CUDA_CHECK(cudaStreamSynchronize(inst.stream));
    } catch (...) {
      // Let queued copies finish before the staging is reused; the error
      // is already on its way.
      (void)cudaStreamSynchronize(inst.stream);
      (void)cudaGetLastError();
      throw;
    }

    std::map<std::string, Tensor> named;
    const std::vector<TensorDesc>& output_descs = bucket->engine->outputs();
    for (size_t b = 0; b < output_descs.size(); ++b) {
      const TensorDesc& d = output_descs[b];
      std::vector<int64_t> dims = d.dims;
      if (batched_) dims[0] = n;
      // A view of the instance's staging, valid until its next call.
      named[d.name] = Tensor::Borrow(d.dtype, std::move(dims), nullptr, inst.host_out[b]->ptr);
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
  // One worker thread's stream and staging, in binding order, sized for the
  // largest bucket and shared by all buckets.
  struct Instance {
    cudaStream_t stream = nullptr;
    std::vector<std::unique_ptr<cuda::PinnedBuffer>> host_in, host_out;
    std::vector<std::unique_ptr<cuda::DeviceBuffer>> device_in, device_out;
    std::vector<const void*> in_ptrs;  // device_in/device_out: the graphs' fixed bindings.
    std::vector<void*> out_ptrs;
    std::vector<pipeline::CopyJob> copies;  // Host gathers into the staging.
    std::vector<pipeline::CopyJob> uploads;  // Host-to-device copies (dst on the device).
    // Its own staging threads, so instances gather concurrently rather than
    // queueing for one copier.
    std::unique_ptr<pipeline::ParallelCopier> copier;
    Instance() { KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
    ~Instance() {
      // Work may still be queued (a failed load): finish it before the
      // buffers below are freed.
      if (stream) {
        cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
      }
    }
    Instance(const Instance&) = delete;
    Instance& operator=(const Instance&) = delete;
  };

  // Bucket `b`'s bindings match the largest bucket's but for the batch dim,
  // which every batched binding must have (outputs are split per request).
  void CheckBindings(const Bucket& b, const std::vector<TensorDesc>& descs,
                     const std::vector<TensorDesc>& largest, const char* what) const {
    KILN_CHECK(descs.size() == largest.size(), "the batch-", b.batch, " engine has ", descs.size(),
               " ", what, "s, the largest has ", largest.size());
    for (size_t i = 0; i < descs.size(); ++i) {
      const TensorDesc& d = descs[i];
      const TensorDesc& l = largest[i];
      if (batched_) {
        KILN_CHECK(!d.dims.empty() && d.dims[0] == b.batch, "engine ", what, " '", d.name, "' is ",
                   DTypeName(d.dtype), DimsToString(d.dims), " for batch size ", b.batch,
                   ": kiln serve needs the batch as dim 0");
      }
      KILN_CHECK(d.name == l.name && d.dtype == l.dtype && d.dims.size() == l.dims.size() &&
                     std::equal(d.dims.begin() + (batched_ ? 1 : 0), d.dims.end(),
                                l.dims.begin() + (batched_ ? 1 : 0)),
                 "engine ", what, " '", d.name, "' ", DTypeName(d.dtype), DimsToString(d.dims),
                 " of batch size ", b.batch, " does not match '", l.name, "' ", DTypeName(l.dtype),
                 DimsToString(l.dims), " of the largest batch size");
    }
  }
  // Bytes of one batch row (the whole binding without a batch dim).
  size_t RowBytes(const TensorDesc& d) const {
    const size_t bytes = d.nbytes();
    const int64_t batch = buckets_.back().batch;
    return batched_ && batch > 0 ? bytes / static_cast<size_t>(batch) : bytes;
  }

  bool batched_;
  std::vector<size_t> input_row_bytes_, output_row_bytes_;  // Binding order.
  std::vector<Bucket> buckets_;  // Ascending batch size.
  // After buckets_: destroyed first, so queued work finishes before the
  // contexts go.
  std::vector<std::unique_ptr<Instance>> instances_;
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
