#include "zctl/core/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>

#include "zctl/core/detail/json_text.hpp"

namespace zctl {
namespace {

constexpr std::array<std::string_view, 7> kLevelNames = {"trace", "debug", "info", "warn",
                                                         "error", "critical", "off"};

std::atomic<bool> g_json_format{false};

spdlog::level::level_enum to_spdlog(LogLevel level) {
  return static_cast<spdlog::level::level_enum>(static_cast<int>(level));
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view text) {
  for (size_t i = 0; i < kLevelNames.size(); ++i) {
    if (text == kLevelNames[i]) return static_cast<LogLevel>(i);
  }
  if (text == "warning") return LogLevel::warn;
  return std::nullopt;
}

std::string_view to_string(LogLevel level) { return kLevelNames.at(static_cast<size_t>(level)); }

void configure_logging(LogLevel level, LogFormat format) {
  auto logger = spdlog::stderr_color_mt("zctl");
  if (format == LogFormat::json) {
    // One JSON object per line; log_message() hands over the message already
    // quoted and escaped, so %v never breaks the object.
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%f%z","level":"%l","msg":%v})");
    g_json_format = true;
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%-5l%$ %v");
  }
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void log_message(LogLevel level, std::string_view message) {
  if (level == LogLevel::off) return;
  auto* logger = spdlog::default_logger_raw();
  if (!logger->should_log(to_spdlog(level))) return;
  if (g_json_format.load(std::memory_order_relaxed)) {
    logger->log(to_spdlog(level), "{}", json::quoted(message));
  } else {
    logger->log(to_spdlog(level), "{}", message);
  }
}

}  // namespace zctl
