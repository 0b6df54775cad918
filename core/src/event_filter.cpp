#include "event_filter.hpp"

#include <algorithm>

namespace zctl {

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with single-star backtracking: linear for the patterns
  // operators write ("state.*", "*leader*").
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool filter_matches(const std::vector<std::string>& namespaces, const std::vector<std::string>& type_globs,
                    const Event& event) {
  if (!namespaces.empty() &&
      std::find(namespaces.begin(), namespaces.end(), event.event_namespace) == namespaces.end()) {
    return false;
  }
  return type_globs.empty() || std::any_of(type_globs.begin(), type_globs.end(), [&](const std::string& glob) {
           return glob_match(glob, event.event_type);
         });
}

}  // namespace zctl
