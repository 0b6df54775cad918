// The single entry point for events.
//
// emit() assigns the next seq, serialises the event once and hands the same
// EventPtr to every consumer, in seq order, under one lock, so the journal,
// each sink queue and each watch stream see identical bytes in identical
// order. Consumers must be quick (queue and return); a sink with the `block`
// policy is the one bounded exception (see SinkQueueConfig::block_timeout).
//
// Thread-safe. Consumers are attached before events flow and detached (in
// reverse) before they are destroyed.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "zctl/core/detail/event_type_memo.hpp"
#include "zctl/core/event.hpp"

namespace zctl {

class Journal;
class MetricsRegistry;
class SeqStore;
class Counter;

class EventConsumer {
 public:
  virtual ~EventConsumer() = default;
  // Called under the bus lock, in seq order. Must not call back into emit().
  virtual void consume(const EventPtr& event) = 0;
};

class EventBus {
 public:
  EventBus(std::string source_id, SeqStore& seq, Journal& journal, MetricsRegistry& metrics);

  EventPtr emit(std::string_view event_namespace, std::string_view event_type,
                const EventFields& fields = {});

  void attach(EventConsumer* consumer);
  void detach(EventConsumer* consumer);

  const std::string& source_id() const { return source_id_; }
  uint64_t last_seq() const;

 private:
  Counter& events_counter(std::string_view event_namespace, std::string_view event_type);

  const std::string source_id_;
  SeqStore& seq_;
  Journal& journal_;
  MetricsRegistry& metrics_;
  mutable std::mutex mutex_;
  std::vector<EventConsumer*> consumers_;
  // (namespace, type) -> counter, so the hot path skips the registry lookup.
  detail::EventTypeMemo<Counter*> counter_cache_;
};

}  // namespace zctl
