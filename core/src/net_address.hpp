// "HOST:PORT" <-> endpoint, for listen addresses in configs and flags.
#pragma once

#include <string>

#include <boost/asio/ip/tcp.hpp>

namespace zctl {

// Accepts "127.0.0.1:6280", "0.0.0.0:0", "[::1]:6280", "localhost:6280" -- the same
// forms the config accepts for listen addresses.
// Throws std::runtime_error naming the address when it is not HOST:PORT.
boost::asio::ip::tcp::endpoint resolve_listen_address(const std::string& address);

// "127.0.0.1:6280" or "[::1]:6280".
std::string format_endpoint(const boost::asio::ip::tcp::endpoint& endpoint);

}  // namespace zctl
