#include "descriptor_budget.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace zctl {

namespace {

uint64_t from_rlim(rlim_t value) { return value == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(value); }

std::string describe(const std::string& what, int error) { return what + ": " + std::strerror(error); }

}  // namespace

uint64_t raised_soft_limit(uint64_t wanted, uint64_t soft, uint64_t hard) {
  return std::max(soft, std::min(hard, wanted));
}

DescriptorPlan plan_descriptors(uint32_t max_pending, uint64_t soft, uint64_t hard) {
  DescriptorPlan plan;
  plan.wanted = uint64_t{max_pending} + kDescriptorHeadroom;
  plan.soft_limit = raised_soft_limit(plan.wanted, soft, hard);
  plan.slots_to_reserve = std::min({plan.wanted, plan.soft_limit, kMaxReservedSlots});
  return plan;
}

FileLimit raise_file_limit(uint64_t wanted) {
  FileLimit result;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    const int error = errno;
    result.error = describe("getrlimit(RLIMIT_NOFILE)", error);
    return result;
  }
  result.read = true;
  result.soft_before = result.soft = from_rlim(limit.rlim_cur);
  result.hard = from_rlim(limit.rlim_max);
  const uint64_t soft = raised_soft_limit(wanted, result.soft_before, result.hard);
  if (soft == result.soft_before) return result;
  limit.rlim_cur = static_cast<rlim_t>(soft);
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    // fs.nr_open can be below the hard limit; the old soft limit stays.
    const int error = errno;
    result.error =
        describe("raising the soft RLIMIT_NOFILE to " + std::to_string(soft) + " (at most fs.nr_open)", error);
    return result;
  }
  result.soft = soft;
  return result;
}

DescriptorReservation reserve_descriptors(uint32_t max_pending) {
  DescriptorReservation result;
  result.limit = raise_file_limit(uint64_t{max_pending} + kDescriptorHeadroom);
  if (!result.limit.read) return result;
  result.plan = plan_descriptors(max_pending, result.limit.soft, result.limit.soft);
  // Duplicating a descriptor to the top slot makes the kernel allocate the
  // whole table in one growth. F_DUPFD takes the lowest free slot at or
  // above the one asked for, so it never replaces an open descriptor the
  // way dup2() would.
  const int seed = ::eventfd(0, EFD_CLOEXEC);
  if (seed < 0) {
    const int error = errno;
    result.table_error = describe("eventfd", error);
    return result;
  }
  // At least 1: the soft limit let `seed` open. At most kMaxReservedSlots.
  const auto top_slot = static_cast<int>(result.plan.slots_to_reserve - 1);
  const int top = ::fcntl(seed, F_DUPFD_CLOEXEC, top_slot);
  if (top < 0) {
    const int error = errno;
    result.table_error =
        describe("growing the descriptor table to " + std::to_string(result.plan.slots_to_reserve) + " slots", error);
  } else {
    ::close(top);
  }
  ::close(seed);
  return result;
}

}  // namespace zctl
