// Status checking for CUDA runtime calls: every call goes through KILN_CUDA_CHECK,
// which throws kiln::Error naming the call, the file:line and CUDA's message.
#pragma once

#include <cuda_runtime.h>

#include "kiln/error.h"

#define KILN_CUDA_CHECK(call)                                                         \
  do {                                                                                \
    cudaError_t kiln_status_ = (call);                                                \
    if (kiln_status_ != cudaSuccess)                                                  \
      ::kiln::Fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ",               \
                   cudaGetErrorName(kiln_status_), " (", cudaGetErrorString(kiln_status_), \
                   ")");                                                              \
  } while (0)
