#include "service_notify.hpp"

#include <systemd/sd-daemon.h>

#include "zctl/core/log.hpp"

namespace zctl {

namespace {

void send(const std::string& state) {
  // 0: keep $NOTIFY_SOCKET set, so later notifications reach it too.
  const int rc = sd_notify(0, state.c_str());
  if (rc < 0) log_debug("service manager notification failed: " + std::to_string(rc));
}

std::string status_line(const std::string& status) {
  std::string line = "STATUS=";
  for (char c : status) line.push_back(c == '\n' ? ' ' : c);  // one assignment per line
  return line;
}

}  // namespace

void notify_ready(const std::string& status) { send("READY=1\n" + status_line(status)); }
void notify_reloading() { send("RELOADING=1\n" + status_line("reloading sinks")); }
void notify_stopping() { send("STOPPING=1\n" + status_line("stopping")); }
void notify_status(const std::string& status) { send(status_line(status)); }

}  // namespace zctl
