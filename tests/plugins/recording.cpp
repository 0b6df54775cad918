// recording.so: an instrumented test sink built with the C++ helper (sink.hpp).
//
// Config keys (all optional; unknown keys are rejected by validate):
//   path            file every delivered event's JSON is appended to, one per line
//   calls_path      file each plugin call is logged to: "create", "emit <batch_id> <attempt>
//                   <count>", "complete <batch_id> <result>", "flush", "health", "reopen",
//                   "destroy"
//   fail_first      N: the first N emits return retry
//   retry_after_ms  retry_after_ms of those retries (default 0)
//   reject_all      true: every emit returns reject
//   hang_ms         N: every emit sleeps N ms first
//   async           true: emit returns pending; a separate thread completes the batch after
//                   async_delay_ms (default 20) with the outcome emit would have returned
//   throw_in_emit   true: emit throws std::runtime_error
//   throw_unknown   true: emit throws an int (not a std::exception)
//   garbage_code    true: emit returns 77, which is no ZCTL_SINK_* code (raw C escape hatch)
//   fail_create     true: the constructor throws (create returns reject);
//                   "retry": it throws TransientError (create returns retry)
//   require_file    create returns retry while this file does not exist
//   unhealthy       true: health returns retry
#include <zctl/sink.hpp>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using zctl::sdk::Status;

struct RecordingConfig {
  std::string path;
  std::string calls_path;
  uint32_t fail_first = 0;
  uint32_t retry_after_ms = 0;
  bool reject_all = false;
  uint32_t hang_ms = 0;
  bool async = false;
  uint32_t async_delay_ms = 20;
  bool throw_in_emit = false;
  bool throw_unknown = false;
  bool garbage_code = false;
  std::string fail_create;  // "", "reject" or "retry"
  std::string require_file;
  bool unhealthy = false;
};

RecordingConfig parse_config(const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError())
    throw std::invalid_argument(std::string("recording: config is not valid JSON: ") +
                                rapidjson::GetParseError_En(doc.GetParseError()));
  if (!doc.IsObject()) throw std::invalid_argument("recording: config must be a JSON object");
  RecordingConfig c;
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string key = it->name.GetString();
    const rapidjson::Value& v = it->value;
    auto str = [&](std::string& out) {
      if (!v.IsString()) throw std::invalid_argument("recording: '" + key + "' must be a string");
      out = v.GetString();
    };
    auto uint = [&](uint32_t& out) {
      if (!v.IsUint()) throw std::invalid_argument("recording: '" + key + "' must be an integer");
      out = v.GetUint();
    };
    auto flag = [&](bool& out) {
      if (!v.IsBool()) throw std::invalid_argument("recording: '" + key + "' must be a boolean");
      out = v.GetBool();
    };
    if (key == "path") str(c.path);
    else if (key == "calls_path") str(c.calls_path);
    else if (key == "fail_first") uint(c.fail_first);
    else if (key == "retry_after_ms") uint(c.retry_after_ms);
    else if (key == "reject_all") flag(c.reject_all);
    else if (key == "hang_ms") uint(c.hang_ms);
    else if (key == "async") flag(c.async);
    else if (key == "async_delay_ms") uint(c.async_delay_ms);
    else if (key == "throw_in_emit") flag(c.throw_in_emit);
    else if (key == "throw_unknown") flag(c.throw_unknown);
    else if (key == "garbage_code") flag(c.garbage_code);
    else if (key == "require_file") str(c.require_file);
    else if (key == "unhealthy") flag(c.unhealthy);
    else if (key == "fail_create") {
      if (v.IsBool()) c.fail_create = v.GetBool() ? "reject" : "";
      else if (v.IsString() && std::string(v.GetString()) == "retry") c.fail_create = "retry";
      else throw std::invalid_argument("recording: 'fail_create' must be true, false or \"retry\"");
    } else {
      throw std::invalid_argument("recording: unknown key '" + key + "'");
    }
  }
  return c;
}

// Appends lines to a file; shared by the worker thread and the completion thread.
class LineFile {
 public:
  void open(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    close_locked();
    if (path.empty()) return;
    f_ = std::fopen(path.c_str(), "a");
    if (f_ == nullptr) throw std::runtime_error("recording: cannot open " + path);
  }
  ~LineFile() { close_locked(); }
  void append(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    if (f_ == nullptr) return;
    std::fwrite(text.data(), 1, text.size(), f_);
    std::fflush(f_);
  }

 private:
  void close_locked() {
    if (f_ != nullptr) std::fclose(f_);
    f_ = nullptr;
  }
  std::mutex mu_;
  std::FILE* f_ = nullptr;
};

class RecordingSink final : public zctl::sdk::Sink {
 public:
  static void validate(const std::string& config_json) { (void)parse_config(config_json); }

  RecordingSink(const std::string& config_json, zctl::sdk::Host host)
      : cfg_(parse_config(config_json)), host_(host) {
    if (cfg_.fail_create == "reject") throw std::runtime_error("recording: fail_create");
    if (cfg_.fail_create == "retry") throw zctl::sdk::TransientError("recording: fail_create retry");
    struct stat st {};
    if (!cfg_.require_file.empty() && ::stat(cfg_.require_file.c_str(), &st) != 0)
      throw zctl::sdk::TransientError("recording: waiting for " + cfg_.require_file);
    events_.open(cfg_.path);
    calls_.open(cfg_.calls_path);
    calls_.append("create\n");
    if (cfg_.async) completer_ = std::thread([this] { run_completer(); });
  }

  // Completes every outstanding batch before returning, as the ABI requires.
  ~RecordingSink() override {
    if (completer_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      completer_.join();
    }
    calls_.append("destroy\n");
  }

  bool garbage_code() const noexcept { return cfg_.garbage_code; }

  Status emit(const zctl::sdk::Batch& batch) override {
    calls_.append("emit " + std::to_string(batch.id()) + " " + std::to_string(batch.attempt()) +
                  " " + std::to_string(batch.size()) + "\n");
    if (cfg_.hang_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(cfg_.hang_ms));
    if (cfg_.throw_in_emit) throw std::runtime_error("recording: throw_in_emit");
    if (cfg_.throw_unknown) throw 42;

    Status outcome = Status::ok();
    ++emits_;
    if (cfg_.reject_all) {
      outcome = Status::reject("recording: reject_all");
    } else if (emits_ <= cfg_.fail_first) {
      outcome = Status::retry("recording: fail_first " + std::to_string(emits_) + "/" +
                                  std::to_string(cfg_.fail_first),
                              cfg_.retry_after_ms);
    }

    // Event bytes are only valid during this call: copy them before going asynchronous.
    std::string lines;
    if (outcome.is_ok()) {
      for (const zctl::sdk::Event& e : batch) {
        lines.append(e.json);
        lines.push_back('\n');
      }
    }
    if (!cfg_.async) {
      events_.append(lines);
      return outcome;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back(Pending{batch.id(), std::move(lines), std::move(outcome),
                                 std::chrono::steady_clock::now() +
                                     std::chrono::milliseconds(cfg_.async_delay_ms)});
    }
    cv_.notify_all();
    return Status::pending();
  }

  Status flush(uint32_t /*timeout_ms*/) override {
    calls_.append("flush\n");
    return Status::ok();
  }

  Status health() override {
    calls_.append("health\n");
    return cfg_.unhealthy ? Status::retry("recording: unhealthy") : Status::ok();
  }

  Status reopen() override {
    calls_.append("reopen\n");
    events_.open(cfg_.path);
    return Status::ok();
  }

 private:
  struct Pending {
    uint64_t batch_id;
    std::string lines;
    Status outcome;
    std::chrono::steady_clock::time_point due;
  };

  void run_completer() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (pending_.empty()) {
        if (stopping_) return;
        cv_.wait(lock);
        continue;
      }
      if (!stopping_ && std::chrono::steady_clock::now() < pending_.front().due) {
        cv_.wait_until(lock, pending_.front().due);
        continue;
      }
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      lock.unlock();
      events_.append(p.lines);
      calls_.append("complete " + std::to_string(p.batch_id) + " " +
                    std::to_string(static_cast<int>(p.outcome.result)) + "\n");
      host_.complete(p.batch_id, p.outcome);
      lock.lock();
    }
  }

  RecordingConfig cfg_;
  zctl::sdk::Host host_;
  LineFile events_;
  LineFile calls_;
  uint32_t emits_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stopping_ = false;
  std::thread completer_;  // last: started after everything it uses exists
};

using Adapter = zctl::sdk::Adapter<RecordingSink>;

// The escape hatch for garbage_code: the helper's descriptor with emit wrapped in a raw C
// function, so this plugin can return a code the helper would never produce.
int32_t emit_or_garbage(void* instance, const zctl_sink_batch* batch, zctl_sink_status* status) {
  if (instance != nullptr && static_cast<RecordingSink*>(instance)->garbage_code()) return 77;
  return Adapter::emit(instance, batch, status);
}

constexpr zctl_sink_plugin make_recording_descriptor() {
  zctl_sink_plugin d = zctl::sdk::make_descriptor<RecordingSink>(
      "recording", "0.0.1", "zctl test plugin: records events, fails on demand",
      ZCTL_SINK_CAP_ASYNC_COMPLETION | ZCTL_SINK_CAP_REOPEN);
  d.emit = &emit_or_garbage;
  return d;
}

constexpr zctl_sink_plugin kDescriptor = make_recording_descriptor();

}  // namespace

extern "C" ZCTL_SINK_EXPORT const zctl_sink_plugin* zctl_sink_plugin_entry(void) {
  return &kDescriptor;
}
