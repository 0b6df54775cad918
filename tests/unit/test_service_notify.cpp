#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "service_notify.hpp"

namespace {

// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
  int fd = -1;
  std::string path;
  NotifySocket() {
    path = "/tmp/zctl-notify-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path.copy(addr.sun_path, sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval timeout{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::close(fd);
    ::unlink(path.c_str());
  }
  std::string receive() const {
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }
};

}  // namespace

TEST_CASE("lifecycle notifications reach the service manager's socket", "[notify]") {
  NotifySocket socket;
  zctl::notify_ready("serving: admin API 127.0.0.1:6280\nsecond line");
  CHECK(socket.receive() == "READY=1\nSTATUS=serving: admin API 127.0.0.1:6280 second line");
  zctl::notify_reloading();
  CHECK(socket.receive() == "RELOADING=1\nSTATUS=reloading sinks");
  zctl::notify_stopping();
  CHECK(socket.receive() == "STOPPING=1\nSTATUS=stopping");
}
