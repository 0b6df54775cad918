// Which events a sink or a watch stream wants: namespaces match exactly,
// eventTypes by glob; an empty list means all. Pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/event.hpp"

namespace zctl {

// '*' any run, '?' one character.
bool glob_match(std::string_view pattern, std::string_view text);

bool filter_matches(const std::vector<std::string>& namespaces, const std::vector<std::string>& type_globs,
                    const Event& event);

}  // namespace zctl
