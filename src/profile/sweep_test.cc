// Batch-size sweep logic on synthetic measurements: list parsing, per-batch
// shapes, best/knee detection on curves with hand-computed answers, the
// table, and the SVG (checked by a small, strict XML parser below).
#include "profile/sweep.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/error.h"

namespace kiln::profile {
namespace {

// ---- A minimal, strict XML reader: enough to prove the SVG is well formed
// (one root, matching tags, quoted attributes without duplicates, only the
// predefined or numeric entities, no raw '<' or '&' in text) and to query it.
struct XmlElement {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::string text;  // Direct character data, entities decoded.
  std::vector<std::unique_ptr<XmlElement>> children;
};

class XmlReader {
 public:
  explicit XmlReader(const std::string& text) : s_(text) {}

  // The root element; fails the test (and returns null) on malformed input.
  std::unique_ptr<XmlElement> Parse() {
    SkipSpace();
    if (s_.compare(pos_, 5, "<?xml") == 0) {
      size_t end = s_.find("?>", pos_);
      if (end == std::string::npos) return Error("unterminated XML declaration");
      pos_ = end + 2;
    }
    SkipSpace();
    auto root = ParseElement();
    if (!root) return nullptr;
    SkipSpace();
    if (pos_ != s_.size()) return Error("content after the root element");
    return root;
  }
  const std::string& error() const { return error_; }

 private:
  std::unique_ptr<XmlElement> Error(const std::string& what) {
    if (error_.empty()) error_ = what + " at offset " + std::to_string(pos_);
    return nullptr;
  }
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  static bool NameChar(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' || c == '.';
  }
  std::string ParseName() {
    size_t start = pos_;
    while (pos_ < s_.size() && NameChar(s_[pos_])) ++pos_;
    return s_.substr(start, pos_ - start);
  }
  // Decodes character data up to `stop`; false on a bad '&' or a raw '<'.
  bool Decode(const std::string& raw, std::string& out) {
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '<') return false;
      if (raw[i] != '&') {
        out += raw[i];
        continue;
      }
      size_t semi = raw.find(';', i);
      if (semi == std::string::npos) return false;
      std::string entity = raw.substr(i + 1, semi - i - 1);
      static const std::map<std::string, char> kNamed = {
          {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
      if (kNamed.count(entity)) {
        out += kNamed.at(entity);
      } else if (entity.size() > 1 && entity[0] == '#') {
        out += '?';  // Numeric references are legal; their value does not matter here.
      } else {
        return false;
      }
      i = semi;
    }
    return true;
  }
  std::unique_ptr<XmlElement> ParseElement() {
    if (pos_ >= s_.size() || s_[pos_] != '<') return Error("expected '<'");
    ++pos_;
    auto element = std::make_unique<XmlElement>();
    element->name = ParseName();
    if (element->name.empty()) return Error("empty element name");
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size()) return Error("unterminated start tag <" + element->name);
      if (s_.compare(pos_, 2, "/>") == 0) {
        pos_ += 2;
        return element;
      }
      if (s_[pos_] == '>') {
        ++pos_;
        break;
      }
      std::string attribute = ParseName();
      if (attribute.empty()) return Error("bad attribute in <" + element->name);
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '=') return Error("attribute without '='");
      ++pos_;
      SkipSpace();
      if (pos_ >= s_.size() || (s_[pos_] != '"' && s_[pos_] != '\'')) return Error("unquoted attribute");
      char quote = s_[pos_++];
      size_t end = s_.find(quote, pos_);
      if (end == std::string::npos) return Error("unterminated attribute value");
      std::string value;
      if (!Decode(s_.substr(pos_, end - pos_), value)) return Error("bad attribute value");
      pos_ = end + 1;
      if (!element->attributes.emplace(attribute, value).second) return Error("duplicate attribute " + attribute);
    }
    // Content: character data and child elements until the matching end tag.
    while (true) {
      size_t lt = s_.find('<', pos_);
      if (lt == std::string::npos) return Error("missing </" + element->name + ">");
      if (!Decode(s_.substr(pos_, lt - pos_), element->text)) return Error("bad character data");
      pos_ = lt;
      if (s_.compare(pos_, 2, "</") == 0) {
        pos_ += 2;
        std::string name = ParseName();
        if (name != element->name) return Error("</" + name + "> closes <" + element->name + ">");
        SkipSpace();
        if (pos_ >= s_.size() || s_[pos_] != '>') return Error("bad end tag");
        ++pos_;
        return element;
      }
      auto child = ParseElement();
      if (!child) return nullptr;
      element->children.push_back(std::move(child));
    }
  }

  const std::string s_;
  size_t pos_ = 0;
  std::string error_;
};

std::unique_ptr<XmlElement> ParseXml(const std::string& text) {
  XmlReader reader(text);
  auto root = reader.Parse();
  EXPECT_TRUE(root) << "malformed XML: " << reader.error();
  return root;
}

void Collect(const XmlElement& e, const std::string& name, std::vector<const XmlElement*>& out) {
  if (e.name == name) out.push_back(&e);
  for (const auto& c : e.children) Collect(*c, name, out);
}
std::vector<const XmlElement*> Find(const XmlElement& root, const std::string& name,
                                    const std::string& cls = "") {
  std::vector<const XmlElement*> all, out;
  Collect(root, name, all);
  for (const XmlElement* e : all) {
    auto it = e->attributes.find("class");
    if (cls.empty() || (it != e->attributes.end() && it->second == cls)) out.push_back(e);
  }
  return out;
}
// All text under an element, children included.
std::string AllText(const XmlElement& e) {
  std::string s = e.text;
  for (const auto& c : e.children) s += AllText(*c);
  return s;
}

// No attribute (coordinates, sizes) and no tick label holds a NaN or an infinity.
void ExpectFiniteNumbers(const XmlElement& e) {
  for (const auto& [name, value] : e.attributes)
    EXPECT_TRUE(value.find("nan") == std::string::npos && value.find("inf") == std::string::npos)
        << e.name << " " << name << "=\"" << value << "\"";
  auto cls = e.attributes.find("class");
  if (cls != e.attributes.end() && cls->second.rfind("y-axis", 0) == 0) {
    const std::string text = AllText(e);
    EXPECT_TRUE(text.find("nan") == std::string::npos && text.find("inf") == std::string::npos) << text;
  }
  for (const auto& c : e.children) ExpectFiniteNumbers(*c);
}

TEST(XmlReaderTest, RejectsMalformedDocuments) {
  for (const char* bad : {"<a><b></a></b>", "<a x=1/>", "<a>&bogus;</a>", "<a>1 < 2</a>",
                          "<a x=\"1\" x=\"2\"/>", "<a/><b/>", "<a>"}) {
    XmlReader reader(bad);
    EXPECT_FALSE(reader.Parse()) << bad;
  }
  XmlReader good("<?xml version=\"1.0\"?>\n<a k='v'><b>x &amp; y</b><c/></a>\n");
  auto root = good.Parse();
  ASSERT_TRUE(root) << good.error();
  EXPECT_EQ(AllText(*root), "x & y");
}

// ---- ParseBatchList

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(SweepTest, ParsesBatchLists) {
  EXPECT_EQ(ParseBatchList("1,2,4,8,16,32,64,128,256,512"),
            (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512}));
  EXPECT_EQ(ParseBatchList("3"), (std::vector<int64_t>{3}));
  EXPECT_EQ(ParseBatchList("1, 6 ,24"), (std::vector<int64_t>{1, 6, 24}));

  EXPECT_NE(ErrorOf([] { ParseBatchList(""); }).find("empty list"), std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("1,,4"); }).find("empty entry"), std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("1,2,"); }).find("empty entry"), std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("1,two,4"); }).find("'two' is not a batch size"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("-1,2"); }).find("'-1' is not a batch size"), std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("0,2"); }).find("out of range"), std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("1,99999999999999999999"); }).find("out of range"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("1,8,4"); }).find("strictly increasing (4 comes after 8)"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseBatchList("2,2"); }).find("strictly increasing"), std::string::npos);
}

// ---- ShapesForBatch

TensorDesc Input(const std::string& name, std::vector<int64_t> dims, std::vector<std::string> names) {
  TensorDesc d;
  d.name = name;
  d.dtype = DType::kFloat32;
  d.dims = std::move(dims);
  d.dim_names = std::move(names);
  return d;
}

TEST(SweepTest, BatchGoesToEveryDynamicFirstDim) {
  // ResNet-like: one image input.
  std::vector<TensorDesc> image = {Input("input", {-1, 3, 224, 224}, {"batch", "", "", ""})};
  auto shapes = ShapesForBatch(image, {}, 64);
  EXPECT_EQ(shapes.at("input"), (std::vector<int64_t>{64, 3, 224, 224}));

  // BERT-like: two inputs share the batch and sequence symbols; --shapes for
  // one of them sets the sequence length of both; its batch is replaced.
  std::vector<TensorDesc> bert = {Input("input_ids", {-1, -1}, {"batch", "seq"}),
                                  Input("attention_mask", {-1, -1}, {"batch", "seq"}),
                                  Input("scale", {1}, {""})};
  shapes = ShapesForBatch(bert, {{"input_ids", {1, 128}}}, 16);
  EXPECT_EQ(shapes.at("input_ids"), (std::vector<int64_t>{16, 128}));
  EXPECT_EQ(shapes.at("attention_mask"), (std::vector<int64_t>{16, 128}));
  EXPECT_EQ(shapes.at("scale"), (std::vector<int64_t>{1}));
  // Both given (as bench.md's BERT rows do): the same.
  shapes = ShapesForBatch(bert, {{"input_ids", {1, 128}}, {"attention_mask", {1, 128}}}, 4);
  EXPECT_EQ(shapes.at("attention_mask"), (std::vector<int64_t>{4, 128}));
  // Unnamed or unbound dynamic dims become 1, as in a plain build.
  std::vector<TensorDesc> loose = {Input("x", {-1, -1, 8}, {"", "", ""})};
  EXPECT_EQ(ShapesForBatch(loose, {}, 2).at("x"), (std::vector<int64_t>{2, 1, 8}));
  // A missing dim_names vector is tolerated.
  std::vector<TensorDesc> bare = {Input("x", {-1, 5}, {})};
  EXPECT_EQ(ShapesForBatch(bare, {}, 3).at("x"), (std::vector<int64_t>{3, 5}));
}

TEST(SweepTest, ShapesForBatchRejectsWhatCannotBeSwept) {
  std::vector<TensorDesc> fixed = {Input("input", {1, 3, 224, 224}, {"", "", "", ""})};
  EXPECT_NE(ErrorOf([&] { ShapesForBatch(fixed, {}, 8); }).find("dynamic batch dim"), std::string::npos);
  std::vector<TensorDesc> bert = {Input("input_ids", {-1, -1}, {"batch", "seq"}),
                                  Input("attention_mask", {-1, -1}, {"batch", "seq"})};
  EXPECT_NE(ErrorOf([&] { ShapesForBatch(bert, {{"ids", {1, 128}}}, 8); })
                .find("'ids', which is not an input"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { ShapesForBatch(bert, {{"input_ids", {1, 128, 1}}}, 8); }).find("input 'input_ids'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              ShapesForBatch(bert, {{"input_ids", {1, 128}}, {"attention_mask", {1, 64}}}, 8);
            }).find("dim 'seq' to 128, but another input (or the sweep's batch size) sets it to 64"),
            std::string::npos);
  std::vector<TensorDesc> image = {Input("input", {-1, 3, 224, 224}, {"batch", "", "", ""})};
  EXPECT_NE(ErrorOf([&] { ShapesForBatch(image, {{"input", {1, 4, 224, 224}}}, 8); })
                .find("dim 1 is fixed by the model"),
            std::string::npos);
}

// ---- AnalyzeSweep

// A GPU that costs a fixed 1 ms per inference plus 1/32 ms per sample:
// latency(b) = 1 + b/32, throughput(b) = 1000 b / latency(b).
SweepPoint Affine(int64_t batch) {
  SweepPoint p;
  p.batch = batch;
  p.ok = true;
  p.p50_ms = 1.0 + static_cast<double>(batch) / 32.0;
  p.p99_ms = p.p50_ms * 1.1;
  p.samples_per_s = 1000.0 * static_cast<double>(batch) / p.p50_ms;
  p.weight_bytes = 20 << 20;
  p.context_bytes = static_cast<size_t>(batch) << 20;
  return p;
}

std::vector<SweepPoint> PowersOfTwo(int64_t last) {
  std::vector<SweepPoint> points;
  for (int64_t b = 1; b <= last; b *= 2) points.push_back(Affine(b));
  return points;
}

TEST(SweepTest, KneeAndBestOnAnAffineLatencyCurve) {
  // Doubling b multiplies latency by (32 + 2b) / (32 + b) and throughput by 2
  // over that; latency outgrows throughput once the factor passes sqrt(2):
  // b=16 -> 32 gives 64/48 = 1.33 (still worth it), b=32 -> 64 gives 96/64 =
  // 1.5: the knee is 32. Throughput rises monotonically: the best is 512.
  std::vector<SweepPoint> points = PowersOfTwo(512);
  SweepAnalysis a = AnalyzeSweep(points);
  EXPECT_EQ(a.succeeded, 10);
  ASSERT_GE(a.knee, 0);
  EXPECT_EQ(points[static_cast<size_t>(a.knee)].batch, 32);
  EXPECT_EQ(points[static_cast<size_t>(a.best)].batch, 512);
  // Ratios against the previous row, hand-computed for 32 -> 64.
  EXPECT_EQ(a.throughput_gain[0], 0);
  EXPECT_NEAR(a.latency_growth[6], 3.0 / 2.0, 1e-12);
  EXPECT_NEAR(a.throughput_gain[6], 2.0 / 1.5, 1e-12);

  // Independent check of the equivalence the definition states: the knee is
  // the first local maximum of throughput / latency.
  size_t first_peak = 0;
  while (first_peak + 1 < points.size() &&
         points[first_peak + 1].samples_per_s / points[first_peak + 1].p50_ms >=
             points[first_peak].samples_per_s / points[first_peak].p50_ms)
    ++first_peak;
  EXPECT_EQ(static_cast<size_t>(a.knee), first_peak);
}

TEST(SweepTest, BestIsThePeakWhenThroughputFallsAndTiesGoToTheSmallerBatch) {
  std::vector<SweepPoint> points = PowersOfTwo(256);
  SweepPoint slow = Affine(512);
  slow.samples_per_s = points.back().samples_per_s * 0.8;  // Past the memory-bandwidth cliff.
  slow.p50_ms = 1000.0 * 512 / slow.samples_per_s;
  points.push_back(slow);
  SweepAnalysis a = AnalyzeSweep(points);
  EXPECT_EQ(points[static_cast<size_t>(a.best)].batch, 256);
  EXPECT_EQ(points[static_cast<size_t>(a.knee)].batch, 32);

  // A flat throughput plateau: the first batch to reach it is the best.
  std::vector<SweepPoint> flat = {Affine(1), Affine(2), Affine(4)};
  flat[2].samples_per_s = flat[1].samples_per_s;
  EXPECT_EQ(AnalyzeSweep(flat).best, 1);
}

TEST(SweepTest, FailedRowsAreSkippedAndRatiosUseThePreviousSuccess) {
  std::vector<SweepPoint> points = PowersOfTwo(512);
  points[3].ok = false;  // batch 8
  points[3].error = "cudaMalloc: out of memory";
  points[9].ok = false;  // batch 512
  points[9].error = "out of memory";
  SweepAnalysis a = AnalyzeSweep(points);
  EXPECT_EQ(a.succeeded, 8);
  EXPECT_EQ(a.throughput_gain[3], 0);
  EXPECT_EQ(a.latency_growth[3], 0);
  // 16 against 4: latency (1 + 16/32) / (1 + 4/32) = 1.5 / 1.125.
  EXPECT_NEAR(a.latency_growth[4], 1.5 / 1.125, 1e-12);
  EXPECT_NEAR(a.throughput_gain[4], 4 * 1.125 / 1.5, 1e-12);
  EXPECT_EQ(points[static_cast<size_t>(a.best)].batch, 256);
  EXPECT_EQ(points[static_cast<size_t>(a.knee)].batch, 32);

  std::string table = FormatSweepTable(points, a);
  EXPECT_NE(table.find("      8   FAILED: cudaMalloc: out of memory"), std::string::npos) << table;
  EXPECT_NE(table.find("    512   FAILED: out of memory"), std::string::npos) << table;
  EXPECT_NE(table.find("best throughput: batch 256"), std::string::npos) << table;
  EXPECT_NE(table.find("knee: batch 32"), std::string::npos) << table;
}

TEST(SweepTest, EdgeCasesOneBatchNoneSucceededAndKneeNotReached) {
  std::vector<SweepPoint> one = {Affine(8)};
  SweepAnalysis a = AnalyzeSweep(one);
  EXPECT_EQ(a.best, 0);
  EXPECT_EQ(a.knee, -1);
  std::string table = FormatSweepTable(one, a);
  EXPECT_NE(table.find("best throughput: batch 8"), std::string::npos) << table;
  EXPECT_NE(table.find("knee: needs at least two successful batch sizes"), std::string::npos) << table;

  std::vector<SweepPoint> failed = {Affine(1), Affine(2)};
  for (SweepPoint& p : failed) {
    p.ok = false;
    p.error = "no";
  }
  a = AnalyzeSweep(failed);
  EXPECT_EQ(a.best, -1);
  EXPECT_EQ(a.knee, -1);
  EXPECT_NE(FormatSweepTable(failed, a).find("no batch size succeeded"), std::string::npos);

  // Latency flat over the range (launch-bound): every doubling pays off.
  std::vector<SweepPoint> flat = PowersOfTwo(16);
  for (SweepPoint& p : flat) {
    p.p50_ms = 2.0;
    p.samples_per_s = 500.0 * static_cast<double>(p.batch);
  }
  a = AnalyzeSweep(flat);
  EXPECT_EQ(a.knee, -1);
  EXPECT_EQ(flat[static_cast<size_t>(a.best)].batch, 16);
  EXPECT_NE(FormatSweepTable(flat, a).find("knee: not reached"), std::string::npos);
}

TEST(SweepTest, TableRowsCarryEveryColumnAndTheMarks) {
  std::vector<SweepPoint> points = PowersOfTwo(64);
  SweepAnalysis a = AnalyzeSweep(points);
  std::string table = FormatSweepTable(points, a);
  for (const char* column : {"batch", "p50 ms", "p99 ms", "samples/s", "thr gain", "lat growth", "device mem"})
    EXPECT_NE(table.find(column), std::string::npos) << column;
  // Batch 32: p50 2 ms, p99 2.2 ms, 16000 samples/s, gain 2/1.333 = 1.50x,
  // growth 1.33x, 20 + 32 MiB.
  EXPECT_NE(table.find("     32     2.0000     2.2000       16000.0     1.50x       1.33x      52.0 MiB  <- knee"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("<- best"), std::string::npos);
  EXPECT_NE(table.find(kKneeDefinition), std::string::npos);
  // Row for batch 1: no previous row, so no ratios.
  EXPECT_NE(table.find("      1     1.0312     1.1344         969.7         -           -      21.0 MiB"),
            std::string::npos)
      << table;
}

// ---- SweepSvg

TEST(SweepTest, SvgIsWellFormedWithCurvesMarksAndAxes) {
  std::vector<SweepPoint> points = PowersOfTwo(512);
  points[9].ok = false;
  points[9].error = "out of memory <allocating 3 GiB & more>";
  SweepAnalysis a = AnalyzeSweep(points);
  const std::string title = "resnet18.onnx & co <FP16> on \"NVIDIA H100\"";
  std::string svg = SweepSvg(points, a, title);
  auto root = ParseXml(svg);
  ASSERT_TRUE(root);
  EXPECT_EQ(root->name, "svg");
  EXPECT_EQ(root->attributes.at("xmlns"), "http://www.w3.org/2000/svg");
  ExpectFiniteNumbers(*root);

  // The title, escaped in the file, reads back as given.
  auto titles = Find(*root, "text", "title");
  ASSERT_EQ(titles.size(), 1u);
  EXPECT_EQ(titles[0]->text, title);

  // One polyline per series through the 9 successful points.
  for (const char* series : {"throughput", "p50", "p99"}) {
    auto lines = Find(*root, "polyline", series);
    ASSERT_EQ(lines.size(), 1u) << series;
    const std::string& coords = lines[0]->attributes.at("points");
    EXPECT_EQ(std::count(coords.begin(), coords.end(), ','), 9) << series;
    EXPECT_EQ(Find(*root, "circle", std::string(series) + "-point").size(), 9u) << series;
  }
  // Throughput rises to the right: the SVG y of the last point is above the first.
  auto dots = Find(*root, "circle", "throughput-point");
  EXPECT_GT(std::atof(dots.front()->attributes.at("cx").c_str()), 0);
  EXPECT_LT(std::atof(dots.back()->attributes.at("cy").c_str()),
            std::atof(dots.front()->attributes.at("cy").c_str()));
  // Log2 x axis: equal spacing between successive doublings.
  const double x1 = std::atof(dots[0]->attributes.at("cx").c_str());
  const double x2 = std::atof(dots[1]->attributes.at("cx").c_str());
  const double x3 = std::atof(dots[2]->attributes.at("cx").c_str());
  EXPECT_NEAR(x2 - x1, x3 - x2, 0.15);
  // Everything lies inside the canvas.
  for (const char* cls : {"throughput-point", "p50-point", "p99-point"})
    for (const XmlElement* c : Find(*root, "circle", cls)) {
      const double cx = std::atof(c->attributes.at("cx").c_str());
      const double cy = std::atof(c->attributes.at("cy").c_str());
      EXPECT_TRUE(cx >= 0 && cx <= 860 && cy >= 0 && cy <= 500) << cls << " " << cx << "," << cy;
    }

  auto knee = Find(*root, "g", "knee");
  ASSERT_EQ(knee.size(), 1u);
  EXPECT_NE(AllText(*knee[0]).find("knee: batch 32"), std::string::npos);
  auto best = Find(*root, "g", "best");
  ASSERT_EQ(best.size(), 1u);
  EXPECT_NE(AllText(*best[0]).find("best: batch 256"), std::string::npos);
  auto failed = Find(*root, "g", "failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(AllText(*failed[0]).find("batch 512 failed: out of memory <allocating 3 GiB & more>"),
            std::string::npos);

  // Axis titles with units.
  EXPECT_NE(AllText(*Find(*root, "text", "x-label").at(0)).find("batch size (log2"), std::string::npos);
  EXPECT_NE(AllText(*Find(*root, "text", "y-label-throughput").at(0)).find("(samples/s)"), std::string::npos);
  EXPECT_NE(AllText(*Find(*root, "text", "y-label-latency").at(0)).find("(ms)"), std::string::npos);
  // Every batch size is a tick label, the failed one too.
  std::string ticks = AllText(*Find(*root, "g", "x-axis").at(0));
  for (const char* b : {"1", "32", "512"}) EXPECT_NE(ticks.find(b), std::string::npos) << b;
}

TEST(SweepTest, SvgEdgeCasesStayWellFormed) {
  // One batch size: no lines, one point of each series, no knee.
  std::vector<SweepPoint> one = {Affine(8)};
  SweepAnalysis a = AnalyzeSweep(one);
  std::string svg = SweepSvg(one, a, "one");
  auto root = ParseXml(svg);
  ASSERT_TRUE(root);
  EXPECT_TRUE(Find(*root, "polyline").empty());
  EXPECT_EQ(Find(*root, "circle", "throughput-point").size(), 1u);
  EXPECT_TRUE(Find(*root, "g", "knee").empty());
  EXPECT_EQ(Find(*root, "g", "best").size(), 1u);
  ExpectFiniteNumbers(*root);

  // Nothing succeeded: axes, the failures and a note, no curves.
  std::vector<SweepPoint> failed = {Affine(256), Affine(512)};
  for (SweepPoint& p : failed) {
    p.ok = false;
    p.error = "out of memory";
  }
  a = AnalyzeSweep(failed);
  root = ParseXml(SweepSvg(failed, a, ""));
  ASSERT_TRUE(root);
  EXPECT_EQ(Find(*root, "g", "failed").size(), 2u);
  EXPECT_EQ(Find(*root, "text", "no-data").size(), 1u);
  EXPECT_TRUE(Find(*root, "g", "best").empty());

  // No points at all.
  root = ParseXml(SweepSvg({}, AnalyzeSweep({}), "empty"));
  ASSERT_TRUE(root);
  EXPECT_EQ(Find(*root, "text", "no-data").size(), 1u);

  EXPECT_EQ(XmlEscape("a<b>&\"c'\x01"), "a&lt;b&gt;&amp;&quot;c&apos; ");
}

}  // namespace
}  // namespace kiln::profile
