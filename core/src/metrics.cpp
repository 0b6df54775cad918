#include "zctl/core/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "zctl/core/detail/json_text.hpp"

namespace zctl {

namespace {

template <typename Atomic>
void atomic_add_double(Atomic& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

template <typename Child>
std::unique_ptr<Child> make_child(const std::vector<double>& bounds) {
  if constexpr (std::is_same_v<Child, Histogram>) {
    return std::make_unique<Histogram>(bounds);
  } else {
    (void)bounds;
    return std::make_unique<Child>();
  }
}

void append_number(std::string& out, double v) {
  if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
  } else if (std::isnan(v)) {
    out.append("NaN");
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    json::append_integer(out, static_cast<int64_t>(v));
  } else {
    json::append_double(out, v);
  }
}

// Label values escape backslash, double quote and newline (exposition format).
void append_label_value(std::string& out, const std::string& value) {
  for (char c : value) {
    if (c == '\\') out.append("\\\\");
    else if (c == '"') out.append("\\\"");
    else if (c == '\n') out.append("\\n");
    else out.push_back(c);
  }
}

void append_labels(std::string& out, const std::vector<std::string>& names, const Labels& values,
                   const char* extra_name = nullptr, const std::string& extra_value = {}) {
  if (names.empty() && !extra_name) return;
  out.push_back('{');
  bool first = true;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!first) out.push_back(',');
    first = false;
    out.append(names[i]).append("=\"");
    append_label_value(out, values[i]);
    out.push_back('"');
  }
  if (extra_name) {
    if (!first) out.push_back(',');
    out.append(extra_name).append("=\"");
    append_label_value(out, extra_value);
    out.push_back('"');
  }
  out.push_back('}');
}

void append_header(std::string& out, const std::string& name, const std::string& help,
                   const char* type) {
  out.append("# HELP ").append(name).push_back(' ');
  for (char c : help) {
    if (c == '\\') out.append("\\\\");
    else if (c == '\n') out.append("\\n");
    else out.push_back(c);
  }
  out.append("\n# TYPE ").append(name).push_back(' ');
  out.append(type).push_back('\n');
}

template <typename Map, typename... Args>
auto& find_or_create(std::mutex& mutex, Map& map, const std::string& name, Args&&... args) {
  std::lock_guard lock(mutex);
  auto it = map.find(name);
  if (it == map.end()) {
    using FamilyT = typename Map::mapped_type::element_type;
    it = map.emplace(name, std::make_unique<FamilyT>(name, std::forward<Args>(args)...)).first;
  }
  return *it->second;
}

}  // namespace

void Gauge::add(double d) { atomic_add_double(value_, d); }

Histogram::Histogram(const std::vector<double>& upper_bounds)
    : bounds_(upper_bounds), buckets_(new std::atomic<uint64_t>[upper_bounds.size() + 1]) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end())) throw std::invalid_argument("histogram bounds must be sorted");
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  const size_t index = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  atomic_add_double(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::cumulative_counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    out[i] = running;
  }
  return out;
}

template <typename Child>
Child& Family<Child>::with(const Labels& values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": wrong number of label values");
  }
  std::lock_guard lock(mutex_);
  auto& slot = children_[values];
  if (!slot) slot = make_child<Child>(bounds_);
  return *slot;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Family<Counter>& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                          std::vector<std::string> label_names) {
  return find_or_create(mutex_, counters_, name, help, std::move(label_names));
}

Family<Gauge>& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  return find_or_create(mutex_, gauges_, name, help, std::move(label_names));
}

Family<Histogram>& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> bounds) {
  return find_or_create(mutex_, histograms_, name, help, std::move(label_names), std::move(bounds));
}

std::vector<double> MetricsRegistry::latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> MetricsRegistry::duration_buckets() {
  return {0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  out.reserve(8192);
  for (const auto& [name, family] : counters_) {
    append_header(out, name, family->help(), "counter");
    family->for_each([&](const Labels& labels, const Counter& c) {
      out.append(name);
      append_labels(out, family->label_names(), labels);
      out.push_back(' ');
      json::append_integer(out, c.value());
      out.push_back('\n');
    });
  }
  for (const auto& [name, family] : gauges_) {
    append_header(out, name, family->help(), "gauge");
    family->for_each([&](const Labels& labels, const Gauge& g) {
      out.append(name);
      append_labels(out, family->label_names(), labels);
      out.push_back(' ');
      append_number(out, g.value());
      out.push_back('\n');
    });
  }
  for (const auto& [name, family] : histograms_) {
    append_header(out, name, family->help(), "histogram");
    family->for_each([&](const Labels& labels, const Histogram& h) {
      const auto counts = h.cumulative_counts();
      const auto& bounds = h.upper_bounds();
      for (size_t i = 0; i <= bounds.size(); ++i) {
        std::string le;
        if (i == bounds.size()) {
          le = "+Inf";
        } else {
          append_number(le, bounds[i]);
        }
        out.append(name).append("_bucket");
        append_labels(out, family->label_names(), labels, "le", le);
        out.push_back(' ');
        json::append_integer(out, counts[i]);
        out.push_back('\n');
      }
      out.append(name).append("_sum");
      append_labels(out, family->label_names(), labels);
      out.push_back(' ');
      append_number(out, h.sum());
      out.push_back('\n');
      out.append(name).append("_count");
      append_labels(out, family->label_names(), labels);
      out.push_back(' ');
      json::append_integer(out, h.count());
      out.push_back('\n');
    });
  }
  return out;
}

}  // namespace zctl
