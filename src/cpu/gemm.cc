#include "cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>

#include "kiln/error.h"

namespace kiln::cpu {

namespace {

// CBLAS takes int sizes.
int BlasInt(int64_t v) {
  KILN_CHECK(v >= 0 && v <= INT_MAX, "matrix dimension ", v, " is too large for BLAS");
  return static_cast<int>(v);
}

}  // namespace

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, BlasInt(m), BlasInt(n), BlasInt(k), alpha, a,
              BlasInt(std::max<int64_t>(lda, 1)), b, BlasInt(std::max<int64_t>(ldb, 1)), beta, c,
              BlasInt(std::max<int64_t>(ldc, 1)));
}

void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
          const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, BlasInt(m), BlasInt(n), BlasInt(k), alpha, a,
              BlasInt(std::max<int64_t>(lda, 1)), b, BlasInt(std::max<int64_t>(ldb, 1)), beta, c,
              BlasInt(std::max<int64_t>(ldc, 1)));
}

}  // namespace kiln::cpu
