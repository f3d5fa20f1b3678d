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

/** Why the native library did not load: what {@linkcode LibraryLoadError} carries. */
export type LibraryLoadFailure =
  | "permission"
  | "unsupported-platform"
  | "missing"
  | "hash-mismatch"
  | "abi-mismatch"
  | "dlopen";

/**
 * libnkb.so could not be loaded. Thrown by the first call that needs it (a socket, a
 * registry read), and again by every later one: the message says what is wrong and what to
 * do; `reason` says it for programs.
 */
export class LibraryLoadError extends NkbError {
  /** What failed: a missing permission, no library for this CPU, a refused hash, … */
  readonly reason: LibraryLoadFailure;
  /** `reason`, and the message after "nkb: ". */
  constructor(reason: LibraryLoadFailure, message: string) {
    super("ERR_NKB_LOAD", `nkb: ${message}`);
    this.name = "LibraryLoadError";
    this.reason = reason;
  }
}

// errno: [name, glibc strerror text]. Deno shows an OS error as Rust does: the strerror
// text and "(os error N)", with the name as `code`.
const ERRNOS: Record<number, [string, string]> = {
  1: ["EPERM", "Operation not permitted"],
  2: ["ENOENT", "No such file or directory"],
  4: ["EINTR", "Interrupted system call"],
  9: ["EBADF", "Bad file descriptor"],
  11: ["EAGAIN", "Resource temporarily unavailable"],
  12: ["ENOMEM", "Cannot allocate memory"],
  13: ["EACCES", "Permission denied"],
  14: ["EFAULT", "Bad address"],
  16: ["EBUSY", "Device or resource busy"],
  19: ["ENODEV", "No such device"],
  22: ["EINVAL", "Invalid argument"],
  24: ["EMFILE", "Too many open files"],
  28: ["ENOSPC", "No space left on device"],
  90: ["EMSGSIZE", "Message too long"],
  92: ["ENOPROTOOPT", "Protocol not available"],
  95: ["EOPNOTSUPP", "Operation not supported"],
  97: ["EAFNOSUPPORT", "Address family not supported by protocol"],
  98: ["EADDRINUSE", "Address already in use"],
  99: ["EADDRNOTAVAIL", "Cannot assign requested address"],
  100: ["ENETDOWN", "Network is down"],
  101: ["ENETUNREACH", "Network is unreachable"],
  105: ["ENOBUFS", "No buffer space available"],
  107: ["ENOTCONN", "Transport endpoint is not connected"],
  110: ["ETIMEDOUT", "Connection timed out"],
  111: ["ECONNREFUSED", "Connection refused"],
  113: ["EHOSTUNREACH", "No route to host"],
  114: ["EALREADY", "Operation already in progress"],
};

/** The symbolic name of an errno (positive or negative). */
export function errnoName(errno: number): string {
  return ERRNOS[Math.abs(errno)]?.[0] ?? `errno ${Math.abs(errno)}`;
}

/** An errno's text as Deno shows an OS error: "Address already in use (os error 98)". */
export function errnoMessage(errno: number): string {
  const n = Math.abs(errno);
  return `${ERRNOS[n]?.[1] ?? `Unknown error ${n}`} (os error ${n})`;
}

/** Deno's message for a call on a closed socket. */
export const CLOSED_MESSAGE = "Socket has been closed";

/**
 * Turns a negative return of the shim into the error a caller should see (returned, not
 * thrown), as Deno's for the same errno: Deno's class where Deno has one (a TypeError for
 * EINVAL), else a plain Error; Deno's message, which names no call (`_what` is kept for
 * the call sites' readability), and the errno's name as `code`.
 */
export function errorFromErrno(rc: number, _what: string): Error {
  const errno = Math.abs(rc);
  if (errno === 9) return new Deno.errors.BadResource(CLOSED_MESSAGE);
  const msg = errnoMessage(errno);
  let err: Error;
  switch (errno) {
    case 98:
      err = new Deno.errors.AddrInUse(msg);
      break;
    case 99:
      err = new Deno.errors.AddrNotAvailable(msg);
      break;
    case 111:
      err = new Deno.errors.ConnectionRefused(msg);
      break;
    case 1:
    case 13:
      err = new Deno.errors.PermissionDenied(msg);
      break;
    case 110:
      err = new Deno.errors.TimedOut(msg);
      break;
    case 101:
    case 113:
      err = new Deno.errors.NetworkUnreachable(msg);
      break;
    case 11:
      err = new Deno.errors.WouldBlock(msg);
      break;
    case 107:
      err = new Deno.errors.NotConnected(msg);
      break;
    case 22:
      err = new TypeError(msg);
      break;
    default:
      err = new Error(msg);
  }
  return Object.assign(err, { code: errnoName(errno) });
}
