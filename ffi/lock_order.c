// The calling thread's held lock ranks (lock_order.h): per thread, so no lock guards it.
#include "lock_order.h"

__thread uint32_t nkb_ranks_held = 0;
