// A library planted by someone else where nkb must not look: its constructor leaves a
// mark (the file named by NKB_PLANTED_MARK), which proves it was mapped and ran.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void planted_ran(void) {
  const char *mark = getenv("NKB_PLANTED_MARK");
  if (mark == 0) return;
  int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd >= 0) {
    (void)write(fd, "ran\n", 4);
    (void)close(fd);
  }
}

int nkb_abi_version(void);
int nkb_abi_version(void) { return 2; }
