// The refresher (refresh.c): the kernel's counters and recv_q into every socket's stats
// and slot every NKB_REFRESH_MS while the process has an engine. Started and stopped under
// the setup lock (attach, the last engine's close); refresh.c's destructor stops it at
// unload or exit.
#ifndef NKB_REFRESH_H
#define NKB_REFRESH_H

#define NKB_REFRESH_MS 250u
void nkb_refresh_start(void);
void nkb_refresh_stop(void);

#endif
