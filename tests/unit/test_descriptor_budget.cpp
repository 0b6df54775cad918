#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <string>

#include "descriptor_budget.hpp"

using zctl::kDescriptorHeadroom;
using zctl::plan_descriptors;

TEST_CASE("descriptor plan: the soft limit is raised towards max_pending plus headroom, never past the hard limit",
          "[descriptors]") {
  SECTION("a low soft limit is raised to what the node needs") {
    const auto plan = plan_descriptors(10000, 1024, 524288);
    CHECK(plan.wanted == 10000 + kDescriptorHeadroom);
    CHECK(plan.soft_limit == 10000 + kDescriptorHeadroom);
    CHECK(plan.slots_to_reserve == 10000 + kDescriptorHeadroom);
    CHECK_FALSE(plan.short_of_wanted());
  }
  SECTION("a soft limit already above the need is kept, not lowered; the table is sized to the need") {
    const auto plan = plan_descriptors(10000, 65536, 65536);
    CHECK(plan.soft_limit == 65536);
    CHECK(plan.slots_to_reserve == 10000 + kDescriptorHeadroom);
  }
  SECTION("a hard limit below the need caps the soft limit and the table, and says so") {
    const auto plan = plan_descriptors(30000, 1024, 20000);
    CHECK(plan.soft_limit == 20000);
    CHECK(plan.slots_to_reserve == 20000);
    CHECK(plan.short_of_wanted());
  }
  SECTION("an unlimited hard limit: raised to the need, not to unlimited") {
    const auto plan = plan_descriptors(64, 1024, UINT64_MAX);
    CHECK(plan.soft_limit == 64 + kDescriptorHeadroom);
    CHECK(plan.slots_to_reserve == 64 + kDescriptorHeadroom);
  }
  SECTION("the largest max_pending: the limit follows it, the table up front stops at kMaxReservedSlots") {
    const auto plan = plan_descriptors(UINT32_MAX, 1024, UINT64_MAX);
    CHECK(plan.wanted == uint64_t{UINT32_MAX} + kDescriptorHeadroom);
    CHECK(plan.soft_limit == plan.wanted);
    CHECK(plan.slots_to_reserve == zctl::kMaxReservedSlots);
  }
}

namespace {

// Slots in this process's descriptor table, open or not.
uint64_t descriptor_table_slots() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("FDSize:", 0) == 0) return std::stoull(line.substr(7));
  }
  return 0;
}

// Runs `body` in a forked child, which starts with a descriptor table sized
// to what it inherits and whose limits are its own; returns what it reported.
template <typename Body>
std::array<uint64_t, 4> in_child(Body body) {
  std::array<int, 2> out{};
  REQUIRE(::pipe(out.data()) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(out[0]);
    const std::array<uint64_t, 4> report = body();
    const auto written = ::write(out[1], report.data(), sizeof(report));
    ::_exit(written == static_cast<ssize_t>(sizeof(report)) ? 0 : 1);
  }
  ::close(out[1]);
  std::array<uint64_t, 4> report{};
  const auto got = ::read(out[0], report.data(), sizeof(report));
  ::close(out[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(got == static_cast<ssize_t>(sizeof(report)));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  return report;
}

uint64_t hard_file_limit() {
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  return limit.rlim_max;
}

}  // namespace

// Nothing else in the child grows the table.
TEST_CASE("reserve_descriptors grows the process's descriptor table to the plan in one step", "[descriptors]") {
  // The kernel sizes tables in powers of two: 7 200 alone would fit 8 192
  // slots, 7 200 + the headroom needs 16 384.
  const uint32_t max_pending = 7200;
  if (hard_file_limit() < max_pending + kDescriptorHeadroom) {
    WARN("RLIMIT_NOFILE hard limit " << hard_file_limit() << " is too low for this test");
    return;
  }
  const auto report = in_child([&] {
    std::array<uint64_t, 4> r{};
    r[0] = descriptor_table_slots();
    const auto reservation = zctl::reserve_descriptors(max_pending);
    r[1] = descriptor_table_slots();
    r[2] = reservation.limit.error.empty() && reservation.table_error.empty() ? 1 : 0;
    return r;
  });
  INFO("table before " << report[0] << ", after " << report[1]);
  CHECK(report[0] < max_pending);
  CHECK(report[1] >= max_pending + kDescriptorHeadroom);
  CHECK(report[2] == 1);  // and it reported no error
}

// The limit half alone, as `zctl probe` uses it.
TEST_CASE("raise_file_limit raises a low soft limit, reports it, and never lowers one", "[descriptors]") {
  if (hard_file_limit() < 3000) {
    WARN("RLIMIT_NOFILE hard limit " << hard_file_limit() << " is too low for this test");
    return;
  }
  const auto report = in_child([] {
    std::array<uint64_t, 4> r{};
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = 1024;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    const auto raised = zctl::raise_file_limit(3000);
    const auto kept = zctl::raise_file_limit(2000);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    r[0] = raised.soft_before;
    r[1] = raised.soft;
    r[2] = kept.soft;
    r[3] = limit.rlim_cur;
    return r;
  });
  CHECK(report[0] == 1024);
  CHECK(report[1] == 3000);
  CHECK(report[2] == 3000);
  CHECK(report[3] == 3000);
}
