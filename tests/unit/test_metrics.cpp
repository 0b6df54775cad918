#include <catch2/catch.hpp>

#include "zctl/core/metrics.hpp"

using namespace zctl;

TEST_CASE("metrics render in Prometheus text format with escaped labels", "[metrics]") {
  MetricsRegistry m;
  m.counter("controller_events_total", "Events emitted.", {"namespace", "type"}).with({"node", "started"}).inc(2);
  m.counter("controller_events_total", "Events emitted.", {"namespace", "type"}).with({"a\"b\\c\nd", "x"}).inc();
  m.gauge("controller_sink_up", "Sink up.", {"sink"}).with({"events"}).set(1);
  auto& h = m.histogram("controller_sink_delivery_seconds", "Delivery.", {"sink"}, {0.1, 1}).with({"events"});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  const std::string text = m.render();
  CHECK(text.find("# HELP controller_events_total Events emitted.\n# TYPE controller_events_total counter\n") !=
        std::string::npos);
  CHECK(text.find("controller_events_total{namespace=\"node\",type=\"started\"} 2\n") != std::string::npos);
  CHECK(text.find("controller_events_total{namespace=\"a\\\"b\\\\c\\nd\",type=\"x\"} 1\n") != std::string::npos);
  CHECK(text.find("controller_sink_up{sink=\"events\"} 1\n") != std::string::npos);
  CHECK(text.find("controller_sink_delivery_seconds_bucket{sink=\"events\",le=\"0.1\"} 1\n") != std::string::npos);
  CHECK(text.find("controller_sink_delivery_seconds_bucket{sink=\"events\",le=\"1\"} 2\n") != std::string::npos);
  CHECK(text.find("controller_sink_delivery_seconds_bucket{sink=\"events\",le=\"+Inf\"} 3\n") != std::string::npos);
  CHECK(text.find("controller_sink_delivery_seconds_sum{sink=\"events\"} 5.55\n") != std::string::npos);
  CHECK(text.find("controller_sink_delivery_seconds_count{sink=\"events\"} 3\n") != std::string::npos);
}

TEST_CASE("a family returns the same child for the same labels and checks arity", "[metrics]") {
  MetricsRegistry m;
  auto& family = m.counter("x_total", "x", {"a"});
  CHECK(&family.with({"1"}) == &family.with({"1"}));
  CHECK(&family == &m.counter("x_total", "x", {"a"}));
  CHECK_THROWS(family.with({"1", "2"}));
}
