// Process-wide logging. The logging library stays inside core; callers see
// only these functions. Thread-safe after configure_logging().
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace zctl {

enum class LogLevel { trace, debug, info, warn, error, critical, off };
enum class LogFormat { text, json };

std::optional<LogLevel> parse_log_level(std::string_view text);
std::string_view to_string(LogLevel level);

// Logs go to stderr. Call once at start-up, before any thread is started.
void configure_logging(LogLevel level, LogFormat format);

void log_message(LogLevel level, std::string_view message);

inline void log_trace(std::string_view m) { log_message(LogLevel::trace, m); }
inline void log_debug(std::string_view m) { log_message(LogLevel::debug, m); }
inline void log_info(std::string_view m) { log_message(LogLevel::info, m); }
inline void log_warn(std::string_view m) { log_message(LogLevel::warn, m); }
inline void log_error(std::string_view m) { log_message(LogLevel::error, m); }

}  // namespace zctl
