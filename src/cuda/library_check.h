// Status checking for cuDNN and cuBLASLt calls (see cuda_check.h for the CUDA
// runtime): each failure throws kiln::Error naming the call, file:line and the
// library's status.
#pragma once

#include <cublasLt.h>
#include <cudnn.h>

#include "kiln/error.h"

#define KILN_CUDNN_CHECK(call)                                                      \
  do {                                                                              \
    cudnnStatus_t kiln_status_ = (call);                                            \
    if (kiln_status_ != CUDNN_STATUS_SUCCESS)                                       \
      ::kiln::Fail(#call, " failed at ", __FILE__, ":", __LINE__, ": ",             \
                   cudnnGetErrorString(kiln_status_));                              \
  } while (0)

#define KILN_CUBLAS_CHECK(call)                                                     \
  do {                                                                              \
    cublasStatus_t kiln_status_ = (call);                                           \
    if (kiln_status_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::kiln::Fail(#call, " failed at ", __FILE__, ":", __LINE__, ": cuBLAS status ", \
                   static_cast<int>(kiln_status_));                                 \
  } while (0)
