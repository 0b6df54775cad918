#include "descriptor_budget.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace zctl {

namespace {

uint64_t from_rlim(rlim_t value) { return value == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(value); }

}  // namespace

uint64_t descriptor_table_slots() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("FDSize:", 0) == 0) return std::strtoull(line.c_str() + 7, nullptr, 10);
  }
  return 0;
}

DescriptorPlan plan_descriptors(uint32_t max_pending, uint64_t soft, uint64_t hard) {
  DescriptorPlan plan;
  plan.wanted = uint64_t{max_pending} + kDescriptorHeadroom;
  plan.soft_limit = std::max(soft, std::min(hard, plan.wanted));
  plan.slots_to_reserve = std::min({plan.wanted, plan.soft_limit, kMaxReservedSlots});
  return plan;
}

DescriptorReservation reserve_descriptors(uint32_t max_pending) {
  DescriptorReservation result;
  const auto describe = [](const std::string& what, int error) { return what + ": " + std::strerror(error); };
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    const int error = errno;
    result.limit_error = describe("getrlimit(RLIMIT_NOFILE)", error);
    return result;
  }
  result.soft_limit_before = from_rlim(limit.rlim_cur);
  result.hard_limit = from_rlim(limit.rlim_max);
  result.plan = plan_descriptors(max_pending, result.soft_limit_before, result.hard_limit);
  if (result.plan.soft_limit != result.soft_limit_before) {
    rlimit raised = limit;
    raised.rlim_cur = static_cast<rlim_t>(result.plan.soft_limit);
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      // fs.nr_open can be below the hard limit; run with the old soft limit.
      const int error = errno;
      result.limit_error = describe("raising the soft RLIMIT_NOFILE to " + std::to_string(result.plan.soft_limit) +
                                        " (at most fs.nr_open)",
                                    error);
      result.plan = plan_descriptors(max_pending, result.soft_limit_before, result.soft_limit_before);
    }
  }
  // Duplicating a descriptor to the top slot makes the kernel allocate the
  // whole table in one growth. F_DUPFD takes the lowest free slot at or
  // above the one asked for, so it never replaces an open descriptor the
  // way dup2() would.
  const int seed = ::eventfd(0, EFD_CLOEXEC);
  if (seed < 0) {
    const int error = errno;
    result.table_error = describe("eventfd", error);
  } else {
    // Below the soft limit, which fs.nr_open (an int) bounds.
    const auto top_slot =
        static_cast<int>(std::min<uint64_t>(std::max<uint64_t>(result.plan.slots_to_reserve, 1) - 1, INT_MAX));
    const int top = ::fcntl(seed, F_DUPFD_CLOEXEC, top_slot);
    if (top < 0) {
      const int error = errno;
      result.table_error =
          describe("growing the descriptor table to " + std::to_string(result.plan.slots_to_reserve) + " slots", error);
    } else {
      ::close(top);
    }
    ::close(seed);
  }
  result.table_slots = descriptor_table_slots();
  return result;
}

}  // namespace zctl
