// Times that nkb processes write for each other (ring-group ask deadlines, start times in the
// registry and the filter's records) in the host's terms. A process in a time namespace (CRIU
// restores, some containers) sees CLOCK_MONOTONIC and CLOCK_BOOTTIME offset by its
// namespace's offsets, and the kernel adds the reader's boottime offset to every start time
// /proc shows it. Each process takes its own offsets off (/proc/self/timens_offsets), so
// every record holds host times, and every reader compares host times.
#ifndef NKB_HOST_CLOCK_H
#define NKB_HOST_CLOCK_H

#include <stdint.h>

// The host's CLOCK_MONOTONIC in ms, low 32 bits (deadlines compare by unsigned gaps).
uint32_t nkb_host_mono_ms(void);

// A start time as /proc shows it to this process (field 22 of /proc/PID/stat, clock ticks)
// in the host's ticks. Never 0 nor UINT64_MAX for a value that was neither (callers use
// both as marks); 0 and UINT64_MAX pass unchanged.
//
// Exact when the namespace's boottime offset is a whole number of ticks; otherwise the
// kernel's rounding of (start + offset) makes it the host's value or one more, depending on
// the process: compare start times of other processes with nkb_ticks_near.
uint64_t nkb_host_start_ticks(uint64_t shown);

// Whether two start times in host ticks name the same start (one tick either way, see
// above). A pid reused within a tick of its last owner's start is not a case: pids wrap far
// slower than that.
static inline int nkb_ticks_near(uint64_t a, uint64_t b) {
  return a == b || (a > 0 && a - 1u == b) || (b > 0 && b - 1u == a);
}

#endif
