#include "profile/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kiln/error.h"
#include "kiln/tensor.h"

namespace kiln::profile {

const char kKneeDefinition[] =
    "the knee is the last batch size before the first step where p50 latency grows by a larger "
    "factor than throughput, i.e. where a bigger batch starts to cost more latency than it buys "
    "throughput (the first peak of throughput/latency)";

std::vector<int64_t> ParseBatchList(const std::string& text) {
  const std::string example = " (expected batch sizes separated by commas, e.g. 1,2,4,8)";
  KILN_CHECK(!text.empty(), "--sweep: empty list of batch sizes", example);
  std::vector<int64_t> batches;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t first = item.find_first_not_of(' ');
    item = first == std::string::npos ? "" : item.substr(first, item.find_last_not_of(' ') - first + 1);
    KILN_CHECK(!item.empty(), "--sweep '", text, "': empty entry", example);
    KILN_CHECK(item.find_first_not_of("0123456789") == std::string::npos, "--sweep '", text, "': '",
               item, "' is not a batch size (a positive integer)", example);
    const int64_t batch = item.size() > 9 ? kMaxSweepBatch + 1 : std::stoll(item);
    KILN_CHECK(batch >= 1 && batch <= kMaxSweepBatch, "--sweep '", text, "': batch size ", item,
               " is out of range (1..", kMaxSweepBatch, ")");
    KILN_CHECK(batches.empty() || batch > batches.back(), "--sweep '", text,
               "': batch sizes must be strictly increasing (", batch, " comes after ",
               batches.back(), ")");
    batches.push_back(batch);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return batches;
}

namespace {

std::string DimName(const TensorDesc& d, size_t i) {
  return i < d.dim_names.size() ? d.dim_names[i] : std::string();
}

}  // namespace

std::map<std::string, std::vector<int64_t>> ShapesForBatch(
    const std::vector<TensorDesc>& inputs, const std::map<std::string, std::vector<int64_t>>& given,
    int64_t batch) {
  std::string names;
  for (const TensorDesc& d : inputs) names += (names.empty() ? "" : ", ") + d.name + d.ShapeString();
  auto find = [&](const std::string& name) -> const TensorDesc* {
    for (const TensorDesc& d : inputs)
      if (d.name == name) return &d;
    return nullptr;
  };
  // Sizes of named dynamic dims: the batch for dim-0 symbols, then what --shapes gives.
  std::map<std::string, int64_t> symbols;
  bool has_batch_dim = false;
  for (const TensorDesc& d : inputs) {
    if (d.dims.empty() || d.dims[0] >= 0) continue;
    has_batch_dim = true;
    if (!DimName(d, 0).empty()) symbols[DimName(d, 0)] = batch;
  }
  KILN_CHECK(has_batch_dim,
             "--sweep needs a model with a dynamic batch dim (dim 0 of an input), but every "
             "input's dim 0 is fixed: ",
             names);
  for (const auto& [name, dims] : given) {
    const TensorDesc* d = find(name);
    KILN_CHECK(d, "--shapes names '", name, "', which is not an input of the model (its inputs: ",
               names, ")");
    KILN_CHECK(dims.size() == d->dims.size(), "input '", name, "' has shape ", d->ShapeString(),
               " but --shapes gives ", DimsToString(dims));
    for (size_t i = 0; i < dims.size(); ++i) {
      if (d->dims[i] >= 0) {
        KILN_CHECK(d->dims[i] == dims[i], "input '", name, "' has shape ", d->ShapeString(),
                   "; --shapes gives ", DimsToString(dims), " (dim ", i, " is fixed by the model)");
        continue;
      }
      const std::string symbol = DimName(*d, i);
      if (i == 0 || symbol.empty()) continue;  // dim 0 takes the sweep's batch.
      auto [it, inserted] = symbols.emplace(symbol, dims[i]);
      KILN_CHECK(inserted || it->second == dims[i], "--shapes ", name, DimsToString(dims),
                 " sets dim '", symbol, "' to ", dims[i], ", but another input (or the sweep's "
                 "batch size) sets it to ", it->second);
    }
  }
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorDesc& d : inputs) {
    auto it = given.find(d.name);
    std::vector<int64_t> dims = it != given.end() ? it->second : d.dims;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (d.dims[i] >= 0) continue;
      if (i == 0) {
        dims[i] = batch;
      } else if (it == given.end()) {
        auto sym = symbols.find(DimName(d, i));
        dims[i] = !DimName(d, i).empty() && sym != symbols.end() ? sym->second : 1;
      }
    }
    shapes[d.name] = dims;
  }
  return shapes;
}

SweepAnalysis AnalyzeSweep(const std::vector<SweepPoint>& points) {
  SweepAnalysis a;
  a.throughput_gain.assign(points.size(), 0);
  a.latency_growth.assign(points.size(), 0);
  int previous = -1;
  for (size_t i = 0; i < points.size(); ++i) {
    const SweepPoint& p = points[i];
    if (!p.ok) continue;
    ++a.succeeded;
    if (a.best < 0 || p.samples_per_s > points[static_cast<size_t>(a.best)].samples_per_s)
      a.best = static_cast<int>(i);
    if (previous >= 0) {
      const SweepPoint& q = points[static_cast<size_t>(previous)];
      if (q.samples_per_s > 0 && q.p50_ms > 0) {
        a.throughput_gain[i] = p.samples_per_s / q.samples_per_s;
        a.latency_growth[i] = p.p50_ms / q.p50_ms;
        // The first step that costs more latency than it buys throughput
        // ends the knee search: the knee is the point before it.
        if (a.knee < 0 && a.throughput_gain[i] < a.latency_growth[i]) a.knee = previous;
      }
    }
    previous = static_cast<int>(i);
  }
  return a;
}

namespace {

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

std::string PadLeft(const std::string& text, size_t width) {
  return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
}

std::string Ratio(double r) { return r > 0 ? Fixed(r, 2) + "x" : "-"; }

std::string MiB(size_t bytes) { return Fixed(static_cast<double>(bytes) / (1024.0 * 1024.0), 1) + " MiB"; }

// Latencies from microseconds to seconds keep 3-4 significant digits.
std::string Ms(double ms) { return Fixed(ms, ms < 10 ? 4 : ms < 100 ? 3 : 2); }

}  // namespace

std::string FormatSweepTable(const std::vector<SweepPoint>& points, const SweepAnalysis& a) {
  std::string out = StrCat(PadLeft("batch", 7), PadLeft("p50 ms", 11), PadLeft("p99 ms", 11),
                           PadLeft("samples/s", 14), PadLeft("thr gain", 10),
                           PadLeft("lat growth", 12), PadLeft("device mem", 14), "\n");
  for (size_t i = 0; i < points.size(); ++i) {
    const SweepPoint& p = points[i];
    out += PadLeft(std::to_string(p.batch), 7);
    if (!p.ok) {
      out += StrCat("   FAILED: ", p.error.empty() ? "unknown error" : p.error, "\n");
      continue;
    }
    out += StrCat(PadLeft(Ms(p.p50_ms), 11), PadLeft(Ms(p.p99_ms), 11),
                  PadLeft(Fixed(p.samples_per_s, 1), 14), PadLeft(Ratio(a.throughput_gain[i]), 10),
                  PadLeft(Ratio(a.latency_growth[i]), 12), PadLeft(MiB(p.device_bytes()), 14));
    std::string marks;
    if (static_cast<int>(i) == a.best) marks += " best";
    if (static_cast<int>(i) == a.knee) marks += marks.empty() ? " knee" : ", knee";
    if (!marks.empty()) out += "  <-" + marks;
    out += "\n";
  }
  out += "(device mem: engine weights + one context's activations and workspace; thr gain and "
         "lat growth: samples/s and p50 relative to the previous successful row)\n";
  if (a.best < 0) {
    out += "no batch size succeeded\n";
    return out;
  }
  const SweepPoint& best = points[static_cast<size_t>(a.best)];
  out += StrCat("best throughput: batch ", best.batch, ", ", Fixed(best.samples_per_s, 1),
                " samples/s (p50 ", Ms(best.p50_ms), " ms)\n");
  if (a.knee >= 0) {
    const SweepPoint& knee = points[static_cast<size_t>(a.knee)];
    out += StrCat("knee: batch ", knee.batch, ", ", Fixed(knee.samples_per_s, 1), " samples/s (",
                  Fixed(100 * knee.samples_per_s / best.samples_per_s, 0),
                  "% of the best) at p50 ", Ms(knee.p50_ms), " ms\n");
  } else if (a.succeeded < 2) {
    out += "knee: needs at least two successful batch sizes\n";
  } else {
    out += "knee: not reached up to the largest successful batch size (latency never grew by a "
           "larger factor than throughput; sweep larger batches)\n";
  }
  out += StrCat("  (", kKneeDefinition, ")\n");
  return out;
}

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

namespace {

// The smallest 1, 2 or 5 x 10^k at or above `value` (axis maxima).
double NiceCeil(double value) {
  if (!(value > 0) || !std::isfinite(value)) return 1;
  const double scale = std::pow(10.0, std::floor(std::log10(value)));
  for (double step : {1.0, 2.0, 5.0, 10.0})
    if (value <= step * scale * (1 + 1e-9)) return step * scale;
  return 10 * scale;
}

std::string G(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%g", value);
  return buffer;
}

// Tick labels: 1500, 25k, 1.2M.
std::string Short(double value) {
  if (value >= 1e6) return G(value / 1e6) + "M";
  if (value >= 1e4) return G(value / 1e3) + "k";
  return G(value);
}

std::string C(double coordinate) { return Fixed(coordinate, 1); }

}  // namespace

std::string SweepSvg(const std::vector<SweepPoint>& points, const SweepAnalysis& a,
                     const std::string& title) {
  constexpr double kWidth = 860, kHeight = 500, kLeft = 90, kRight = 90, kTop = 56, kBottom = 70;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;
  constexpr double kLegendRight = kLeft + 200;  // The legend's box, top left of the plot.
  const char* kThroughputColor = "#1f77b4";
  const char* kLatencyColor = "#ff7f0e";
  const char* kFailedColor = "#d62728";
  const char* kBestColor = "#2ca02c";

  double x_lo = 0, x_hi = 0, max_throughput = 0, max_latency = 0;
  bool any = false;
  for (const SweepPoint& p : points) {
    if (p.batch < 1) continue;
    const double x = std::log2(static_cast<double>(p.batch));
    x_lo = any ? std::min(x_lo, x) : x;
    x_hi = any ? std::max(x_hi, x) : x;
    any = true;
    if (!p.ok) continue;
    max_throughput = std::max(max_throughput, p.samples_per_s);
    max_latency = std::max({max_latency, p.p50_ms, p.p99_ms});
  }
  if (x_hi - x_lo < 1e-9) {  // One batch size (or none): a two-octave window around it.
    x_lo -= 1;
    x_hi += 1;
  }
  const double pad = std::max(0.25, 0.03 * (x_hi - x_lo));
  const double throughput_top = NiceCeil(max_throughput * 1.05);
  const double latency_top = NiceCeil(max_latency * 1.05);
  auto X = [&](int64_t batch) {
    return kLeft + (std::log2(static_cast<double>(batch)) - x_lo + pad) / (x_hi - x_lo + 2 * pad) * kPlotW;
  };
  auto YThroughput = [&](double v) { return kTop + kPlotH - v / throughput_top * kPlotH; };
  auto YLatency = [&](double v) { return kTop + kPlotH - v / latency_top * kPlotH; };
  auto Point = [&](const SweepPoint& p) { return p.ok && p.batch >= 1; };

  std::string s;
  s += StrCat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", kWidth, "\" height=\"", kHeight,
              "\" viewBox=\"0 0 ", kWidth, " ", kHeight,
              "\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\">\n");
  s += StrCat("<title>", XmlEscape(title), "</title>\n");
  s += StrCat("<rect x=\"0\" y=\"0\" width=\"", kWidth, "\" height=\"", kHeight, "\" fill=\"white\"/>\n");
  s += StrCat("<text class=\"title\" x=\"", C(kWidth / 2), "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">",
              XmlEscape(title), "</text>\n");

  // Grid, ticks and tick labels: throughput on the left, latency on the right.
  constexpr int kDivisions = 5;
  s += "<g class=\"grid\" stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
  for (int k = 1; k < kDivisions; ++k) {
    const double y = kTop + kPlotH - kPlotH * k / kDivisions;
    s += StrCat("<line x1=\"", C(kLeft), "\" y1=\"", C(y), "\" x2=\"", C(kLeft + kPlotW), "\" y2=\"", C(y), "\"/>\n");
  }
  s += "</g>\n";
  s += StrCat("<g class=\"y-axis-throughput\" font-size=\"11\" text-anchor=\"end\" fill=\"", kThroughputColor, "\">\n");
  for (int k = 0; k <= kDivisions; ++k) {
    const double v = throughput_top * k / kDivisions;
    s += StrCat("<text x=\"", C(kLeft - 6), "\" y=\"", C(YThroughput(v) + 4), "\">", Short(v), "</text>\n");
  }
  s += "</g>\n";
  s += StrCat("<g class=\"y-axis-latency\" font-size=\"11\" text-anchor=\"start\" fill=\"", kLatencyColor, "\">\n");
  for (int k = 0; k <= kDivisions; ++k) {
    const double v = latency_top * k / kDivisions;
    s += StrCat("<text x=\"", C(kLeft + kPlotW + 6), "\" y=\"", C(YLatency(v) + 4), "\">", Short(v), "</text>\n");
  }
  s += "</g>\n";
  s += "<g class=\"x-axis\" font-size=\"11\" text-anchor=\"middle\">\n";
  for (const SweepPoint& p : points) {
    if (p.batch < 1) continue;
    const double x = X(p.batch);
    s += StrCat("<line x1=\"", C(x), "\" y1=\"", C(kTop + kPlotH), "\" x2=\"", C(x), "\" y2=\"",
                C(kTop + kPlotH + 5), "\" stroke=\"#444\"/>\n");
    s += StrCat("<text x=\"", C(x), "\" y=\"", C(kTop + kPlotH + 18), "\"",
                p.ok ? "" : StrCat(" fill=\"", kFailedColor, "\""), ">", p.batch, "</text>\n");
  }
  s += "</g>\n";
  s += StrCat("<rect class=\"frame\" x=\"", C(kLeft), "\" y=\"", C(kTop), "\" width=\"", C(kPlotW),
              "\" height=\"", C(kPlotH), "\" fill=\"none\" stroke=\"#444\"/>\n");

  // Axis titles, with units.
  s += StrCat("<text class=\"x-label\" x=\"", C(kLeft + kPlotW / 2), "\" y=\"", C(kHeight - 24),
              "\" text-anchor=\"middle\">batch size (log2 scale)</text>\n");
  s += StrCat("<text class=\"y-label-throughput\" transform=\"translate(24 ", C(kTop + kPlotH / 2),
              ") rotate(-90)\" text-anchor=\"middle\" fill=\"", kThroughputColor,
              "\">throughput (samples/s)</text>\n");
  s += StrCat("<text class=\"y-label-latency\" transform=\"translate(", C(kWidth - 24), " ",
              C(kTop + kPlotH / 2), ") rotate(90)\" text-anchor=\"middle\" fill=\"", kLatencyColor,
              "\">latency per inference (ms)</text>\n");

  if (a.succeeded == 0) {
    s += StrCat("<text class=\"no-data\" x=\"", C(kLeft + kPlotW / 2), "\" y=\"", C(kTop + kPlotH / 2),
                "\" text-anchor=\"middle\" fill=\"", kFailedColor, "\">no batch size succeeded</text>\n");
  }

  // The knee: a dashed vertical line under the curves.
  if (a.knee >= 0) {
    const SweepPoint& knee = points[static_cast<size_t>(a.knee)];
    const double x = X(knee.batch);
    s += StrCat("<g class=\"knee\">\n<title>knee: batch ", knee.batch, ": ", XmlEscape(kKneeDefinition),
                "</title>\n<line x1=\"", C(x), "\" y1=\"", C(kTop), "\" x2=\"", C(x), "\" y2=\"",
                C(kTop + kPlotH), "\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
                "<text x=\"", C(x + 5), "\" y=\"", C(x < kLegendRight ? kTop + 76 : kTop + 14),
                "\" fill=\"#333\">knee: batch ",
                knee.batch, "</text>\n</g>\n");
  }

  // Curves: throughput, p50 and p99 latency over the successful points.
  auto polyline = [&](const char* cls, const char* color, const char* dash, auto y_of) {
    std::string coords;
    int n = 0;
    for (const SweepPoint& p : points) {
      if (!Point(p)) continue;
      coords += StrCat(n++ ? " " : "", C(X(p.batch)), ",", C(y_of(p)));
    }
    std::string out;
    if (n >= 2)
      out += StrCat("<polyline class=\"", cls, "\" fill=\"none\" stroke=\"", color,
                    "\" stroke-width=\"2\"", dash[0] ? StrCat(" stroke-dasharray=\"", dash, "\"") : "",
                    " points=\"", coords, "\"/>\n");
    for (const SweepPoint& p : points) {
      if (!Point(p)) continue;
      out += StrCat("<circle class=\"", cls, "-point\" cx=\"", C(X(p.batch)), "\" cy=\"", C(y_of(p)),
                    "\" r=\"3\" fill=\"", color, "\"><title>batch ", p.batch, ": ",
                    Fixed(p.samples_per_s, 1), " samples/s, p50 ", Ms(p.p50_ms), " ms, p99 ",
                    Ms(p.p99_ms), " ms</title></circle>\n");
    }
    return out;
  };
  s += polyline("p99", kLatencyColor, "6 4", [&](const SweepPoint& p) { return YLatency(p.p99_ms); });
  s += polyline("p50", kLatencyColor, "", [&](const SweepPoint& p) { return YLatency(p.p50_ms); });
  s += polyline("throughput", kThroughputColor, "",
                [&](const SweepPoint& p) { return YThroughput(p.samples_per_s); });

  // The best batch: a ring around its throughput point.
  if (a.best >= 0) {
    const SweepPoint& best = points[static_cast<size_t>(a.best)];
    const double x = X(best.batch), y = YThroughput(best.samples_per_s);
    const double label_x = std::clamp(x, kLeft + 60, kLeft + kPlotW - 60);
    s += StrCat("<g class=\"best\">\n<circle cx=\"", C(x), "\" cy=\"", C(y),
                "\" r=\"8\" fill=\"none\" stroke=\"", kBestColor, "\" stroke-width=\"2.5\"/>\n",
                "<text x=\"", C(label_x), "\" y=\"", C(y - 14 < kTop + 14 ? y + 24 : y - 14),
                "\" text-anchor=\"middle\" fill=\"", kBestColor, "\">best: batch ", best.batch, ", ",
                Fixed(best.samples_per_s, 0), " samples/s</text>\n</g>\n");
  }

  // Failed batch sizes: a red cross on the x axis.
  for (const SweepPoint& p : points) {
    if (p.ok || p.batch < 1) continue;
    const double x = X(p.batch), y = kTop + kPlotH;
    s += StrCat("<g class=\"failed\" stroke=\"", kFailedColor, "\" stroke-width=\"2\">\n<title>batch ",
                p.batch, " failed: ", XmlEscape(p.error), "</title>\n", "<line x1=\"", C(x - 6),
                "\" y1=\"", C(y - 6), "\" x2=\"", C(x + 6), "\" y2=\"", C(y + 6), "\"/>\n",
                "<line x1=\"", C(x - 6), "\" y1=\"", C(y + 6), "\" x2=\"", C(x + 6), "\" y2=\"",
                C(y - 6), "\"/>\n</g>\n");
  }

  // Legend, top left inside the plot (small batches: low throughput, low latency).
  const double lx = kLeft + 12, ly = kTop + 16;
  s += "<g class=\"legend\" font-size=\"11\">\n";
  struct Entry {
    const char* label;
    const char* color;
    const char* dash;
  };
  const Entry entries[] = {{"throughput (left axis)", kThroughputColor, ""},
                           {"p50 latency (right axis)", kLatencyColor, ""},
                           {"p99 latency (right axis)", kLatencyColor, "6 4"}};
  for (int k = 0; k < 3; ++k) {
    const double y = ly + 16 * k;
    s += StrCat("<line x1=\"", C(lx), "\" y1=\"", C(y), "\" x2=\"", C(lx + 24), "\" y2=\"", C(y),
                "\" stroke=\"", entries[k].color, "\" stroke-width=\"2\"",
                entries[k].dash[0] ? StrCat(" stroke-dasharray=\"", entries[k].dash, "\"") : "", "/>\n");
    s += StrCat("<text x=\"", C(lx + 30), "\" y=\"", C(y + 4), "\">", entries[k].label, "</text>\n");
  }
  s += "</g>\n</svg>\n";
  return s;
}

}  // namespace kiln::profile
