#include "profile/timeline.h"

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "kiln/error.h"

namespace kiln::profile {

std::string ChromeTraceJson(const std::vector<TimelineSpan>& spans) {
  std::map<std::string, int> track_ids;
  nlohmann::json events = nlohmann::json::array();
  for (const TimelineSpan& s : spans) {
    auto [it, added] = track_ids.emplace(s.track, static_cast<int>(track_ids.size()) + 1);
    if (added) {
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", it->second},
                        {"args", {{"name", s.track}}}});
      events.push_back({{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", 1}, {"tid", it->second},
                        {"args", {{"sort_index", it->second}}}});
    }
    events.push_back({{"ph", "X"}, {"name", s.name}, {"pid", 1}, {"tid", it->second},
                      {"ts", s.start_us}, {"dur", s.duration_us}});
  }
  nlohmann::json trace = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  return trace.dump();
}

void WriteChromeTrace(const std::vector<TimelineSpan>& spans, const std::string& path) {
  std::ofstream out(path);
  KILN_CHECK(out, "cannot write the timeline ", path);
  out << ChromeTraceJson(spans) << "\n";
  KILN_CHECK(out.good(), "cannot write the timeline ", path);
}

}  // namespace kiln::profile
