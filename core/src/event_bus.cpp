#include "zctl/core/event_bus.hpp"

#include <algorithm>

#include "zctl/core/journal.hpp"
#include "zctl/core/metrics.hpp"
#include "zctl/core/seq_store.hpp"

namespace zctl {

EventBus::EventBus(std::string source_id, SeqStore& seq, Journal& journal, MetricsRegistry& metrics)
    : source_id_(std::move(source_id)), seq_(seq), journal_(journal), metrics_(metrics) {}

EventPtr EventBus::emit(std::string_view event_namespace, std::string_view event_type,
                        const EventFields& fields) {
  auto event = std::make_shared<Event>();
  event->event_namespace = event_namespace;
  event->event_type = event_type;
  std::lock_guard lock(mutex_);
  // Time and seq are taken under the lock so timestamps never go backwards
  // as seq goes forwards.
  event->time = std::chrono::system_clock::now();
  event->seq = seq_.next();
  event->json = serialize_event(event_namespace, event_type, source_id_, event->time, event->seq, fields);
  EventPtr shared = std::move(event);
  journal_.append(shared);
  events_counter(event_namespace, event_type).inc();
  for (EventConsumer* consumer : consumers_) consumer->consume(shared);
  return shared;
}

void EventBus::attach(EventConsumer* consumer) {
  std::lock_guard lock(mutex_);
  consumers_.push_back(consumer);
}

void EventBus::detach(EventConsumer* consumer) {
  std::lock_guard lock(mutex_);
  consumers_.erase(std::remove(consumers_.begin(), consumers_.end(), consumer), consumers_.end());
}

uint64_t EventBus::last_seq() const {
  std::lock_guard lock(mutex_);
  return seq_.last();
}

Counter& EventBus::events_counter(std::string_view event_namespace, std::string_view event_type) {
  if (Counter* const* known = counter_cache_.find(event_namespace, event_type)) return **known;
  Counter& counter = metrics_
                         .counter("controller_events_total", "Events emitted by this node.",
                                  {"namespace", "type"})
                         .with({std::string(event_namespace), std::string(event_type)});
  return *counter_cache_.insert(event_namespace, event_type, &counter);
}

}  // namespace zctl
