// counter: an example third-party zctl sink. It counts events per namespace and keeps the counts
// in a small JSON file, rewritten atomically after every batch and on every flush:
//
//   {"total":42,"namespaces":{"cluster":2,"connection":40}}
//
// Config: {"path": "/var/lib/zctl/counts.json"}
#include <zctl/sink.hpp>

#include <rapidjson/document.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>

namespace {

using zctl::sdk::Status;

std::string parse_path(const std::string& config_json) {
  rapidjson::Document doc;
  doc.Parse(config_json.c_str(), config_json.size());
  if (doc.HasParseError() || !doc.IsObject())
    throw std::invalid_argument("counter: config must be a JSON object");
  std::string path;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string key = it->name.GetString();
    if (key != "path") throw std::invalid_argument("counter: unknown key '" + key + "'");
    if (!it->value.IsString() || it->value.GetStringLength() == 0)
      throw std::invalid_argument("counter: 'path' must be a non-empty string");
    path = it->value.GetString();
  }
  if (path.empty()) throw std::invalid_argument("counter: 'path' is required");
  return path;
}

class CounterSink final : public zctl::sdk::Sink {
 public:
  // Control thread, no side effects: the host calls this before creating an instance.
  static void validate(const std::string& config_json) { (void)parse_path(config_json); }

  // Control thread. Throwing rejects the config; TransientError would ask for a retry.
  CounterSink(const std::string& config_json, zctl::sdk::Host host)
      : path_(parse_path(config_json)), host_(host) {
    host_.info("counter: writing counts to " + path_);
  }

  // Worker thread. Event views are valid only during this call; we copy just the namespace.
  Status emit(const zctl::sdk::Batch& batch) override {
    for (const zctl::sdk::Event& e : batch) {
      auto it = counts_.find(e.event_namespace);
      if (it == counts_.end()) it = counts_.emplace(std::string(e.event_namespace), 0).first;
      ++it->second;
      ++total_;
    }
    // The batch is counted either way; returning retry would make the host resend it and count
    // it twice. A failed save is logged and repeated after the next batch or flush.
    const Status saved = save();
    if (!saved.is_ok()) host_.warn(saved.reason);
    return Status::ok();
  }

  Status flush(uint32_t /*timeout_ms*/) override { return save(); }

 private:
  // Write a temporary file, then rename it over the old one: readers never see half a file.
  Status save() {
    std::string json = "{\"total\":" + std::to_string(total_) + ",\"namespaces\":{";
    bool first = true;
    for (const auto& [ns, n] : counts_) {
      json += (first ? "\"" : ",\"") + ns + "\":" + std::to_string(n);  // namespaces are [a-z]+
      first = false;
    }
    json += "}}\n";
    const std::string tmp = path_ + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return Status::retry("counter: cannot write " + tmp);
    const bool ok = std::fwrite(json.data(), 1, json.size(), f) == json.size();
    if (std::fclose(f) != 0 || !ok) return Status::retry("counter: cannot write " + tmp);
    if (std::rename(tmp.c_str(), path_.c_str()) != 0)
      return Status::retry("counter: cannot rename " + tmp + " to " + path_);
    return Status::ok();
  }

  std::string path_;
  zctl::sdk::Host host_;
  std::map<std::string, uint64_t, std::less<>> counts_;  // less<>: look up by string_view
  uint64_t total_ = 0;
};

}  // namespace

ZCTL_SINK_PLUGIN(CounterSink, "counter", "1.0.0", "Counts events per namespace into a JSON file", 0);
