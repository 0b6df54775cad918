// Tells a supervising service manager (systemd, Type=notify) about the
// node's lifecycle. Every call is a no-op when the process was not started
// with $NOTIFY_SOCKET, and never fails the caller. Thread-safe.
#pragma once

#include <string>

namespace zctl {

void notify_ready(const std::string& status);  // READY=1: admin API and sinks are up
void notify_reloading();                       // RELOADING=1, before a SIGHUP reload
void notify_stopping();                        // STOPPING=1, when shutdown begins
void notify_status(const std::string& status);

}  // namespace zctl
