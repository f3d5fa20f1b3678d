// Loads a prebuilt libnkb.so with dlopen(), as Deno.dlopen does, and calls entries that
// need no privilege, no network and no file: the ABI version, the clock, an environment
// read, numeric-only resolution (getaddrinfo with AI_NUMERICHOST never sends a packet)
// and the capability probe. Cross-compiled per target by tests/prebuilt_elf.test.ts and
// run there natively or under qemu-user; prints one JSON line, exits 0 unless it could
// not load the library or find an entry.
//
// Usage: prebuilt_driver LIB ENV_NAME (ENV_NAME must be set to an integer)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int32_t (*abi_fn)(void);
typedef double (*now_fn)(void);
typedef int32_t (*env_fn)(const uint8_t *, uint32_t, int32_t);
typedef int32_t (*resolve_fn)(const uint8_t *, uint32_t, uint32_t, uint32_t *, uint32_t);
typedef int32_t (*caps_fn)(uint64_t *, uint32_t);

#define RESOLVE_NUMERIC 1u  // NKB_RESOLVE_NUMERIC (ffi/nkb.h)
#define RESOLVE_WORDS 10u   // two header words and room for eight addresses
#define ENV_FALLBACK (-7)

static void *lib_handle;

static void *entry(const char *name) {
  void *f = dlsym(lib_handle, name);
  if (f == 0) {
    fprintf(stderr, "prebuilt_driver: no %s: %s\n", name, dlerror());
    exit(3);
  }
  return f;
}

static double mono_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return -1.0;
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

// Resolves `name` numerically; prints {"rc":N,"head":[a,b],"addrs":["x.x.x.x",...]}.
static void resolve(resolve_fn f, const char *name) {
  uint32_t out[RESOLVE_WORDS];
  memset(out, 0xa5, sizeof(out));
  int32_t rc = f((const uint8_t *)name, (uint32_t)strlen(name), RESOLVE_NUMERIC, out,
                 (uint32_t)sizeof(out));
  printf("{\"rc\":%d", rc);
  if (rc >= 0) {
    printf(",\"head\":[%u,%u],\"addrs\":[", out[0], out[1]);
    for (int32_t i = 0; i < rc && i < (int32_t)(RESOLVE_WORDS - 2u); i++) {
      char text[INET_ADDRSTRLEN];
      struct in_addr a = {.s_addr = out[2 + i]};
      printf("%s\"%s\"", i == 0 ? "" : ",", inet_ntop(AF_INET, &a, text, sizeof(text)));
    }
    printf("]");
  }
  printf("}");
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: prebuilt_driver LIB ENV_NAME\n");
    return 2;
  }
  lib_handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib_handle == 0) {
    fprintf(stderr, "prebuilt_driver: dlopen: %s\n", dlerror());
    return 3;
  }
  abi_fn abi = (abi_fn)entry("nkb_abi_version");
  now_fn now = (now_fn)entry("nkb_now_ms");
  env_fn env = (env_fn)entry("nkb_env_int");
  resolve_fn res = (resolve_fn)entry("nkb_resolve");
  caps_fn caps = (caps_fn)entry("nkb_caps");

  double before = mono_ms();
  double lib_now = now();
  double after = mono_ms();
  // nkb_env_int wants the name's NUL within the length given.
  size_t name_len = strlen(argv[2]) + 1u;
  int32_t env_set = env((const uint8_t *)argv[2], (uint32_t)name_len, ENV_FALLBACK);
  int32_t env_unset = env((const uint8_t *)"NKB_PREBUILT_DRIVER_UNSET", 26u, ENV_FALLBACK);
  uint64_t cap[4] = {0, 0, 0, 0};
  int32_t caps_rc = caps(cap, (uint32_t)sizeof(cap));

  printf("{\"abi\":%d,\"clock_ok\":%d,\"env_set\":%d,\"env_unset\":%d,", abi(),
         before <= lib_now && lib_now <= after ? 1 : 0, env_set, env_unset);
  printf("\"caps_rc\":%d,\"euid\":%llu,\"my_euid\":%u,\"quad\":", caps_rc,
         (unsigned long long)cap[3], (unsigned)geteuid());
  resolve(res, "198.18.0.1");
  printf(",\"short\":");
  resolve(res, "198.18.1");  // inet_aton's three-part form: the same address
  printf(",\"name\":");
  resolve(res, "localhost");  // numeric only: EAI_NONAME, no lookup
  printf("}\n");
  return dlclose(lib_handle) == 0 ? 0 : 4;
}
