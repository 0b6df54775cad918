#include "net_address.hpp"

#include <stdexcept>

#include "zctl/core/detail/json_text.hpp"

namespace zctl {

boost::asio::ip::tcp::endpoint resolve_listen_address(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    throw std::runtime_error("'" + address + "' is not HOST:PORT");
  }
  std::string host = address.substr(0, colon);
  const std::string port_text = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long port = 0;
  try {
    size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size() || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw std::runtime_error("'" + address + "': port must be a number from 0 to 65535");
  }
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("'" + address + "': '" + host + "' is not an IP address");
  return {ip, static_cast<unsigned short>(port)};
}

std::string format_endpoint(const boost::asio::ip::tcp::endpoint& endpoint) {
  const auto ip = endpoint.address();
  if (ip.is_v6()) return "[" + ip.to_string() + "]:" + std::to_string(endpoint.port());
  // Not address::to_string(): glibc's inet_ntop formats IPv4 with sprintf,
  // and every stray event formats two endpoints.
  std::string out;
  out.reserve(sizeof "255.255.255.255:65535");
  const auto bytes = ip.to_v4().to_bytes();
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) out.push_back('.');
    json::append_integer(out, static_cast<unsigned>(bytes[i]));
  }
  out.push_back(':');
  json::append_integer(out, endpoint.port());
  return out;
}

}  // namespace zctl
