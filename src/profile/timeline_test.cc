#include "profile/timeline.h"

#include <gtest/gtest.h>

#include <map>

#include <nlohmann/json.hpp>

#include "kiln/error.h"

namespace kiln::profile {
namespace {

TEST(Timeline, ChromeTraceHasOneRowPerTrackAndEverySpan) {
  std::vector<TimelineSpan> spans = {{"host: submit", "stage #0", 10, 5},
                                     {"lane 0: compute", "infer #0", 16, 100.5},
                                     {"host: submit", "stage #1", 20, 4}};
  const nlohmann::json trace = nlohmann::json::parse(ChromeTraceJson(spans));
  int complete = 0, names = 0;
  std::map<int, std::string> rows;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "X") {
      ++complete;
      if (e["name"] == "infer #0") {
        EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 16);
        EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 100.5);
      }
    } else if (e["name"] == "thread_name") {
      ++names;
      rows[e["tid"].get<int>()] = e["args"]["name"].get<std::string>();
    }
  }
  EXPECT_EQ(complete, 3);
  EXPECT_EQ(names, 2);
  EXPECT_EQ(rows[1], "host: submit");
  EXPECT_EQ(rows[2], "lane 0: compute");
}

TEST(Timeline, UnwritablePathIsAnError) {
  EXPECT_THROW(WriteChromeTrace({}, "/nonexistent-dir/x/trace.json"), Error);
}

}  // namespace
}  // namespace kiln::profile
