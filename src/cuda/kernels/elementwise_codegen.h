// Generated straight-line CUDA kernels for fused elementwise programs
// (KilnElementwise, see elementwise.h and src/builder/fuse_elementwise.h).
//
// The interpreter (LaunchFused) decodes the program per element and keeps
// its register file in local memory. Here each distinct program becomes CUDA
// C++ source with the registers as scalars and the instructions as calls of
// the same device functions the interpreter uses (elementwise_ops.cuh, handed
// to NVRTC as text), so results are bit-identical. The source is compiled
// with NVRTC (dlopen'ed on first use; no link-time dependency) to a cubin for
// the current device, loaded with cudaLibraryLoadData and launched with
// cudaLaunchKernel (CUDA-Graph capturable).
//
// Flat indexing (every input laid out like the output, or a single broadcast
// element) gets a vectorized kernel for 16-byte-aligned pointers and a
// one-element-per-thread kernel otherwise. Strided (broadcast) indexing gets
// one kernel with the merged dims and strides baked in as constants (e.g.
// BERT's embeddings: [b, s, h] + [1, s, h] + [h]).
//
// Compilation happens at layer creation (engine build or load), never in
// Enqueue; compiled kernels are cached process-wide by (arch, source).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "cuda/kernels/elementwise.h"

namespace kiln::gpu::ew {

// Why generated kernels cannot be used in this process, or "" when they can:
// env KILN_ELEMENTWISE_CODEGEN=0, or libnvrtc is not loadable.
std::string CodegenUnavailableReason();

// Whether the generator handles this indexing (1 to kMaxInputs inputs).
bool CodegenSupports(const Indexing& indexing);

// The CUDA C++ source for `program` over `indexing` with every input
// and the output of `dtype` (float32, float16, bfloat16). Deterministic: the
// same program, dtype and broadcast pattern give the same text.
std::string GenerateFusedSource(DType dtype, const Program& program, const Indexing& indexing);

// Compiles generated source with NVRTC for sm_<arch> (e.g. 90) and returns
// the cubin. Needs no GPU. Throws kiln::Error (with NVRTC's log) on failure.
std::vector<char> CompileFusedSource(const std::string& source, int arch);

// Compute capability of the current device as major*10+minor (e.g. 90).
int CurrentDeviceArch();

// A loaded generated kernel pair.
class FusedCodegenKernel {
 public:
  FusedCodegenKernel(cudaLibrary_t library, cudaKernel_t vec, cudaKernel_t flat, DType dtype)
      : library_(library), vec_(vec), flat_(flat), dtype_(dtype) {}

  // Launches on `stream`: `indexing` must be the one the source was
  // generated for. No allocation, no synchronization.
  void Launch(const Indexing& indexing, const Pointers& inputs, void* out,
              cudaStream_t stream) const;

 private:
  cudaLibrary_t library_;  // Never unloaded: kernels live as long as the process.
  cudaKernel_t vec_;
  cudaKernel_t flat_;
  DType dtype_;
};

// The kernel for this program on the current device, compiled and loaded on
// first request and cached process-wide (identical programs, e.g. BERT's 12
// GELUs, compile once). Throws kiln::Error when compiling or loading fails.
std::shared_ptr<const FusedCodegenKernel> GetFusedCodegenKernel(DType dtype,
                                                                const Program& program,
                                                                const Indexing& indexing);

}  // namespace kiln::gpu::ew
