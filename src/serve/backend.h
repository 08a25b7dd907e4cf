// What runs a (batched) request: the CPU reference backend always, a GPU
// engine backend when kiln is built with CUDA and a device is present.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/kiln.h"
#include "serve/server_core.h"

namespace kiln::serve {

// A batch's inputs by name: the requests' tensors in batch order, each with
// the batch dim first (one tensor per name for a lone request).
using BatchParts = std::map<std::string, std::vector<const Tensor*>>;

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs one batch. `instance` (0 .. instance_count-1) is the calling worker:
  // each instance calls from one thread only. Returns every model output by
  // name, owning its bytes. Throws kiln::Error on failure.
  virtual std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                            int instance) = 0;

  // Runs the batch made of `parts` concatenated along dim 0 (the batcher's
  // entry point: a backend may gather the parts straight into its staging).
  // The returned tensors may be views of the instance's staging memory,
  // valid only until that instance's next Run/RunBatch: callers copy what
  // they keep. `inputs_ready`, when given, receives the time the inputs were
  // assembled (for the compute_input/compute_infer statistics). The default
  // concatenates (ConcatBatch; a lone part is used as is) and calls Run.
  virtual std::map<std::string, Tensor> RunBatch(
      const BatchParts& parts, int instance,
      std::chrono::steady_clock::time_point* inputs_ready = nullptr);

  virtual std::string Kind() const = 0;  // "cpu" or "gpu".
};

// Loads `model_path` for `config` (already validated against `model`).
// Picks the GPU for kinds "gpu"/"auto" when available; "gpu" without a GPU
// fails, "auto" falls back to the CPU. `note` receives why the CPU was chosen.
std::unique_ptr<Backend> CreateBackend(const ModelConfig& config, const std::string& model_path,
                                       std::shared_ptr<const Model> model, std::string* note);

}  // namespace kiln::serve
