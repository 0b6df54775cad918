// zctl_kafka_mock: hosts librdkafka's mock Kafka cluster (the real Kafka protocol on loopback TCP
// ports) for the kafka sink's tests and benchmark, and lets a script drive it.
//
//   zctl_kafka_mock [--brokers N]
//
// Prints the cluster's bootstrap servers as its first line on stdout, then reads one command per
// line on stdin and answers each with one line, "ok" or "error: <why>":
//
//   topic NAME PARTITIONS              create a topic (replication factor 1)
//   errors APIKEY CODE [CODE...]       the next requests of that API fail with these codes, in order
//   broker-errors ID APIKEY CODE [CODE...]   the same for one broker only
//   clear APIKEY                       forget queued errors of that API
//   down ID                            broker ID (-1: every broker) drops its connections and refuses new ones
//   up ID                              and accepts them again
//   rtt ID MS                          delay every response of broker ID (-1: all) by MS milliseconds
//   quit                               (or end of input) destroys the cluster and exits 0
//
// APIKEY is a number or one of produce, fetch, metadata. CODE is a number or an error name as
// librdkafka spells it, e.g. MSG_SIZE_TOO_LARGE, NOT_ENOUGH_REPLICAS, _TRANSPORT.
// Consumers (kcat -C) and producers connect to the printed bootstrap servers like to any broker.
//
// One difference from a real broker is removed: Kafka sets TCP_NODELAY on every connection it
// accepts, librdkafka's mock (2.0) does not. Without it, whenever a client has two requests in
// flight the second response waits in Nagle's algorithm for the client's delayed ACK, about
// 40 ms, which no real broker would add. This program defines accept() (exported, so it
// interposes on the C library's for librdkafka) and sets TCP_NODELAY on each accepted socket.
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern "C" int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  using accept_fn = int (*)(int, struct sockaddr*, socklen_t*);
  static const auto real = reinterpret_cast<accept_fn>(dlsym(RTLD_NEXT, "accept"));
  const int s = real(fd, addr, len);
  if (s >= 0) {
    const int one = 1;
    (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // fails harmlessly on non-TCP
  }
  return s;
}

namespace {

std::optional<long> to_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return v;
}

std::optional<int16_t> api_key(const std::string& s) {
  if (s == "produce") return 0;
  if (s == "fetch") return 1;
  if (s == "metadata") return 3;
  if (auto n = to_number(s); n && *n >= 0 && *n < 100) return static_cast<int16_t>(*n);
  return std::nullopt;
}

std::optional<rd_kafka_resp_err_t> error_code(const std::string& s) {
  if (auto n = to_number(s)) return static_cast<rd_kafka_resp_err_t>(*n);
  const rd_kafka_err_desc* descs = nullptr;
  size_t count = 0;
  rd_kafka_get_err_descs(&descs, &count);
  for (size_t i = 0; i < count; ++i) {
    if (descs[i].name != nullptr && s == descs[i].name) return descs[i].code;
  }
  return std::nullopt;
}

// Runs one command line; returns the error text, or "" when it worked.
std::string run(rd_kafka_mock_cluster_t* mcluster, const std::string& line, bool& quit) {
  std::istringstream in(line);
  std::vector<std::string> w;
  for (std::string word; in >> word;) w.push_back(word);
  if (w.empty()) return "empty command";
  const std::string& cmd = w[0];
  const auto check = [](rd_kafka_resp_err_t err) { return err ? std::string(rd_kafka_err2str(err)) : std::string(); };
  if (cmd == "quit") {
    quit = true;
    return "";
  }
  if (cmd == "topic" && w.size() == 3) {
    const auto partitions = to_number(w[2]);
    if (!partitions || *partitions < 1) return "PARTITIONS must be a positive number";
    return check(rd_kafka_mock_topic_create(mcluster, w[1].c_str(), static_cast<int>(*partitions), 1));
  }
  if ((cmd == "errors" && w.size() >= 3) || (cmd == "broker-errors" && w.size() >= 4)) {
    const bool per_broker = cmd == "broker-errors";
    const auto broker = per_broker ? to_number(w[1]) : std::optional<long>(0);
    if (!broker) return "ID must be a number";
    const std::size_t first = per_broker ? 2 : 1;
    const auto key = api_key(w[first]);
    if (!key) return "unknown APIKEY '" + w[first] + "'";
    std::vector<rd_kafka_resp_err_t> codes;
    for (std::size_t i = first + 1; i < w.size(); ++i) {
      const auto code = error_code(w[i]);
      if (!code) return "unknown error code '" + w[i] + "'";
      codes.push_back(*code);
    }
    if (!per_broker) {
      rd_kafka_mock_push_request_errors_array(mcluster, *key, codes.size(), codes.data());
      return "";
    }
    // The per-broker call is variadic with (error, rtt) pairs: push them one at a time.
    for (const auto code : codes) {
      const auto err =
          rd_kafka_mock_broker_push_request_error_rtts(mcluster, static_cast<int32_t>(*broker), *key, 1, code, 0);
      if (err) return check(err);
    }
    return "";
  }
  if (cmd == "clear" && w.size() == 2) {
    const auto key = api_key(w[1]);
    if (!key) return "unknown APIKEY '" + w[1] + "'";
    rd_kafka_mock_clear_request_errors(mcluster, *key);
    return "";
  }
  if ((cmd == "down" || cmd == "up") && w.size() == 2) {
    const auto id = to_number(w[1]);
    if (!id) return "ID must be a number";
    const auto broker = static_cast<int32_t>(*id);
    return check(cmd == "down" ? rd_kafka_mock_broker_set_down(mcluster, broker)
                               : rd_kafka_mock_broker_set_up(mcluster, broker));
  }
  if (cmd == "rtt" && w.size() == 3) {
    const auto id = to_number(w[1]);
    const auto ms = to_number(w[2]);
    if (!id || !ms || *ms < 0) return "usage: rtt ID MS";
    return check(rd_kafka_mock_broker_set_rtt(mcluster, static_cast<int32_t>(*id), static_cast<int>(*ms)));
  }
  return "unknown command or wrong arguments: " + line;
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--brokers" && i + 1 < argc) {
      brokers = std::atoi(argv[++i]);
    } else {
      std::cerr << "usage: zctl_kafka_mock [--brokers N]\n";
      return 2;
    }
  }
  if (brokers < 1) {
    std::cerr << "--brokers must be at least 1\n";
    return 2;
  }

  // The mock cluster needs a client instance for its bookkeeping; it never connects anywhere.
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // Warnings and errors only: the client has no bootstrap servers on purpose.
  for (const auto& [name, value] :
       {std::pair<const char*, const char*>{"client.id", "zctl-kafka-mock"}, {"log_level", "4"}}) {
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
      std::cerr << err << "\n";
      return 1;
    }
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::cerr << "rd_kafka_new: " << err << "\n";
    return 1;
  }
  rd_kafka_mock_cluster_t* mcluster = rd_kafka_mock_cluster_new(rk, brokers);
  if (mcluster == nullptr) {
    std::cerr << "rd_kafka_mock_cluster_new failed\n";
    rd_kafka_destroy(rk);
    return 1;
  }
  std::cout << rd_kafka_mock_cluster_bootstraps(mcluster) << std::endl;

  bool quit = false;
  for (std::string line; !quit && std::getline(std::cin, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string error = run(mcluster, line, quit);
    std::cout << (error.empty() ? "ok" : "error: " + error) << std::endl;
  }

  rd_kafka_mock_cluster_destroy(mcluster);
  rd_kafka_destroy(rk);
  return 0;
}
