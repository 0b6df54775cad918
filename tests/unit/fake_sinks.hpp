// In-process fake sink plugins for host tests: descriptors built directly on
// the C ABI, with behaviour scripted per instance, so the worker and host can
// be tested without dlopen, files or sockets.
#pragma once

#include <zctl/sink.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "zctl/core/config.hpp"
#include "zctl/core/plugin_host.hpp"

namespace zctl::test {

// What a fake instance does on emit; shared with the test through a pointer.
struct FakeScript {
  std::mutex mutex;
  std::vector<uint64_t> delivered_seqs;
  std::vector<std::string> delivered_json;
  std::vector<uint32_t> batch_sizes;
  std::atomic<int> emit_calls{0};
  std::atomic<int> reopen_calls{0};
  std::atomic<int> create_calls{0};
  // Return codes for the first calls, then `then`.
  std::vector<int32_t> first_results;
  int32_t then = ZCTL_SINK_OK;
  std::atomic<bool> failing{false};  // while set, every emit returns RETRY (an outage)
  uint32_t retry_after_ms = 0;
  std::atomic<int> hang_ms{0};    // sleep inside emit
  bool async = false;             // return PENDING, complete from another thread
  std::atomic<int> in_flight{0};      // async batches emitted and not completed yet
  std::atomic<int> max_in_flight{0};  // the most seen at once
  std::atomic<int32_t> create_result{ZCTL_SINK_OK};
  std::atomic<bool> release{false};  // ends a hang early

  std::vector<uint64_t> seqs() {
    std::lock_guard lock(mutex);
    return delivered_seqs;
  }
};

struct FakeInstance {
  FakeScript* script;
  const zctl_sink_host* host;
  std::vector<std::thread> completers;
};

inline int32_t fake_validate(const char*, char*, uint32_t) { return ZCTL_SINK_OK; }

inline int32_t fake_create(const char* config_json, const zctl_sink_host* host, void** out, char* err, uint32_t cap) {
  // The config JSON carries the script's address, so several fakes coexist.
  FakeScript* script = reinterpret_cast<FakeScript*>(std::stoull(std::string(config_json + 1)));
  ++script->create_calls;
  if (script->create_result != ZCTL_SINK_OK) {
    std::snprintf(err, cap, "scripted create failure");
    return script->create_result;
  }
  *out = new FakeInstance{script, host, {}};
  return ZCTL_SINK_OK;
}

inline int32_t fake_emit(void* instance, const zctl_sink_batch* batch, zctl_sink_status* status) {
  auto* self = static_cast<FakeInstance*>(instance);
  FakeScript& s = *self->script;
  const int call = s.emit_calls++;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(s.hang_ms.load());
  while (std::chrono::steady_clock::now() < until && !s.release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int32_t rc = s.failing                                            ? ZCTL_SINK_RETRY
                     : call < static_cast<int>(s.first_results.size()) ? s.first_results[static_cast<size_t>(call)]
                                                                       : s.then;
  if (rc == ZCTL_SINK_OK || (rc == ZCTL_SINK_PENDING && s.async)) {
    std::lock_guard lock(s.mutex);
    s.batch_sizes.push_back(batch->count);
    for (uint32_t i = 0; i < batch->count; ++i) {
      s.delivered_seqs.push_back(batch->events[i].seq);
      s.delivered_json.emplace_back(batch->events[i].json, batch->events[i].json_len);
    }
  }
  if (rc == ZCTL_SINK_PENDING && s.async) {
    const uint64_t id = batch->batch_id;
    const zctl_sink_host* host = self->host;
    const int now = ++s.in_flight;
    for (int seen = s.max_in_flight; now > seen && !s.max_in_flight.compare_exchange_weak(seen, now);) {
    }
    self->completers.emplace_back([host, id, script = &s] {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      --script->in_flight;
      host->complete(host->ctx, id, ZCTL_SINK_OK, 0, nullptr);
    });
    return ZCTL_SINK_PENDING;
  }
  if (rc != ZCTL_SINK_OK) {
    std::snprintf(status->reason, status->reason_cap, "scripted result %d", rc);
    status->retry_after_ms = s.retry_after_ms;
  }
  return rc;
}

inline int32_t fake_reopen(void* instance, zctl_sink_status*) {
  ++static_cast<FakeInstance*>(instance)->script->reopen_calls;
  return ZCTL_SINK_OK;
}

inline void fake_destroy(void* instance) {
  auto* self = static_cast<FakeInstance*>(instance);
  for (auto& t : self->completers) t.join();
  delete self;
}

inline std::shared_ptr<LoadedPlugin> fake_plugin(bool async = false, bool pipeline = false) {
  zctl_sink_plugin d{};
  d.struct_size = sizeof d;
  d.abi_major = ZCTL_SINK_ABI_MAJOR;
  d.abi_minor = ZCTL_SINK_ABI_MINOR;
  d.name = "fake";
  d.version = "1";
  d.description = "scripted test sink";
  d.capabilities = ZCTL_SINK_CAP_REOPEN | (async ? ZCTL_SINK_CAP_ASYNC_COMPLETION : 0u) |
                   (pipeline ? ZCTL_SINK_CAP_PIPELINE : 0u);
  d.validate_config = fake_validate;
  d.create = fake_create;
  d.emit = fake_emit;
  d.reopen = fake_reopen;
  d.destroy = fake_destroy;
  return LoadedPlugin::in_process(d, "<in-process fake>");
}

// The config JSON that points a fake instance at `script`.
inline std::string fake_config(FakeScript& script) {
  return "\"" + std::to_string(reinterpret_cast<uintptr_t>(&script)) + "\"";
}

// A sink on a fake with millisecond retries and batches of at most 10.
inline SinkConfig fast_sink_config(FakeScript& script, std::string name) {
  SinkConfig c;
  c.name = std::move(name);
  c.plugin = "fake";
  c.config_json = fake_config(script);
  c.retry.initial = std::chrono::milliseconds(1);
  c.retry.max = std::chrono::milliseconds(4);
  c.queue.batch_max = 10;
  return c;
}

// Polls `condition` until it holds or `timeout` passes.
template <typename Fn>
bool eventually(Fn&& condition, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return condition();
}

}  // namespace zctl::test
