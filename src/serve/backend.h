// What runs a (batched) request: the CPU reference backend always, a GPU
// engine backend when kiln is built with CUDA and a device is present.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/kiln.h"
#include "serve/server_core.h"

namespace kiln::serve {

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs one batch. `instance` (0 .. instance_count-1) is the calling worker:
  // each instance calls from one thread only. Returns every model output by
  // name. Throws kiln::Error on failure.
  virtual std::map<std::string, Tensor> Run(const std::map<std::string, Tensor>& inputs,
                                            int instance) = 0;
  virtual std::string Kind() const = 0;  // "cpu" or "gpu".
};

// Loads `model_path` for `config` (already validated against `model`).
// Picks the GPU for kinds "gpu"/"auto" when available; "gpu" without a GPU
// fails, "auto" falls back to the CPU. `note` receives why the CPU was chosen.
std::unique_ptr<Backend> CreateBackend(const ModelConfig& config, const std::string& model_path,
                                       std::shared_ptr<const Model> model, std::string* note);

}  // namespace kiln::serve
