// Reading a shipped plugin's `config:` JSON: the pieces every plugin here
// needs, written once. Header-only, for the plugins in this folder (they
// already build with rapidjson); plugins written elsewhere use the SDK's
// zctl/sink_config.hpp, which has no dependencies.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>

#include <zctl/sink_config.hpp>

namespace zctl::plugins {

// The config text as a JSON object; anything else is a precise error.
inline rapidjson::Document parse_config_object(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError()) {
    throw std::invalid_argument(std::string("config is not valid JSON: ") +
                                rapidjson::GetParseError_En(doc.GetParseError()) + " (at offset " +
                                std::to_string(doc.GetErrorOffset()) + ")");
  }
  if (!doc.IsObject()) throw std::invalid_argument("config must be a JSON object");
  return doc;
}

// A non-empty string option without NUL characters.
inline std::string string_value(std::string_view key, const rapidjson::Value& v) {
  if (!v.IsString() || v.GetStringLength() == 0) {
    throw std::invalid_argument("'" + std::string(key) + "' must be a non-empty string");
  }
  std::string s(v.GetString(), v.GetStringLength());
  if (s.find('\0') != std::string::npos) {
    throw std::invalid_argument("'" + std::string(key) + "' must not contain a NUL character");
  }
  return s;
}

// A network timeout written as in zctl.yaml ("500ms", "10s", "1m30s"), from 1ms to 10m.
inline std::chrono::milliseconds timeout_value(std::string_view key, std::string_view s) {
  constexpr auto kMaxTimeout = std::chrono::minutes(10);
  const auto ms = zctl::sdk::parse_duration_ms(s);
  if (!ms || *ms < 1 || *ms > std::chrono::milliseconds(kMaxTimeout).count()) {
    throw std::invalid_argument("'" + std::string(key) +
                                "' must be a duration from 1ms to 10m such as \"500ms\", \"10s\" or \"1m30s\"; got \"" +
                                std::string(s) + "\"");
  }
  return std::chrono::milliseconds(*ms);
}

}  // namespace zctl::plugins
