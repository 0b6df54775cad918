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
