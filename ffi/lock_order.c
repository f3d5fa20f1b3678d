// The calling thread's held lock ranks (lock_order.h): per thread, so no lock guards it.
// Initial-exec TLS: 4 bytes of the static TLS block glibc keeps spare for dlopen'ed
// libraries. The general model would call __tls_get_addr on every lock and make the
// library need ld-linux-x86-64.so.2 (tests/prebuilt_elf.test.ts allows libc alone).
#include "lock_order.h"

__thread uint32_t nkb_ranks_held __attribute__((tls_model("initial-exec"))) = 0;
