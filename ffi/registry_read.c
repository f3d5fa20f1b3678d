// The registry's read side in the shim: opening another user's file safely, which Deno
// cannot do (no O_NOFOLLOW, O_NONBLOCK), and the parser's FFI entry. R's last component,
// R/<uid> and the file are opened without following links and checked with fstat on the
// opened descriptor (R/<uid> by owner, which is what makes the rest trustworthy), so a
// link or FIFO swapped in at any moment is refused, never followed, never waited on.
// (The components above R are the administrator's, e.g. /dev/shm. A FUSE mount a user
// placed on R/<uid> could still stall a read; that needs user_allow_other in fuse.conf.)
#define _GNU_SOURCE
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nkb.h"
#include "registry.h"
#include "registry_parse.h"

#define NKB_REG_READ_CALLS 64u  // read(2) calls per file at most
#define NKB_REG_LIST_MAX 8192u  // names listed per directory at most
#define NKB_REG_DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)

// A NUL-terminated string within len bytes, not empty: its length, or -1.
static int32_t nkb_zlen(const uint8_t *s, uint32_t len) {
  if (s == 0 || len == 0) return -1;
  const uint8_t *nul = memchr(s, 0, len);
  if (nul == 0 || nul == s) return -1;
  return (int32_t)(nul - s);
}

// A registry file name: digits and '-', then ".reg"; never a path.
static bool nkb_reg_name_ok(const uint8_t *name, uint32_t len) {
  int32_t n = nkb_zlen(name, len);
  if (n < 5 || n >= (int32_t)NKB_REG_NAME_MAX) return false;
  if (memcmp(name + n - 4, ".reg", 4) != 0) return false;
  for (int32_t i = 0; i < n - 4; i++) {
    if ((name[i] < '0' || name[i] > '9') && name[i] != '-') return false;
  }
  return true;
}

// Opens R/<uid> checked: the fd, or -ENOENT, NKB_REG_E_NOT_DIR (R is not a directory),
// NKB_REG_E_SQUATTED (R/<uid> is not a directory owned by uid and closed to others).
static int32_t nkb_reg_open_dir(const uint8_t *dir, uint32_t dir_len, uint32_t uid) {
  if (nkb_zlen(dir, dir_len) < 0) return -EINVAL;
  int rfd = open((const char *)dir, NKB_REG_DIR_FLAGS);
  if (rfd < 0) return errno == ENOTDIR || errno == ELOOP ? NKB_REG_E_NOT_DIR : -errno;
  char name[16];
  snprintf(name, sizeof(name), "%u", (unsigned)uid);
  int ufd = openat(rfd, name, NKB_REG_DIR_FLAGS);
  int err = errno;
  close(rfd);
  if (ufd < 0) return err == ENOTDIR || err == ELOOP ? NKB_REG_E_SQUATTED : -err;
  struct stat st;
  if (fstat(ufd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid ||
      (st.st_mode & 0022) != 0) {
    close(ufd);
    return NKB_REG_E_SQUATTED;
  }
  assert(ufd >= 0);
  return ufd;
}

// Reads an opened file (regular, owned by uid, at most out_len bytes): bytes read or a code.
static int32_t nkb_reg_read_fd(int fd, uint32_t uid, uint8_t *out, uint32_t out_len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  if (!S_ISREG(st.st_mode)) return NKB_REG_E_NOT_FILE;
  if (st.st_uid != uid) return NKB_REG_E_OWNER;
  if (st.st_size < 0 || (uint64_t)st.st_size > out_len) return NKB_REG_E_TOO_BIG;
  uint32_t got = 0;
  for (uint32_t i = 0; i < NKB_REG_READ_CALLS && got < out_len; i++) {
    ssize_t n = pread(fd, out + got, out_len - got, (off_t)got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    got += (uint32_t)n;
  }
  assert(got <= out_len);
  return (int32_t)got;
}

int32_t nkb_reg_read_file(const uint8_t *dir, uint32_t dir_len, uint32_t uid,
                          const uint8_t *name, uint32_t name_len, uint8_t *out,
                          uint32_t out_len) {
  if (!nkb_reg_name_ok(name, name_len) || out == 0 || out_len == 0) return -EINVAL;
  if (out_len > (uint32_t)INT32_MAX) return -EINVAL;
  int32_t ufd = nkb_reg_open_dir(dir, dir_len, uid);
  if (ufd < 0) return ufd;
  int fd = openat(ufd, (const char *)name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
                                               O_CLOEXEC);
  int err = errno;
  close(ufd);
  if (fd < 0) return err == ELOOP || err == ENXIO ? NKB_REG_E_NOT_FILE : -err;
  int32_t rc = nkb_reg_read_fd(fd, uid, out, out_len);
  close(fd);
  return rc;
}

int32_t nkb_reg_unlink(const uint8_t *dir, uint32_t dir_len, uint32_t uid,
                       const uint8_t *name, uint32_t name_len) {
  if (!nkb_reg_name_ok(name, name_len)) return -EINVAL;
  int32_t ufd = nkb_reg_open_dir(dir, dir_len, uid);
  if (ufd < 0) return ufd;
  int rc = unlinkat(ufd, (const char *)name, 0);
  int err = errno;
  close(ufd);
  return rc == 0 ? 0 : -err;
}

// Copies the names of an opened directory, each with its NUL, into out; at most
// NKB_REG_LIST_MAX names. One byte stays free for the mark of a listing cut short: an
// empty name (a name is never empty). Bytes written. Takes ufd (closed here).
static int32_t nkb_reg_names(int ufd, uint8_t *out, uint32_t out_len) {
  assert(out != 0 && out_len >= 1u);
  DIR *d = fdopendir(ufd);
  if (d == 0) {
    int err = errno;
    close(ufd);
    return -err;
  }
  uint32_t used = 0, names = 0;
  bool cut = false;
  for (uint32_t i = 0; i < NKB_REG_LIST_MAX + 2u; i++) {  // + "." and ".."
    errno = 0;
    struct dirent *ent = readdir(d);
    if (ent == 0) break;
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    size_t n = strlen(ent->d_name) + 1u;
    if (names == NKB_REG_LIST_MAX || n > out_len - 1u - used) {
      cut = true;
      break;
    }
    memcpy(out + used, ent->d_name, n);
    used += (uint32_t)n;
    names++;
  }
  if (!cut && names == NKB_REG_LIST_MAX) {  // the bound met: any name left (3 reads at most)
    errno = 0;
    for (uint32_t i = 0; i < 3u && !cut; i++) {
      struct dirent *ent = readdir(d);
      if (ent == 0) break;
      cut = strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0;
    }
  }
  int err = errno;
  closedir(d);
  if (err != 0 && !cut) return -err;
  if (cut) out[used++] = 0;
  assert(used <= out_len && names <= NKB_REG_LIST_MAX);
  return (int32_t)used;
}

int32_t nkb_reg_list_dir(const uint8_t *dir, uint32_t dir_len, uint32_t uid, uint8_t *out,
                         uint32_t out_len) {
  if (out == 0 || out_len == 0 || out_len > (uint32_t)INT32_MAX) return -EINVAL;
  int32_t ufd = nkb_reg_open_dir(dir, dir_len, uid);
  if (ufd < 0) return ufd;
  return nkb_reg_names(ufd, out, out_len);
}

int32_t nkb_reg_set_aside_user(const uint8_t *dir, uint32_t dir_len, uint32_t uid) {
  if (nkb_zlen(dir, dir_len) < 0) return -EINVAL;
  if (geteuid() != 0) return -EPERM;
  int rfd = open((const char *)dir, NKB_REG_DIR_FLAGS);
  if (rfd < 0) return errno == ENOTDIR || errno == ELOOP ? NKB_REG_E_NOT_DIR : -errno;
  struct stat st;
  int32_t rc = NKB_REG_E_NOT_DIR;
  // Only in R of root's: another owner of R could rename anything back (a root writer
  // takes R back first).
  if (fstat(rfd, &st) == 0 && S_ISDIR(st.st_mode)) {
    rc = st.st_uid == 0 ? nkb_reg_repair_user(rfd, (const char *)dir, uid, false) : -EPERM;
  }
  close(rfd);
  assert(rc <= 1);
  return rc;
}

int32_t nkb_reg_parse_file(const uint8_t *file, uint32_t file_len, const uint8_t *next,
                           uint32_t next_len, uint8_t *claims, uint32_t claims_len,
                           uint8_t *out, uint32_t out_len) {
  // Deno's buffers are byte arrays: the structs need their alignment.
  if (((uintptr_t)claims & 7u) != 0 || ((uintptr_t)out & 7u) != 0) return NKB_REG_P_ARGS;
  return nkb_reg_parse(file, file_len, next, next_len, (nkb_reg_claims_t *)claims, claims_len,
                       (nkb_reg_record_t *)out, out_len);
}
