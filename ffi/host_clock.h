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

// What nkb_proc_start_ticks answers when /proc could not say (out of descriptors, hidepid,
// a short read): never taken for "gone".
#define NKB_START_UNKNOWN UINT64_MAX

// The start time in a /proc stat file (field 22 of /proc/PID/stat, /proc/self/stat), in the
// host's clock ticks: 0 when the process is gone (ENOENT, ESRCH), NKB_START_UNKNOWN when
// /proc could not say. Exact when this process's boottime offset is a whole number of
// ticks; otherwise the kernel's rounding of (start + offset) makes it the host's value or
// one more, depending on the process: compare other processes' with nkb_ticks_near.
uint64_t nkb_proc_start_ticks(const char *path);

// The inode of a namespace link (/proc/self/ns/pid, ...), 0 when unreadable.
uint64_t nkb_ns_ino(const char *path);

// Whether two start times in host ticks name the same start (one tick either way, see
// above). A pid reused within a tick of its last owner's start is not a case: pids wrap far
// slower than that.
static inline int nkb_ticks_near(uint64_t a, uint64_t b) {
  return a == b || (a > 0 && a - 1u == b) || (b > 0 && b - 1u == a);
}

#endif
