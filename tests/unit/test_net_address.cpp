#include <catch2/catch.hpp>

#include "net_address.hpp"

using zctl::format_endpoint;
using zctl::resolve_listen_address;

TEST_CASE("listen addresses: the forms the config accepts, and clear refusals", "[net]") {
  CHECK(format_endpoint(resolve_listen_address("127.0.0.1:6280")) == "127.0.0.1:6280");
  CHECK(format_endpoint(resolve_listen_address("0.0.0.0:0")) == "0.0.0.0:0");
  CHECK(format_endpoint(resolve_listen_address("[::1]:6262")) == "[::1]:6262");
  CHECK(format_endpoint(resolve_listen_address("localhost:6262")) == "127.0.0.1:6262");
  CHECK_THROWS_WITH(resolve_listen_address("127.0.0.1"), Catch::Contains("is not HOST:PORT"));
  CHECK_THROWS_WITH(resolve_listen_address("127.0.0.1:"), Catch::Contains("is not HOST:PORT"));
  CHECK_THROWS_WITH(resolve_listen_address("127.0.0.1:70000"), Catch::Contains("port must be a number from 0 to 65535"));
  CHECK_THROWS_WITH(resolve_listen_address("127.0.0.1:80x"), Catch::Contains("port must be a number"));
  CHECK_THROWS_WITH(resolve_listen_address("*:6262"), Catch::Contains("is not an IP address"));
  CHECK_THROWS_WITH(resolve_listen_address(":6262"), Catch::Contains("is not an IP address"));
  CHECK_THROWS_WITH(resolve_listen_address("ctrl1.example:6262"), Catch::Contains("is not an IP address"));
}

TEST_CASE("endpoints format as asio does, IPv4 without asio", "[net]") {
  using boost::asio::ip::make_address_v4;
  using boost::asio::ip::tcp;
  CHECK(format_endpoint(tcp::endpoint(make_address_v4("255.255.255.255"), 65535)) == "255.255.255.255:65535");
  CHECK(format_endpoint(tcp::endpoint(make_address_v4("10.0.100.9"), 0)) == "10.0.100.9:0");
  CHECK(format_endpoint(tcp::endpoint(boost::asio::ip::make_address("::ffff:1.2.3.4"), 7)) == "[::ffff:1.2.3.4]:7");
  for (unsigned octet = 0; octet < 256; ++octet) {
    const auto address = boost::asio::ip::address_v4(static_cast<uint32_t>(octet << 24 | octet << 8 | 7));
    const auto port = static_cast<unsigned short>(octet * 257);
    CHECK(format_endpoint(tcp::endpoint(address, port)) == address.to_string() + ":" + std::to_string(port));
  }
}
