// Row-major GEMM for the CPU kernels: C = alpha * op(A) * op(B) + beta * C,
// where op transposes its matrix when the flag is set. float and double go to
// OpenBLAS; integer types use a plain loop (no BLAS covers them).
#pragma once

#include <cstdint>
#include <type_traits>

namespace kiln::cpu {

// lda/ldb/ldc are the row strides of A, B, C as stored (before op).
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc);

template <typename T>
  requires std::is_integral_v<T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* c_row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) c_row[j] = beta == T(0) ? T(0) : T(beta * c_row[j]);
    for (int64_t p = 0; p < k; ++p) {
      const T a_ip = T(alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]));
      if (trans_b) {
        for (int64_t j = 0; j < n; ++j) c_row[j] = T(c_row[j] + a_ip * b[j * ldb + p]);
      } else {
        const T* b_row = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) c_row[j] = T(c_row[j] + a_ip * b_row[j]);
      }
    }
  }
}

}  // namespace kiln::cpu
