// NumPy .npy files <-> Tensors (format versions 1.0, 2.0 and 3.0).
//
// Supported dtypes: float16/32/64, int8/16/32/64, uint8/16/32/64 and bool,
// little-endian, C order. Fortran order, big-endian data and other dtypes are
// rejected with an error naming the file and the header field.
#pragma once

#include <string>

#include "kiln/tensor.h"

namespace kiln::npy {

Tensor ReadNpyFile(const std::string& path);
// Parses the bytes of a .npy file; `source` names it in errors.
Tensor ParseNpy(const std::string& bytes, const std::string& source = "<memory>");

// Writes version 1.0 (2.0 when the header needs it). Throws for dtypes NumPy
// has no code for (bfloat16, string).
void WriteNpyFile(const Tensor& tensor, const std::string& path);
std::string SerializeNpy(const Tensor& tensor);

}  // namespace kiln::npy
