// Compile test: sink.hpp must be valid C++17 and clean under strict warnings (built with
// -std=c++17 -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wold-style-cast -Werror as the
// zctl_sdk_cxx_check target). Exercises every part of the helper once.
#include <zctl/sink.hpp>
#include <zctl/sink_config.hpp>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace {

class CheckSink final : public zctl::sdk::Sink {
 public:
  static constexpr const char* config_schema = R"({"type":"object"})";

  static void validate(const std::string& config_json) {
    static constexpr const char* kKeys[] = {"path", "mode"};
    if (config_json.empty()) throw std::invalid_argument(zctl::sdk::unknown_key_message("pth", kKeys));
  }
  CheckSink(const std::string& config_json, zctl::sdk::Host host) : host_(host) {
    validate(config_json);
    host_.info("created");
  }

  zctl::sdk::Status emit(const zctl::sdk::Batch& batch) override {
    std::size_t bytes = 0;
    for (const zctl::sdk::Event& e : batch) bytes += e.json.size() + e.event_type.size();
    const auto big = std::count_if(batch.begin(), batch.end(),
                                   [](const zctl::sdk::Event& e) { return e.json.size() > 1000; });
    if (batch.attempt() > 3) return zctl::sdk::Status::reject("too many attempts");
    if (big > 0) return zctl::sdk::Status::retry("big events", 100);
    if (bytes == 0 || batch.empty()) {
      host_.complete(batch.id(), zctl::sdk::Status::ok());
      return zctl::sdk::Status::pending();
    }
    return batch[0].seq > 0 ? zctl::sdk::Status::ok() : zctl::sdk::Status::retry("seq 0");
  }
  zctl::sdk::Status flush(uint32_t timeout_ms) override {
    host_.log(zctl::sdk::LogLevel::debug, std::to_string(timeout_ms));
    return zctl::sdk::Status::ok();
  }

 private:
  zctl::sdk::Host host_;
};

}  // namespace

ZCTL_SINK_PLUGIN(CheckSink, "cxx_check", "0.0.0", "C++17 compile check",
                 ZCTL_SINK_CAP_ASYNC_COMPLETION);
