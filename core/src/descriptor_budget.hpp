// How many file descriptors the node sizes itself for, decided once at
// start-up, before the services open anything.
//
// Two things follow from the number:
// - The soft RLIMIT_NOFILE is raised towards it (never above the hard
//   limit), so a node configured for 10 000 pending mesh connections does
//   not stop at the common soft default of 1 024. The node uses poll/epoll
//   only, never select(), so descriptors above 1 023 are safe.
// - The process's descriptor table is grown to that size at once. The
//   kernel grows the table by doubling as descriptors are opened, and in a
//   process with more than one thread every growth waits for an RCU grace
//   period (expand_fdtable() calls synchronize_rcu()): milliseconds to tens
//   of milliseconds on a busy VM, during which the thread calling accept()
//   sleeps while the accept queue fills. A fresh node's first flood of
//   20 000 connections went through every doubling up to 32 768 slots, its
//   second flood through none; reserving the table up front removes them.
//
// plan_descriptors() is pure and tested; reserve_descriptors() applies a
// plan. Call it from the thread that starts the node, before the services
// start their threads. raise_file_limit() is the limit half alone, for
// `zctl probe`, which holds a descriptor per connection but has one thread.
#pragma once

#include <cstdint>
#include <string>

namespace zctl {

// Descriptors the node keeps for everything but pending mesh connections:
// joined sessions, admin and watch clients, raft's sockets and log files,
// sinks and their plugins.
inline constexpr uint64_t kDescriptorHeadroom = 1024;
// The most table slots reserved up front, whatever mesh.max_pending says:
// fs.nr_open's default, 8 MiB of kernel memory. Past it the kernel grows
// the table as descriptors open.
inline constexpr uint64_t kMaxReservedSlots = 1 << 20;

// The soft RLIMIT_NOFILE that allows `wanted` descriptors: `soft` raised to
// `wanted`, never past `hard`, never lowered. RLIM_INFINITY is UINT64_MAX.
uint64_t raised_soft_limit(uint64_t wanted, uint64_t soft, uint64_t hard);

struct DescriptorPlan {
  uint64_t wanted = 0;            // mesh.max_pending + kDescriptorHeadroom
  uint64_t soft_limit = 0;        // raised_soft_limit(wanted, soft, hard)
  uint64_t slots_to_reserve = 0;  // min(wanted, soft_limit, kMaxReservedSlots)
  bool short_of_wanted() const { return soft_limit < wanted; }
};

// `soft` and `hard` are the current RLIMIT_NOFILE.
DescriptorPlan plan_descriptors(uint32_t max_pending, uint64_t soft, uint64_t hard);

struct FileLimit {
  bool read = false;  // getrlimit() worked; all else is 0 when not
  uint64_t soft_before = 0;
  uint64_t soft = 0;  // in force afterwards
  uint64_t hard = 0;
  std::string error;  // why it could not be read, or raised (soft is then soft_before)
};

// Raises this process's soft RLIMIT_NOFILE to raised_soft_limit(wanted, ...).
// Never throws.
FileLimit raise_file_limit(uint64_t wanted);

struct DescriptorReservation {
  FileLimit limit;
  DescriptorPlan plan;      // with the soft limit in force afterwards
  std::string table_error;  // why the table could not be grown; empty when it was
};

// Raises the soft limit for mesh.max_pending and grows the descriptor table
// to plan.slots_to_reserve slots. Never throws; failures are reported in
// limit.error and table_error, and the node runs with what it has.
DescriptorReservation reserve_descriptors(uint32_t max_pending);

}  // namespace zctl
