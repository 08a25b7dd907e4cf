// CPU kernels of the neural-network operators (definitions in ops/nn.cc).
//
// Convolution is im2col + GEMM per group (1x1 stride-1 convolutions skip the
// im2col), with a direct loop for depthwise convolution. Spatial ops work on
// up to 3 spatial dims by padding the geometry to 3-D with size-1 axes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/gemm.h"
#include "cpu/kernel_util.h"
#include "ops/nn.h"
#include "ops/registry.h"

namespace kiln {
namespace {

using cpu::Gemm;

// ---- Window geometry padded to 3 spatial dims ----

// Maps window positions ("cols") to image positions: along each axis,
// image index = col * stride - pad + k * dilation.
struct Geometry3 {
  int64_t image[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};      // Leading pad (may exceed the trailing one).
  int64_t pad_end[3] = {0, 0, 0};  // Trailing pad (pooling's count_include_pad).
  int64_t cols[3] = {1, 1, 1};

  int64_t image_volume() const { return image[0] * image[1] * image[2]; }
  int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
  int64_t cols_volume() const { return cols[0] * cols[1] * cols[2]; }
};

// `image` is the side the kernel reads (Conv input) or writes (ConvTranspose
// output); `cols` the other side.
Geometry3 To3D(const nn::WindowGeometry& g, const std::vector<int64_t>& image,
               const std::vector<int64_t>& cols) {
  const int rank = g.rank();
  KILN_CHECK(rank >= 1 && rank <= 3, "only 1 to 3 spatial dims are supported, got ", rank);
  Geometry3 geo;
  for (int i = 0; i < rank; ++i) {
    const int j = 3 - rank + i;
    geo.image[j] = image[static_cast<size_t>(i)];
    geo.cols[j] = cols[static_cast<size_t>(i)];
    geo.kernel[j] = g.kernel[static_cast<size_t>(i)];
    geo.stride[j] = g.strides[static_cast<size_t>(i)];
    geo.dilation[j] = g.dilations[static_cast<size_t>(i)];
    geo.pad[j] = g.pads_begin[static_cast<size_t>(i)];
    geo.pad_end[j] = g.pads_end[static_cast<size_t>(i)];
  }
  return geo;
}

// The col positions [begin, end) along one axis whose image position
// col * stride + offset lies inside [0, image).
void ValidRange(int64_t offset, int64_t stride, int64_t image, int64_t cols, int64_t* begin,
                int64_t* end) {
  int64_t b = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t e = image - 1 - offset < 0 ? 0 : (image - 1 - offset) / stride + 1;
  *begin = std::min(b, cols);
  *end = std::clamp(e, *begin, cols);
}

std::vector<int64_t> SpatialDims(const Tensor& t) {
  return std::vector<int64_t>(t.dims().begin() + 2, t.dims().end());
}

// col[(c, kd, kh, kw), (od, oh, ow)] = image[c, od*s - p + kd*d, ...] or 0 in the padding.
template <typename T>
void Im2Col(const T* image, int64_t channels, const Geometry3& g, T* col) {
  const int64_t cols_volume = g.cols_volume();
  for (int64_t c = 0; c < channels; ++c) {
    const T* image_c = image + c * g.image_volume();
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
          T* dst = col;
          col += cols_volume;
          const int64_t w_offset = kw * g.dilation[2] - g.pad[2];
          int64_t ow_begin, ow_end;
          ValidRange(w_offset, g.stride[2], g.image[2], g.cols[2], &ow_begin, &ow_end);
          for (int64_t od = 0; od < g.cols[0]; ++od) {
            const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
            for (int64_t oh = 0; oh < g.cols[1]; ++oh, dst += g.cols[2]) {
              const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
              if (id < 0 || id >= g.image[0] || ih < 0 || ih >= g.image[1]) {
                std::fill(dst, dst + g.cols[2], T(0));
                continue;
              }
              const T* src = image_c + (id * g.image[1] + ih) * g.image[2];
              std::fill(dst, dst + ow_begin, T(0));
              if (g.stride[2] == 1) {
                std::memcpy(dst + ow_begin, src + ow_begin + w_offset,
                            static_cast<size_t>(ow_end - ow_begin) * sizeof(T));
              } else {
                for (int64_t ow = ow_begin; ow < ow_end; ++ow)
                  dst[ow] = src[ow * g.stride[2] + w_offset];
              }
              std::fill(dst + ow_end, dst + g.cols[2], T(0));
            }
          }
        }
  }
}

// The adjoint of Im2Col: image[c, od*s - p + kd*d, ...] += col[(c, kd, ...), (od, ...)].
template <typename T>
void Col2ImAdd(const T* col, int64_t channels, const Geometry3& g, T* image) {
  const int64_t cols_volume = g.cols_volume();
  for (int64_t c = 0; c < channels; ++c) {
    T* image_c = image + c * g.image_volume();
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
          const T* src = col;
          col += cols_volume;
          const int64_t w_offset = kw * g.dilation[2] - g.pad[2];
          int64_t ow_begin, ow_end;
          ValidRange(w_offset, g.stride[2], g.image[2], g.cols[2], &ow_begin, &ow_end);
          for (int64_t od = 0; od < g.cols[0]; ++od) {
            const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
            for (int64_t oh = 0; oh < g.cols[1]; ++oh, src += g.cols[2]) {
              const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
              if (id < 0 || id >= g.image[0] || ih < 0 || ih >= g.image[1]) continue;
              T* dst = image_c + (id * g.image[1] + ih) * g.image[2];
              for (int64_t ow = ow_begin; ow < ow_end; ++ow)
                dst[ow * g.stride[2] + w_offset] += src[ow];
            }
          }
        }
  }
}

template <typename T>
void AddChannelBias(const Tensor* bias, int64_t batch, int64_t channels, int64_t volume, T* y) {
  if (!bias) return;
  KILN_CHECK(bias->numel() == channels, "bias has ", bias->numel(), " entries, expected ",
             channels);
  const T* b = bias->data<T>();
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c) {
      T* row = y + (n * channels + c) * volume;
      for (int64_t i = 0; i < volume; ++i) row[i] += b[c];
    }
}

// ---- Conv ----

// Depthwise convolution (one input channel per group): a direct loop, since
// per-channel GEMMs would be tiny. `multiplier` outputs per input channel.
template <typename T>
void DepthwiseConv(const T* x, const T* w, int64_t batch, int64_t channels, int64_t multiplier,
                   const Geometry3& g, T* y) {
  const int64_t out_channels = channels * multiplier;
  const int64_t kernel_volume = g.kernel_volume();
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t m = 0; m < out_channels; ++m) {
      const T* xc = x + (n * channels + m / multiplier) * g.image_volume();
      const T* wm = w + m * kernel_volume;
      T* yc = y + (n * out_channels + m) * g.cols_volume();
      std::fill(yc, yc + g.cols_volume(), T(0));
      for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
        for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
          for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
            const T weight = wm[(kd * g.kernel[1] + kh) * g.kernel[2] + kw];
            const int64_t w_offset = kw * g.dilation[2] - g.pad[2];
            int64_t ow_begin, ow_end;
            ValidRange(w_offset, g.stride[2], g.image[2], g.cols[2], &ow_begin, &ow_end);
            for (int64_t od = 0; od < g.cols[0]; ++od) {
              const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
              if (id < 0 || id >= g.image[0]) continue;
              for (int64_t oh = 0; oh < g.cols[1]; ++oh) {
                const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
                if (ih < 0 || ih >= g.image[1]) continue;
                const T* x_row = xc + (id * g.image[1] + ih) * g.image[2] + w_offset;
                T* y_row = yc + (od * g.cols[1] + oh) * g.cols[2];
                const int64_t sw = g.stride[2];
                for (int64_t ow = ow_begin; ow < ow_end; ++ow) y_row[ow] += weight * x_row[ow * sw];
              }
            }
          }
    }
}

template <typename T>
void ConvImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  Tensor& y = ctx.output(0);
  const int64_t group = ctx.attrs().GetInt("group", 1);
  const int64_t batch = x.dim(0), channels = x.dim(1), out_channels = w.dim(0);
  const int64_t group_in = channels / group, group_out = out_channels / group;
  nn::WindowGeometry wg =
      nn::ComputeWindowGeometry(ctx.attrs(), SpatialDims(x), SpatialDims(w), false);
  const Geometry3 g = To3D(wg, SpatialDims(x), SpatialDims(y));
  const T* xd = x.data<T>();
  const T* wd = w.data<T>();
  T* yd = y.data<T>();
  if (y.numel() == 0) return;

  if (group_in == 1 && group == channels) {
    DepthwiseConv(xd, wd, batch, channels, group_out, g, yd);
  } else {
    const int64_t kernel_volume = g.kernel_volume();
    const int64_t patch = group_in * kernel_volume;  // GEMM inner dim.
    bool pointwise = kernel_volume == 1;
    for (int i = 0; i < 3; ++i) pointwise &= g.stride[i] == 1 && g.pad[i] == 0 && g.pad_end[i] == 0;
    std::vector<T> col(pointwise ? 0 : static_cast<size_t>(patch * g.cols_volume()));
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t gi = 0; gi < group; ++gi) {
        const T* x_group = xd + (n * channels + gi * group_in) * g.image_volume();
        const T* cols = x_group;
        if (!pointwise) {
          Im2Col(x_group, group_in, g, col.data());
          cols = col.data();
        }
        Gemm(false, false, group_out, g.cols_volume(), patch, T(1), wd + gi * group_out * patch,
             patch, cols, g.cols_volume(), T(0),
             yd + (n * out_channels + gi * group_out) * g.cols_volume(), g.cols_volume());
      }
  }
  AddChannelBias(ctx.optional_input(2), batch, out_channels, g.cols_volume(), yd);
}

// ---- ConvTranspose ----

template <typename T>
void ConvTransposeImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& w = ctx.input(1);
  Tensor& y = ctx.output(0);
  const int64_t group = ctx.attrs().GetInt("group", 1);
  const int64_t batch = x.dim(0), channels = x.dim(1);
  const int64_t group_in = channels / group, group_out = w.dim(1);
  const int64_t out_channels = group_out * group;
  nn::WindowGeometry wg =
      nn::ComputeConvTransposeGeometry(ctx.attrs(), SpatialDims(x), SpatialDims(w));
  // The transposed convolution scatters each input position (a "col") into
  // the output image, the adjoint of Conv's gather.
  const Geometry3 g = To3D(wg, SpatialDims(y), SpatialDims(x));
  const int64_t rows = group_out * g.kernel_volume();
  std::vector<T> col(static_cast<size_t>(rows * g.cols_volume()));
  T* yd = y.data<T>();
  std::fill(yd, yd + y.numel(), T(0));
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t gi = 0; gi < group; ++gi) {
      // col[(m, k), i] = sum_c W[c, m, k] * X[c, i] over the group's channels.
      Gemm(true, false, rows, g.cols_volume(), group_in, T(1),
           w.data<T>() + gi * group_in * rows, rows,
           x.data<T>() + (n * channels + gi * group_in) * g.cols_volume(), g.cols_volume(), T(0),
           col.data(), g.cols_volume());
      Col2ImAdd(col.data(), group_out, g,
                yd + (n * out_channels + gi * group_out) * g.image_volume());
    }
  AddChannelBias(ctx.optional_input(2), batch, out_channels, g.image_volume(), yd);
}

// ---- Pooling ----

template <typename T>
void MaxPoolImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  Tensor* indices = ctx.has_output(1) ? &ctx.output(1) : nullptr;
  const bool ceil_mode = ctx.attrs().GetInt("ceil_mode", 0) != 0;
  const bool column_major = ctx.attrs().GetInt("storage_order", 0) == 1;
  nn::WindowGeometry wg = nn::ComputeWindowGeometry(
      ctx.attrs(), SpatialDims(x), ctx.attrs().GetInts("kernel_shape"), ceil_mode);
  const Geometry3 g = To3D(wg, SpatialDims(x), SpatialDims(y));
  const int64_t planes = x.dim(0) * x.dim(1);
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  int64_t* id_out = indices ? indices->data<int64_t>() : nullptr;
  for (int64_t p = 0; p < planes; ++p) {
    const T* plane = xd + p * g.image_volume();
    for (int64_t od = 0; od < g.cols[0]; ++od)
      for (int64_t oh = 0; oh < g.cols[1]; ++oh)
        for (int64_t ow = 0; ow < g.cols[2]; ++ow) {
          T best = std::numeric_limits<T>::lowest();
          int64_t best_d = -1, best_h = 0, best_w = 0;
          for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
            const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
            if (id < 0 || id >= g.image[0]) continue;
            for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
              const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
              if (ih < 0 || ih >= g.image[1]) continue;
              const T* row = plane + (id * g.image[1] + ih) * g.image[2];
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const int64_t iw = ow * g.stride[2] - g.pad[2] + kw * g.dilation[2];
                if (iw < 0 || iw >= g.image[2]) continue;
                if (best_d < 0 || row[iw] > best) {
                  best = row[iw];
                  best_d = id, best_h = ih, best_w = iw;
                }
              }
            }
          }
          *yd++ = best;
          if (id_out) {
            // Flat index into X; storage_order 1 orders the spatial dims column-major.
            const int64_t spatial = column_major
                ? (best_w * g.image[1] + best_h) * g.image[0] + best_d
                : (best_d * g.image[1] + best_h) * g.image[2] + best_w;
            *id_out++ = p * g.image_volume() + spatial;
          }
        }
  }
}

template <typename T>
void AveragePoolImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const bool ceil_mode = ctx.attrs().GetInt("ceil_mode", 0) != 0;
  const bool include_pad = ctx.attrs().GetInt("count_include_pad", 0) != 0;
  nn::WindowGeometry wg = nn::ComputeWindowGeometry(
      ctx.attrs(), SpatialDims(x), ctx.attrs().GetInts("kernel_shape"), ceil_mode);
  const Geometry3 g = To3D(wg, SpatialDims(x), SpatialDims(y));
  // Window taps along one axis inside the padded extent [-pad, image + pad_end).
  auto padded_taps = [&](int axis, int64_t o) {
    int64_t taps = 0;
    for (int64_t k = 0; k < g.kernel[axis]; ++k) {
      const int64_t i = o * g.stride[axis] - g.pad[axis] + k * g.dilation[axis];
      taps += i >= -g.pad[axis] && i < g.image[axis] + g.pad_end[axis];
    }
    return taps;
  };
  const int64_t planes = x.dim(0) * x.dim(1);
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  for (int64_t p = 0; p < planes; ++p) {
    const T* plane = xd + p * g.image_volume();
    for (int64_t od = 0; od < g.cols[0]; ++od)
      for (int64_t oh = 0; oh < g.cols[1]; ++oh)
        for (int64_t ow = 0; ow < g.cols[2]; ++ow) {
          T sum = 0;
          int64_t count = 0;
          for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
            const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
            if (id < 0 || id >= g.image[0]) continue;
            for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
              const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
              if (ih < 0 || ih >= g.image[1]) continue;
              const T* row = plane + (id * g.image[1] + ih) * g.image[2];
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const int64_t iw = ow * g.stride[2] - g.pad[2] + kw * g.dilation[2];
                if (iw < 0 || iw >= g.image[2]) continue;
                sum += row[iw];
                ++count;
              }
            }
          }
          if (include_pad) count = padded_taps(0, od) * padded_taps(1, oh) * padded_taps(2, ow);
          *yd++ = count > 0 ? sum / static_cast<T>(count) : T(0);
        }
  }
}

template <typename T>
void GlobalPoolImpl(KernelContext& ctx, bool is_max) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const int64_t planes = x.dim(0) * x.dim(1);
  const int64_t volume = Product(x.dims(), 2);
  KILN_CHECK(volume > 0, "global pooling over an empty spatial extent");
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  for (int64_t p = 0; p < planes; ++p) {
    const T* plane = xd + p * volume;
    if (is_max) {
      yd[p] = *std::max_element(plane, plane + volume);
    } else {
      double sum = 0;
      for (int64_t i = 0; i < volume; ++i) sum += static_cast<double>(plane[i]);
      yd[p] = static_cast<T>(sum / static_cast<double>(volume));
    }
  }
}

// ---- Normalization ----

template <typename T>
void BatchNormImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const double epsilon = ctx.attrs().GetFloat("epsilon", 1e-5f);
  const int64_t batch = x.dim(0), channels = x.dim(1);
  const int64_t volume = Product(x.dims(), 2);
  // Per-channel parameters, or (opsets 7-8, spatial=0) one per activation of X[1:].
  const int64_t params = ctx.input(1).numel();
  KILN_CHECK(params == channels || params == channels * volume, "scale has ", params,
             " entries; expected ", channels, " (one per channel)");
  for (int i = 2; i <= 4; ++i)
    KILN_CHECK(ctx.input(i).numel() == params, "input ", i, " has ", ctx.input(i).numel(),
               " entries but scale has ", params);
  const T* scale = ctx.input(1).data<T>();
  const T* bias = ctx.input(2).data<T>();
  const T* mean = ctx.input(3).data<T>();
  const T* var = ctx.input(4).data<T>();
  // y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a.
  std::vector<T> a(static_cast<size_t>(params)), b(static_cast<size_t>(params));
  for (int64_t i = 0; i < params; ++i) {
    a[i] = static_cast<T>(static_cast<double>(scale[i]) / std::sqrt(static_cast<double>(var[i]) + epsilon));
    b[i] = bias[i] - mean[i] * a[i];
  }
  const int64_t per_param = params == channels ? volume : 1;
  const T* xd = x.data<T>();
  T* yd = y.data<T>();
  for (int64_t n = 0; n < batch; ++n) {
    const int64_t base = n * channels * volume;
    for (int64_t i = 0; i < channels * volume; i += per_param) {
      const int64_t param = i / per_param;
      const T ai = a[param], bi = b[param];
      for (int64_t j = 0; j < per_param; ++j) yd[base + i + j] = xd[base + i + j] * ai + bi;
    }
  }
}

template <typename T>
void InstanceNormImpl(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  Tensor& y = ctx.output(0);
  const double epsilon = ctx.attrs().GetFloat("epsilon", 1e-5f);
  const int64_t batch = x.dim(0), channels = x.dim(1);
  const int64_t volume = Product(x.dims(), 2);
  KILN_CHECK(ctx.input(1).numel() == channels && ctx.input(2).numel() == channels,
             "scale and B must have ", channels, " entries");
  const T* scale = ctx.input(1).data<T>();
  const T* bias = ctx.input(2).data<T>();
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c) {
      const T* xc = x.data<T>() + (n * channels + c) * volume;
      T* yc = y.data<T>() + (n * channels + c) * volume;
      double sum = 0, sum_sq = 0;
      for (int64_t i = 0; i < volume; ++i) sum += static_cast<double>(xc[i]);
      const double mean = volume ? sum / static_cast<double>(volume) : 0.0;
      for (int64_t i = 0; i < volume; ++i) {
        const double d = static_cast<double>(xc[i]) - mean;
        sum_sq += d * d;
      }
      const double var = volume ? sum_sq / static_cast<double>(volume) : 0.0;
      const double a = static_cast<double>(scale[c]) / std::sqrt(var + epsilon);
      const double b = static_cast<double>(bias[c]) - mean * a;
      for (int64_t i = 0; i < volume; ++i)
        yc[i] = static_cast<T>(static_cast<double>(xc[i]) * a + b);
    }
}

// ---- Gemm / MatMul ----

template <typename T>
void GemmImpl(KernelContext& ctx) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  const Tensor* c = ctx.optional_input(2);
  Tensor& y = ctx.output(0);
  const bool trans_a = ctx.attrs().GetInt("transA", 0) != 0;
  const bool trans_b = ctx.attrs().GetInt("transB", 0) != 0;
  const T alpha = static_cast<T>(ctx.attrs().GetFloat("alpha", 1.f));
  const T beta = static_cast<T>(ctx.attrs().GetFloat("beta", 1.f));
  const int64_t m = y.dim(0), n = y.dim(1), k = trans_a ? a.dim(0) : a.dim(1);
  T* yd = y.data<T>();
  const bool use_c = c != nullptr && beta != T(0);
  if (use_c) {
    // C broadcasts unidirectionally to [M, N].
    const int64_t c_rows = c->rank() == 2 ? c->dim(0) : 1;
    const int64_t c_cols = c->rank() >= 1 ? c->dim(c->rank() - 1) : 1;
    KILN_CHECK(c->rank() <= 2 && (c_rows == 1 || c_rows == m) && (c_cols == 1 || c_cols == n),
               "C ", c->TypeString(), " does not broadcast to [", m, ",", n, "]");
    const T* cd = c->data<T>();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        yd[i * n + j] = beta * cd[(c_rows == 1 ? 0 : i) * c_cols + (c_cols == 1 ? 0 : j)];
  } else {
    std::fill(yd, yd + y.numel(), T(0));
  }
  Gemm(trans_a, trans_b, m, n, k, alpha, a.data<T>(), a.dim(1), b.data<T>(), b.dim(1),
       use_c ? T(1) : T(0), yd, n);
}

template <typename T>
void MatMulImpl(const Tensor& a, const Tensor& b, Tensor& y) {
  std::vector<int64_t> a_dims = a.dims(), b_dims = b.dims();
  if (a_dims.size() == 1) a_dims.insert(a_dims.begin(), 1);
  if (b_dims.size() == 1) b_dims.push_back(1);
  const int64_t m = a_dims[a_dims.size() - 2], k = a_dims.back(), n = b_dims.back();
  KILN_CHECK(b_dims[b_dims.size() - 2] == k, "inner dims differ: ", a.TypeString(), " x ",
             b.TypeString());
  const std::vector<int64_t> a_batch(a_dims.begin(), a_dims.end() - 2);
  const std::vector<int64_t> b_batch(b_dims.begin(), b_dims.end() - 2);
  const std::vector<int64_t> batch = BroadcastDims(a_batch, b_batch);
  const int64_t batch_count = Product(batch);
  const T* ad = a.data<T>();
  const T* bd = b.data<T>();
  T* yd = y.data<T>();
  if (Product(b_batch) == 1 && Product(a_batch) == batch_count) {
    // A shared right operand (weights): one GEMM over all rows of A.
    Gemm(false, false, batch_count * m, n, k, T(1), ad, k, bd, n, T(0), yd, n);
    return;
  }
  // Element strides of each batch axis of A and B (0 where broadcast).
  const size_t rank = batch.size();
  std::vector<int64_t> a_strides(rank, 0), b_strides(rank, 0);
  int64_t a_step = m * k, b_step = k * n;
  for (size_t i = rank; i-- > 0;) {
    const size_t ai = i + a_batch.size() - rank, bi = i + b_batch.size() - rank;
    if (i >= rank - a_batch.size()) {
      if (a_batch[ai] != 1) a_strides[i] = a_step;
      a_step *= a_batch[ai];
    }
    if (i >= rank - b_batch.size()) {
      if (b_batch[bi] != 1) b_strides[i] = b_step;
      b_step *= b_batch[bi];
    }
  }
  std::vector<int64_t> index(rank, 0);
  int64_t a_offset = 0, b_offset = 0;
  for (int64_t item = 0; item < batch_count; ++item) {
    Gemm(false, false, m, n, k, T(1), ad + a_offset, k, bd + b_offset, n, T(0),
         yd + item * m * n, n);
    for (size_t i = rank; i-- > 0;) {
      a_offset += a_strides[i];
      b_offset += b_strides[i];
      if (++index[i] < batch[i]) break;
      a_offset -= a_strides[i] * batch[i];
      b_offset -= b_strides[i] * batch[i];
      index[i] = 0;
    }
  }
}

// ---- Einsum ----

// Advances a row-major multi-index over `dims`, keeping `offset` = sum of
// index * stride. Returns false after the last index.
bool Advance(std::vector<int64_t>& index, const std::vector<int64_t>& dims,
             const std::vector<int64_t>& strides, int64_t& offset) {
  for (size_t i = index.size(); i-- > 0;) {
    offset += strides[i];
    if (++index[i] < dims[i]) return true;
    offset -= strides[i] * dims[i];
    index[i] = 0;
  }
  return false;
}

// out[kept...] = sum over summed... of in[offset], offsets given by strides
// (0 strides broadcast, summed strides of a repeated label walk a diagonal).
template <typename T>
void GatherSum(const T* in, const std::vector<int64_t>& kept_dims,
               const std::vector<int64_t>& kept_strides, const std::vector<int64_t>& sum_dims,
               const std::vector<int64_t>& sum_strides, T* out) {
  if (Product(kept_dims) == 0) return;
  const bool empty_sum = Product(sum_dims) == 0;
  std::vector<int64_t> kept_index(kept_dims.size(), 0);
  int64_t kept_offset = 0;
  do {
    T acc = 0;
    if (!empty_sum) {
      std::vector<int64_t> sum_index(sum_dims.size(), 0);
      int64_t sum_offset = 0;
      do {
        acc += in[kept_offset + sum_offset];
      } while (Advance(sum_index, sum_dims, sum_strides, sum_offset));
    }
    *out++ = acc;
  } while (Advance(kept_index, kept_dims, kept_strides, kept_offset));
}

// An Einsum operand during evaluation: contiguous data with one distinct label per axis.
template <typename T>
struct EinsumTerm {
  std::vector<T> data;
  std::vector<int> labels;
  std::vector<int64_t> dims;
};

// A labelled view: the axes of a term (or raw input) with their strides.
struct LabelView {
  std::vector<int> labels;
  std::vector<int64_t> dims, strides;

  int Find(int label) const {
    for (size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == label) return static_cast<int>(i);
    return -1;
  }
};

LabelView ViewOf(const std::vector<int>& labels, const std::vector<int64_t>& dims) {
  LabelView v;
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  // A repeated label takes the diagonal: one axis whose stride sums the repeats.
  for (size_t i = 0; i < labels.size(); ++i) {
    const int existing = v.Find(labels[i]);
    if (existing >= 0) {
      KILN_CHECK(v.dims[static_cast<size_t>(existing)] == dims[i], "Einsum label repeated in ",
                 "one operand has sizes ", v.dims[static_cast<size_t>(existing)], " and ", dims[i]);
      v.strides[static_cast<size_t>(existing)] += strides[i];
      continue;
    }
    v.labels.push_back(labels[i]);
    v.dims.push_back(dims[i]);
    v.strides.push_back(strides[i]);
  }
  return v;
}

// Gathers `view` of `data` into a contiguous term with axes `order` (sizes
// `sizes`, broadcasting size-1 axes) summing every axis of view not in order.
template <typename T>
EinsumTerm<T> Arrange(const T* data, const LabelView& view, const std::vector<int>& order,
                      const std::vector<int64_t>& label_sizes) {
  EinsumTerm<T> term;
  std::vector<int64_t> kept_strides, sum_dims, sum_strides;
  for (int l : order) {
    const int i = view.Find(l);
    const int64_t size = label_sizes[static_cast<size_t>(l)];
    term.labels.push_back(l);
    term.dims.push_back(size);
    kept_strides.push_back(i < 0 || view.dims[static_cast<size_t>(i)] == 1
                               ? 0 : view.strides[static_cast<size_t>(i)]);
  }
  for (size_t i = 0; i < view.labels.size(); ++i)
    if (std::find(order.begin(), order.end(), view.labels[i]) == order.end()) {
      sum_dims.push_back(view.dims[i]);
      sum_strides.push_back(view.strides[i]);
    }
  term.data.resize(static_cast<size_t>(Product(term.dims)));
  GatherSum(data, term.dims, kept_strides, sum_dims, sum_strides, term.data.data());
  return term;
}

template <typename T>
void EinsumImpl(KernelContext& ctx) {
  std::vector<int> ranks;
  for (int i = 0; i < ctx.num_inputs(); ++i) ranks.push_back(ctx.input(i).rank());
  const nn::EinsumSpec spec = nn::ParseEinsum(ctx.attrs().GetString("equation"), ranks);
  // Label sizes across operands; size-1 dims broadcast.
  std::vector<int64_t> sizes(static_cast<size_t>(spec.num_labels), -1);
  for (size_t t = 0; t < spec.inputs.size(); ++t)
    for (size_t i = 0; i < spec.inputs[t].size(); ++i) {
      int64_t& s = sizes[static_cast<size_t>(spec.inputs[t][i])];
      const int64_t d = ctx.input(static_cast<int>(t)).dim(static_cast<int>(i));
      KILN_CHECK(s < 0 || s == d || s == 1 || d == 1, "Einsum operand ", t, " has size ", d,
                 " for a label of size ", s);
      if (s < 0 || s == 1) s = d;
    }
  // needed_after[t]: labels used by the output or by operands after t.
  const size_t count = spec.inputs.size();
  std::vector<std::vector<bool>> needed_after(count,
                                              std::vector<bool>(static_cast<size_t>(spec.num_labels)));
  std::vector<bool> needed(static_cast<size_t>(spec.num_labels), false);
  for (int l : spec.output) needed[static_cast<size_t>(l)] = true;
  for (size_t t = count; t-- > 0;) {
    needed_after[t] = needed;
    for (int l : spec.inputs[t]) needed[static_cast<size_t>(l)] = true;
  }
  auto view_of_input = [&](size_t t) {
    return ViewOf(spec.inputs[t], ctx.input(static_cast<int>(t)).dims());
  };
  // Operand 0 alone: keep the labels used later, diagonals taken, the rest summed.
  LabelView first = view_of_input(0);
  std::vector<int> keep;
  for (int l : first.labels)
    if (needed_after[0][static_cast<size_t>(l)]) keep.push_back(l);
  EinsumTerm<T> acc = Arrange(ctx.input(0).data<T>(), first, keep, sizes);

  for (size_t t = 1; t < count; ++t) {
    const LabelView a = ViewOf(acc.labels, acc.dims);
    const LabelView b = view_of_input(t);
    // Classify labels for one batched GEMM: [batch, m, k] x [batch, k, n].
    std::vector<int> batch, m_labels, k_labels, n_labels;
    for (int l : a.labels) {
      const bool in_b = b.Find(l) >= 0, kept = needed_after[t][static_cast<size_t>(l)];
      if (in_b) (kept ? batch : k_labels).push_back(l);
      else if (kept) m_labels.push_back(l);
    }
    for (int l : b.labels)
      if (a.Find(l) < 0 && needed_after[t][static_cast<size_t>(l)]) n_labels.push_back(l);
    auto concat = [](std::vector<int> x, const std::vector<int>& y, const std::vector<int>& z) {
      x.insert(x.end(), y.begin(), y.end());
      x.insert(x.end(), z.begin(), z.end());
      return x;
    };
    EinsumTerm<T> lhs = Arrange(acc.data.data(), a, concat(batch, m_labels, k_labels), sizes);
    EinsumTerm<T> rhs =
        Arrange(ctx.input(static_cast<int>(t)).data<T>(), b, concat(batch, k_labels, n_labels), sizes);
    auto product = [&](const std::vector<int>& labels) {
      int64_t p = 1;
      for (int l : labels) p *= sizes[static_cast<size_t>(l)];
      return p;
    };
    const int64_t batch_count = product(batch), m = product(m_labels), k = product(k_labels),
                  n = product(n_labels);
    EinsumTerm<T> next;
    next.labels = concat(batch, m_labels, n_labels);
    for (int l : next.labels) next.dims.push_back(sizes[static_cast<size_t>(l)]);
    next.data.assign(static_cast<size_t>(batch_count * m * n), T(0));
    for (int64_t i = 0; i < batch_count; ++i)
      Gemm(false, false, m, n, k, T(1), lhs.data.data() + i * m * k, k,
           rhs.data.data() + i * k * n, n, T(0), next.data.data() + i * m * n, n);
    acc = std::move(next);
  }
  // Every remaining label is an output label: permute into output order.
  EinsumTerm<T> result = Arrange(acc.data.data(), ViewOf(acc.labels, acc.dims), spec.output, sizes);
  Tensor& y = ctx.output(0);
  KILN_CHECK(static_cast<int64_t>(result.data.size()) == y.numel(), "Einsum result has ",
             result.data.size(), " elements, expected ", y.numel());
  std::copy(result.data.begin(), result.data.end(), y.data<T>());
}

// ---- Dispatch ----

// Calls fn(T{}) for float or double inputs (half types arrive widened).
template <typename Fn>
void DispatchFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported by this CPU kernel");
  }
}

}  // namespace

void RegisterNnCpuKernels(OpRegistry& registry) {
  using cpu::WithFloat32Compute;
  registry.Define("Conv").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { ConvImpl<decltype(t)>(ctx); });
  });
  registry.Define("ConvTranspose").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { ConvTransposeImpl<decltype(t)>(ctx); });
  });
  registry.Define("MaxPool").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    switch (ctx.input(0).dtype()) {
      case DType::kInt8: MaxPoolImpl<int8_t>(ctx); break;
      case DType::kUInt8: MaxPoolImpl<uint8_t>(ctx); break;
      default: DispatchFloat(ctx.input(0).dtype(), [&](auto t) { MaxPoolImpl<decltype(t)>(ctx); });
    }
  });
  registry.Define("AveragePool").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { AveragePoolImpl<decltype(t)>(ctx); });
  });
  registry.Define("GlobalAveragePool").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { GlobalPoolImpl<decltype(t)>(ctx, false); });
  });
  registry.Define("GlobalMaxPool").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    switch (ctx.input(0).dtype()) {
      case DType::kInt8: GlobalPoolImpl<int8_t>(ctx, true); break;
      case DType::kUInt8: GlobalPoolImpl<uint8_t>(ctx, true); break;
      default:
        DispatchFloat(ctx.input(0).dtype(), [&](auto t) { GlobalPoolImpl<decltype(t)>(ctx, true); });
    }
  });
  registry.Define("BatchNormalization").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { BatchNormImpl<decltype(t)>(ctx); });
  });
  registry.Define("InstanceNormalization").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    DispatchFloat(ctx.input(0).dtype(), [&](auto t) { InstanceNormImpl<decltype(t)>(ctx); });
  });
  registry.Define("Gemm").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    cpu::DispatchNumeric(ctx.input(0).dtype(), [&](auto t) { GemmImpl<decltype(t)>(ctx); });
  });
  registry.Define("MatMul").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    cpu::DispatchNumeric(ctx.input(0).dtype(), [&](auto t) {
      MatMulImpl<decltype(t)>(ctx.input(0), ctx.input(1), ctx.output(0));
    });
  });
  registry.Define("Einsum").cpu_kernel = WithFloat32Compute([](KernelContext& ctx) {
    cpu::DispatchNumeric(ctx.input(0).dtype(), [&](auto t) { EinsumImpl<decltype(t)>(ctx); });
  });
}

}  // namespace kiln
