// JSON building blocks shared by the command reports (`zctl probe -o json`,
// `zctl sink test -o json`), so durations and summaries read the same in
// both: milliseconds with microsecond precision, and a summary's min/p50/
// p99/max only when it counts anything.
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string_view>

#include "zctl/core/probe.hpp"

namespace zctl::report_json {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

inline void key(Writer& w, std::string_view k) { w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); }

inline void string(Writer& w, std::string_view v) { w.String(v.data(), static_cast<rapidjson::SizeType>(v.size())); }

inline void ms(Writer& w, ProbeDuration d) { w.Double(static_cast<double>(d.count()) / 1000.0); }

inline void summary(Writer& w, const DurationSummary& s) {
  w.StartObject();
  key(w, "count");
  w.Uint64(s.count);
  if (s.count > 0) {
    key(w, "minMs");
    ms(w, s.min);
    key(w, "p50Ms");
    ms(w, s.p50);
    key(w, "p99Ms");
    ms(w, s.p99);
    key(w, "maxMs");
    ms(w, s.max);
  }
  w.EndObject();
}

}  // namespace zctl::report_json
