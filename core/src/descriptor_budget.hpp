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
// plan and reads back the outcome. Call it from the thread that starts the
// node, before the services start their threads.
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

struct DescriptorPlan {
  uint64_t wanted = 0;            // mesh.max_pending + kDescriptorHeadroom
  uint64_t soft_limit = 0;        // the soft RLIMIT_NOFILE to run with
  uint64_t slots_to_reserve = 0;  // min(wanted, soft_limit, kMaxReservedSlots)
  bool short_of_wanted() const { return soft_limit < wanted; }
};

// `soft` and `hard` are the current RLIMIT_NOFILE (RLIM_INFINITY as
// UINT64_MAX). A soft limit already at or above `wanted` is left as it is.
DescriptorPlan plan_descriptors(uint32_t max_pending, uint64_t soft, uint64_t hard);

struct DescriptorReservation {
  DescriptorPlan plan;
  uint64_t soft_limit_before = 0;
  uint64_t hard_limit = 0;
  uint64_t table_slots = 0;  // the table's size afterwards (FDSize in /proc/self/status), 0 if unknown
  std::string limit_error;   // why the limits could not be read or raised; empty when they were
  std::string table_error;   // why the table could not be grown; empty when it was
};

// Slots in this process's descriptor table (FDSize in /proc/self/status),
// whether open or not; 0 when it cannot tell.
uint64_t descriptor_table_slots();

// Reads RLIMIT_NOFILE, raises the soft limit as planned and grows the
// descriptor table to plan.slots_to_reserve slots. Never throws; a failure is
// reported in `error` and the node runs with what it has.
DescriptorReservation reserve_descriptors(uint32_t max_pending);

}  // namespace zctl
