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
uint64_t nkb_host_start_ticks(uint64_t shown);

#endif
