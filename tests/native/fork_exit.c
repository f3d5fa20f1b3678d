// A process that forks while libnkb.so is loaded; its child calls exit() at once, which
// runs the library's destructors in a process where none of the parent's threads exist.
// With "attach", a bypass socket on the interface holding IP holds an engine first, so
// the refresher thread runs in the parent. The parent waits for the child (3 s at most,
// then kills it) and prints one JSON line: {"attached":0|1,"exited":0|1,"status":N,"ms":N}.
//
// Usage: fork_exit IP attach|kernel
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nkb.h"

#define WAIT_ROUNDS 300u  // 10 ms apart
#define ETH_HEADER 14u
#define XDP_HEADROOM 256u

static void fail(const char *what, int32_t rc) {
  fprintf(stderr, "fork_exit: %s: %d\n", what, rc);
  exit(2);
}

static uint32_t attach(int32_t h, uint32_t ip_be) {
  int32_t ifindex = nkb_addr_ifindex(ip_be);
  if (ifindex < 0) fail("nkb_addr_ifindex", ifindex);
  nkb_link_t link;
  int32_t rc = nkb_link_get((uint32_t)ifindex, (uint8_t *)&link, (uint32_t)sizeof(link));
  if (rc < 0) fail("nkb_link_get", rc);
  uint32_t queues = link.num_rx_queues < 1u ? 1u : link.num_rx_queues;
  uint32_t frame = link.mtu + ETH_HEADER + XDP_HEADROOM <= 2048u ? 2048u : 4096u;
  rc = nkb_sock_attach(h, (uint32_t)ifindex, 0, queues, frame, 0, link.mtu);
  if (rc < 0) fail("nkb_sock_attach", rc);
  return 1u;
}

int main(int argc, char **argv) {
  if (argc != 3) fail("usage: fork_exit IP attach|kernel", -EINVAL);
  struct in_addr ip;
  if (inet_pton(AF_INET, argv[1], &ip) != 1) fail("bad IP", -EINVAL);
  int32_t h = nkb_sock_open();
  if (h < 0) fail("nkb_sock_open", h);
  int32_t rc = nkb_sock_bind(h, ip.s_addr, 0);
  if (rc < 0) fail("nkb_sock_bind", rc);
  uint32_t attached = strcmp(argv[2], "attach") == 0 ? attach(h, ip.s_addr) : 0u;
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) fail("fork", -errno);
  if (pid == 0) exit(0);
  int status = -1;
  uint32_t exited = 0;
  uint32_t round = 0;
  for (; round < WAIT_ROUNDS && exited == 0; round++) {
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got < 0) fail("waitpid", -errno);
    if (got == pid) {
      exited = 1;
      break;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 10000000L};
    nanosleep(&ts, 0);
  }
  if (exited == 0) {
    (void)kill(pid, SIGKILL);
    (void)waitpid(pid, &status, 0);
  }
  printf("{\"attached\":%u,\"exited\":%u,\"status\":%d,\"ms\":%u}\n", attached, exited, status,
         round * 10u);
  (void)nkb_sock_shutdown(h);
  (void)nkb_sock_free(h);
  return 0;
}
