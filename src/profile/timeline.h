// Timelines in the Chrome trace event format (open in ui.perfetto.dev or
// chrome://tracing): what Nsight Systems shows for a pipeline, recorded by
// kiln itself (host stages with the steady clock, device stages with CUDA
// events), so it works where nsys does not.
#pragma once

#include <string>
#include <vector>

namespace kiln::profile {

struct TimelineSpan {
  std::string track;  // One row per track, e.g. "host: submit", "lane 0: compute".
  std::string name;   // e.g. "copy-in #12".
  double start_us = 0;
  double duration_us = 0;
};

// One complete ("X") event per span, rows named by track (metadata events),
// rows in order of first appearance.
std::string ChromeTraceJson(const std::vector<TimelineSpan>& spans);
// Writes ChromeTraceJson to `path`; throws kiln::Error naming the path.
void WriteChromeTrace(const std::vector<TimelineSpan>& spans, const std::string& path);

}  // namespace kiln::profile
