/**
 * Typed errors. Socket errors use Deno's own classes where Deno has one, so a
 * caller of a `Deno.DatagramConn` sees what it would see from Deno.
 *
 * @module
 */

/** An nkb failure that has no Deno error class; `code` is stable. */
export class NkbError extends Error {
  /** Stable machine-readable code. */
  readonly code: string;
  /** The errno behind it, when one is. */
  readonly errno: number;
  /**
   * An error with a stable `code` and the errno behind it.
   *
   * @param errno Optional: the errno behind it (default 0: none).
   */
  constructor(code: string, message: string, errno = 0) {
    super(message);
    this.name = "NkbError";
    this.code = code;
    this.errno = errno;
  }
}

/** The TX ring stayed full through every busy-wait try (`_NET_KERNEL_BYPASS_SEND_BUSY_WAIT_CNT`). */
export class TxRingFullError extends NkbError {
  /** `tries`: the busy-wait count that was exhausted. */
  constructor(tries: number) {
    super("ERR_TX_RING_FULL", `TX ring still full after ${tries} busy-wait tries`, 105);
    this.name = "TxRingFullError";
  }
}

/**
 * Bypass setup failed and `_NET_KERNEL_BYPASS_ERR_EXIT=1` asked to stop: its message is
 * printed before the process exits with status 1 (a caller never catches it).
 */
export class BypassSetupError extends NkbError {
  /** `reason`: the fallback code; `detail`: what failed. */
  constructor(reason: string, detail: string) {
    super("ERR_BYPASS_SETUP", `kernel bypass setup failed (${reason}): ${detail}`);
    this.name = "BypassSetupError";
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  19: "ENODEV",
  22: "EINVAL",
  24: "EMFILE",
  28: "ENOSPC",
  90: "EMSGSIZE",
  92: "ENOPROTOOPT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  105: "ENOBUFS",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  114: "EALREADY",
};

/** The symbolic name of an errno (positive or negative). */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[Math.abs(errno)] ?? `errno ${Math.abs(errno)}`;
}

/**
 * Turns a negative return of the shim into the error a caller should see (returned, not
 * thrown): Deno's class where Deno has one for the errno, else an {@linkcode NkbError}.
 */
export function errorFromErrno(rc: number, what: string): Error {
  const errno = Math.abs(rc);
  const msg = `${what}: ${errnoName(errno)}`;
  switch (errno) {
    case 9:
      return new Deno.errors.BadResource(`${what}: socket is closed`);
    case 98:
      return new Deno.errors.AddrInUse(msg);
    case 99:
      return new Deno.errors.AddrNotAvailable(msg);
    case 111:
      return new Deno.errors.ConnectionRefused(msg);
    case 1:
    case 13:
      return new Deno.errors.PermissionDenied(msg);
    case 110:
      return new Deno.errors.TimedOut(msg);
    case 101:
    case 113:
      return new Deno.errors.NetworkUnreachable(msg);
    case 11:
      return new Deno.errors.WouldBlock(msg);
    case 107:
      return new Deno.errors.NotConnected(msg);
    default:
      return new NkbError(errnoName(errno), msg, errno);
  }
}
