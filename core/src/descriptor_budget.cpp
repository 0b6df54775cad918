#include "descriptor_budget.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
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

DescriptorPlan plan_descriptors(uint64_t max_pending, uint64_t soft, uint64_t hard) {
  DescriptorPlan plan;
  plan.wanted = max_pending + kDescriptorHeadroom;
  plan.soft_limit = soft >= plan.wanted ? soft : std::max(soft, std::min(hard, plan.wanted));
  plan.reserve = std::min(plan.wanted, plan.soft_limit);
  return plan;
}

DescriptorReservation reserve_descriptors(uint64_t max_pending) {
  DescriptorReservation result;
  const auto failed = [&result](const std::string& what) {
    result.error += (result.error.empty() ? "" : "; ") + what + ": " + std::strerror(errno);
  };
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    failed("getrlimit(RLIMIT_NOFILE)");
    return result;
  }
  result.soft_limit_before = from_rlim(limit.rlim_cur);
  result.hard_limit = from_rlim(limit.rlim_max);
  result.plan = plan_descriptors(max_pending, from_rlim(limit.rlim_cur), result.hard_limit);
  if (result.plan.soft_limit != from_rlim(limit.rlim_cur)) {
    rlimit raised = limit;
    raised.rlim_cur = static_cast<rlim_t>(result.plan.soft_limit);
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      // fs.nr_open can be below the hard limit; run with the old soft limit.
      failed("raising the soft RLIMIT_NOFILE to " + std::to_string(result.plan.soft_limit));
      result.plan = plan_descriptors(max_pending, from_rlim(limit.rlim_cur), from_rlim(limit.rlim_cur));
    }
  }
  // Duplicating a descriptor to the top slot makes the kernel allocate the
  // whole table in one growth. F_DUPFD takes the lowest free slot at or
  // above the one asked for, so it never replaces an open descriptor the
  // way dup2() would.
  const int seed = ::eventfd(0, EFD_CLOEXEC);
  if (seed < 0) {
    failed("eventfd");
  } else {
    // The soft limit bounds the slot (fs.nr_open bounds the soft limit), so it fits an int.
    const auto top_slot = static_cast<int>(std::min<uint64_t>(std::max<uint64_t>(result.plan.reserve, 1) - 1, INT_MAX));
    const int top = ::fcntl(seed, F_DUPFD_CLOEXEC, top_slot);
    if (top < 0) {
      failed("growing the descriptor table to " + std::to_string(result.plan.reserve) + " slots");
    } else {
      ::close(top);
    }
    ::close(seed);
  }
  result.table_slots = descriptor_table_slots();
  return result;
}

}  // namespace zctl
