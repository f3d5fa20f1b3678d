/**
 * A socket's binding to the bypass path: when it is decided, to which
 * interface, which filter flows it holds, and how it follows the interface
 * afterwards. The socket (udp_bypass.ts) does the I/O; this is its control plane.
 *
 * @module
 */

import type { ResolvedOptions } from "./config.ts";
import { decide, decideLink, type FallbackReason, type Plan } from "./decide.ts";
import { resolveDestination, useKernel } from "./destinations.ts";
import { BypassSetupError, errnoName, errorFromErrno } from "./errors.ts";
import { byteLengthOf, lib, Opt } from "./ffi.ts";
import { formatIpv4, isMulticast } from "./ipv4.ts";
import { WATCH_INTERVAL_MS, watchLink } from "./link_watch.ts";
import { addrFirst, addrIfindex, type LinkInfo, routeGet, RouteType } from "./netinfo.ts";
import type { BypassState } from "./types.ts";

// open: nothing decided; multicast: bound to a wildcard or group address, waiting
// for a multicast interface choice; bypass / kernel: decided.
type Phase = "open" | "multicast" | "bypass" | "kernel";

const EBUSY = -16;
const EPERM = -1;
const EAGAIN = -11;
const ETIMEDOUT = -110;
const EINPROGRESS = -115;
const EPROTONOSUPPORT = -93;
// nkb_sock_attach's flag (ffi/nkb.h NKB_ATTACH_ASK): with every queue held, ask for one.
const ATTACH_ASK = 0x100;
// (NKB_ATTACH_NOWAIT): one bind; a queue the kernel still holds answers EINPROGRESS at once.
const ATTACH_NOWAIT = 0x200;
// (NKB_ATTACH_BRIEF): with NOWAIT, a queue the kernel is releasing is waited for up to 50 ms.
const ATTACH_BRIEF = 0x400;
// The shim stops asking after NKB_ASK_WAIT_MS (3 s); the retries end at the latest this long
// after the first ask, whatever it answers.
const ASK_RETRY_LIMIT_MS = 5_000;
// A queue still bound this long after the first try, and after this many tries (the ask's
// retries, every WATCH_INTERVAL_MS, each one netlink query before the release), is not being
// released: an AF_XDP socket holds it that is not a live nkb process's of this pid namespace
// (another program's, or one of another namespace). The socket stays on the kernel path
// (queue-busy). Tries, not only time: a retry delayed by a busy event loop is one try.
const RELEASE_GIVE_UP_MS = 1_000;
const RELEASE_GIVE_UP_TRIES = 4;
// Reasons where bypass was possible in principle but setting it up failed: the
// cases _NET_KERNEL_BYPASS_ERR_EXIT=1 turns into an exit. The others (wildcard,
// loopback, other kinds of interface, filters) are not failures: the socket is
// simply not a bypass candidate, as in the contract.
const SETUP_FAILURES: ReadonlySet<FallbackReason> = new Set([
  "missing-privilege",
  "queue-busy",
  "setup-failed",
  "foreign-xdp-program",
]);

// Receive waits between looks at the interface (see maybeWatchSoon).
const WATCH_EVERY_CALLS = 64;
// Registry slot flags the control plane knows (ffi/registry.h NKB_REG_F_*).
const REG_F_BYPASS = 1;
const REG_F_AFFINE = 4;
const REASON_ENCODER = new TextEncoder();

/**
 * The interface the kernel joins a group on when the join names none (INADDR_ANY): the
 * output route to the group, as ip_mc_find_dev looks it up. A negative errno without one.
 * A request to the local kernel over rtnetlink: nothing waits on the network.
 */
function joinIfindex(groupBe: number): number {
  const route = routeGet(groupBe);
  return typeof route === "number" ? route : route.oif;
}

/** True for 255.255.255.255 and for an address the routes call a broadcast (a subnet's). */
function isBroadcast(ipBe: number): boolean {
  if (ipBe === 0xffffffff) return true;
  const route = routeGet(ipBe);
  return typeof route !== "number" && route.type === RouteType.broadcast;
}

// Why nkb_sock_attach failed, as a fallback reason and its detail.
function attachFailure(rc: number, link: LinkInfo): [FallbackReason, string] {
  const name = link.name;
  if (rc === EBUSY) {
    return ["queue-busy", `AF_XDP on ${name}: no free queue (other nkb processes hold them)`];
  }
  if (rc === EAGAIN) {
    return [
      "queue-busy",
      `AF_XDP on ${name}: no free queue; waits for a ring group (asked the other nkb ` +
      "processes holding its queues to give one up)",
    ];
  }
  if (rc === EINPROGRESS) {
    return ["queue-busy", `AF_XDP on ${name}: a queue is still being released; tries again`];
  }
  if (rc === ETIMEDOUT) {
    return ["queue-busy", `AF_XDP on ${name}: no free queue; no holder gave one up within 3 s`];
  }
  if (rc === EPERM) {
    return [
      "missing-privilege",
      `AF_XDP or XDP setup on ${name}: EPERM (joining another nkb process's filter needs ` +
      "CAP_SYS_ADMIN)",
    ];
  }
  if (rc === EPROTONOSUPPORT) {
    // A program came between the decision and the attach: the decision, again, names it
    // (another nkb version's, or not nkb's).
    const now = decideLink(link.ifindex);
    return now.ok
      ? ["foreign-xdp-program", `${name} runs an XDP program that is not nkb's filter`]
      : [now.reason, now.detail];
  }
  return ["setup-failed", `AF_XDP on ${name}: ${errnoName(rc)}`];
}

function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The bypass state machine of one socket (shim handle `h`). */
export class BypassBinding {
  readonly #h: number;
  readonly #opts: ResolvedOptions;
  // Views into the UMEM must die before the socket lets go of its engine.
  readonly #beforeDetach: () => void;
  #phase: Phase = "open";
  #reason: FallbackReason | null = null;
  #detail: string | null = null;
  #link: LinkInfo | null = null;
  #linkDown = false;
  #detachLater = false;
  #lastWatch = 0;
  #watchCountdown = 1;
  #localBe = 0;
  #localPort = 0;
  #multicastIfaceBe = 0;
  #groupBe = 0;
  // A group joined on the interface while the socket waits for a ring group there: its
  // flow goes in when a queue comes (#watchAsk).
  #waitingGroupBe = 0;
  #multicastLoop = false;
  // Waiting for a ring group: the plan an attach asked for a queue with, retried by the
  // watch every WATCH_INTERVAL_MS until #askUntil (ms, nkb_now_ms).
  #askPlan: Plan | null = null;
  #askUntil = 0;
  // Retries while asking, whatever the application calls (a receiver waiting 10 s for its
  // first datagram would not look before its ask lapsed): unref'd, ended with the ask.
  #askTimer: ReturnType<typeof setInterval> | null = null;
  // When an attach first found its queue still bound (nkb_now_ms), 0: not waiting; and the
  // attaches that found it so since.
  #releaseSince = 0;
  #releaseTries = 0;

  /** Starts undecided (or on the kernel path for good with `kernelOnly`). */
  constructor(h: number, opts: ResolvedOptions, beforeDetach: () => void) {
    this.#h = h;
    this.#opts = opts;
    this.#beforeDetach = beforeDetach;
    if (opts.kernelOnly) this.#fallback("forced-kernel", "kernelOnly option");
    this.#publish();
  }

  /** True while waiting for a multicast interface choice (wildcard or group bind). */
  get waitingForMulticast(): boolean {
    return this.#phase === "multicast";
  }

  /** What `sock.bypass` reports. */
  state(): BypassState {
    const active = this.#phase === "bypass" && !this.#linkDown;
    return {
      active,
      interface: active && this.#link ? this.#link.name : null,
      queue: active ? this.#opts.queue ?? 0 : null,
      reason: this.#reason,
      detail: this.#detail,
    };
  }

  /**
   * Decides once the kernel socket has a local address (bind, connect, first send).
   *
   * @throws {Deno.errors.BadResource} (or the errno's error) when getsockname fails.
   */
  decideLocal(): void {
    this.#decideLocal();
    this.#publish();
  }

  #decideLocal(): void {
    if (this.#phase !== "open") return;
    const name = new Uint32Array(2);
    const rc = lib().nkb_sock_name(this.#h, name, byteLengthOf(name));
    if (rc < 0) throw errorFromErrno(rc, "getsockname");
    this.#localBe = name[0];
    this.#localPort = name[1];
    if (this.#localBe === 0 || isMulticast(this.#localBe)) {
      // The contract's exception: multicast may still name one interface.
      this.#phase = "multicast";
      this.#reason = "wildcard-bind";
      this.#detail = "bound to a wildcard or group address: waiting for a multicast interface";
      if (this.#multicastIfaceBe !== 0) this.#decideInterface(this.#multicastIfaceBe);
      return;
    }
    const verdict = decide(this.#localBe);
    if (!verdict.ok) return this.#fallback(verdict.reason, verdict.detail);
    if (this.#attach(verdict, true, true)) this.#addFlow(this.#localBe);
  }

  /** IP_MULTICAST_IF was set to `ifaceBe`: a waiting socket decides on that interface. */
  multicastInterface(ifaceBe: number): void {
    this.#multicastInterface(ifaceBe);
    this.#publish();
  }

  #multicastInterface(ifaceBe: number): void {
    this.#multicastIfaceBe = ifaceBe;
    lib().nkb_dest_clear(this.#h);
    // INADDR_ANY (node:dgram's setMulticastInterface("0.0.0.0")) names no interface: the
    // kernel's default again, and a waiting socket waits on.
    if (this.#phase === "multicast" && ifaceBe !== 0) this.#decideInterface(ifaceBe);
  }

  /**
   * Group `groupBe` was joined on the interface with address `ifaceBe` (0: the one the
   * kernel picked, by the route to the group): the first one on our interface gets a flow
   * when the kernel would deliver the group to this socket at all.
   */
  joined(groupBe: number, ifaceBe: number): void {
    this.#joined(groupBe, ifaceBe);
    this.#publish();
  }

  #joined(groupBe: number, ifaceBe: number): void {
    const ifindex = ifaceBe === 0 ? joinIfindex(groupBe) : addrIfindex(ifaceBe);
    if (this.#phase === "multicast") this.#decideIfindex(ifindex, ifaceBe);
    const plan = this.#askPlan;
    if (plan !== null && ifindex === plan.link.ifindex && this.#waitingGroupBe === 0) {
      if (this.#localBe === 0 || this.#localBe === groupBe) this.#waitingGroupBe = groupBe;
      return;
    }
    const link = this.#link;
    if (this.#phase !== "bypass" || this.#groupBe !== 0 || link === null) return;
    if (ifindex !== link.ifindex) return;
    // The kernel gives a socket bound to another address (a unicast one, another group)
    // none of the group's datagrams: neither may the ring.
    if (this.#localBe !== 0 && this.#localBe !== groupBe) return;
    if (lib().nkb_sock_add_flow(this.#h, groupBe, this.#localPort) >= 0) this.#groupBe = groupBe;
  }

  /**
   * IP_MULTICAST_LOOP was set on the kernel socket: while it is on, the socket's multicast
   * sends go through the kernel, which loops them back to local sockets (the ring cannot);
   * unicast stays on the ring.
   */
  multicastLoop(on: boolean): void {
    if (this.#multicastLoop === on) return;
    this.#multicastLoop = on;
    // Groups cached for the ring (or the kernel) must be decided again.
    lib().nkb_dest_clear(this.#h);
  }

  /** Group `groupBe` was left: its flow goes. */
  left(groupBe: number): void {
    this.#left(groupBe);
    this.#publish();
  }

  #left(groupBe: number): void {
    if (groupBe === this.#waitingGroupBe) this.#waitingGroupBe = 0;
    if (groupBe !== this.#groupBe || this.#phase !== "bypass") return;
    lib().nkb_sock_del_flow(this.#h, groupBe, this.#localPort);
    this.#groupBe = 0;
  }

  /**
   * A unicast send (to `dstBe`) from a wildcard socket: no interface of its own, the
   * kernel's for good. A broadcast goes through the kernel whatever the socket's path, so
   * it leaves a waiting socket waiting.
   */
  unicastFromWildcard(dstBe: number): void {
    if (this.#phase !== "multicast") return; // every send asks: nothing else on this path
    if (isBroadcast(dstBe)) return;
    this.#fallback("wildcard-bind", "unicast send from a socket bound to a wildcard address");
    this.#publish();
  }

  /**
   * Fills the shim's header cache for `ipBe:port`: through the ring when it
   * leaves through our interface, else the kernel.
   */
  resolve(ipBe: number, port: number): void {
    const link = this.#link;
    if (this.#phase !== "bypass" || link === null) return useKernel(this.#h, ipBe, port);
    if (this.#multicastLoop && isMulticast(ipBe)) return useKernel(this.#h, ipBe, port);
    // A group is never a source: a group-bound socket sends from its interface's address, as
    // the kernel's does (inet_bind keeps no source for it).
    const localSrc = isMulticast(this.#localBe) ? 0 : this.#localBe;
    const srcBe = localSrc || this.#multicastIfaceBe || Math.max(addrFirst(link.ifindex), 0);
    const multicastIfindex = this.#multicastIfaceBe === 0
      ? 0
      : Math.max(addrIfindex(this.#multicastIfaceBe), 0);
    resolveDestination({ handle: this.#h, link, srcBe, multicastIfindex }, ipBe, port);
  }

  /**
   * maybeWatch on every WATCH_EVERY_CALLS-th call: for the receive path's waits, where
   * most end with a datagram and a clock read would cost more than the look saves; the
   * waits that time out look through maybeWatch.
   */
  maybeWatchSoon(): void {
    if (--this.#watchCountdown > 0) return;
    this.#watchCountdown = WATCH_EVERY_CALLS;
    this.maybeWatch();
  }

  /** Looks at the interface when the last look is older than the watch interval. */
  maybeWatch(): void {
    if (this.#phase !== "bypass" && !this.#addressGone() && this.#askPlan === null) return;
    if (lib().nkb_now_ms() - this.#lastWatch < WATCH_INTERVAL_MS) return;
    this.watchNow();
  }

  /** The interface may have gone down, changed its MTU, lost our address or vanished. */
  watchNow(): void {
    const [phase, down, reason] = [this.#phase, this.#linkDown, this.#reason];
    this.#watchNow();
    if (this.#phase !== phase || this.#linkDown !== down || this.#reason !== reason) {
      this.#publish();
    }
  }

  #watchNow(): void {
    if (this.#askPlan !== null) return this.#watchAsk();
    if (this.#addressGone()) return this.#watchAddress();
    const link = this.#link;
    if (this.#phase !== "bypass" || link === null) return;
    this.#lastWatch = lib().nkb_now_ms();
    // Ack before looking: a change after the look is then seen by the next send.
    lib().nkb_sock_link_ack(this.#h);
    // A group address is never an interface's: only a unicast one can be removed.
    const v = watchLink(link.ifindex, isMulticast(this.#localBe) ? 0 : this.#localBe);
    if (v.state === "interface-gone" || v.state === "address-removed") {
      this.#detach();
      // The link stays known: an address that comes back on it brings the socket back.
      if (v.state === "interface-gone") this.#link = null;
      this.#phase = "kernel";
      this.#reason = v.state;
      this.#detail = v.detail;
      return;
    }
    if (v.mtu !== link.mtu) {
      this.#link = { ...link, mtu: v.mtu };
      lib().nkb_sock_setopt(this.#h, Opt.mtu, v.mtu);
    }
    if (!sameMac(v.mac, link.mac)) this.#macChanged(v.mac);
    const down = v.state === "down";
    if (down === this.#linkDown) return;
    this.#linkDown = down;
    // Down, the ring keeps what it accepted, as a NIC's TX ring does: those frames leave
    // when the link comes back, and once it is full sends fail with TxRingFullError after
    // the busy-wait tries.
    this.#reason = down ? "interface-down" : null;
    this.#detail = down ? `${link.name} is down: sent datagrams wait on the TX ring` : null;
    if (!down) lib().nkb_sock_flush(this.#h);
  }

  // On the kernel path because our address left the interface: watched for its return.
  #addressGone(): boolean {
    return this.#phase === "kernel" && this.#reason === "address-removed" && this.#link !== null;
  }

  // The address is back on the same interface (same index): decide and attach again, as
  // at bind. A decision or attach that fails now leaves the socket on the kernel path with
  // that reason; it is not a setup failure at creation, so _NET_KERNEL_BYPASS_ERR_EXIT
  // does not end the process for it.
  #watchAddress(): void {
    const link = this.#link;
    if (link === null || this.#detachLater) return; // a wait still holds the old engine
    this.#lastWatch = lib().nkb_now_ms();
    if (addrIfindex(this.#localBe) !== link.ifindex) return;
    const verdict = decide(this.#localBe);
    // Back while the link is still down (addresses are often restored before the link):
    // looked at again until it is up.
    if (!verdict.ok && verdict.reason === "interface-down") return;
    if (!verdict.ok || verdict.link.ifindex !== link.ifindex) {
      this.#link = null;
      this.#reason = verdict.ok ? "address-removed" : verdict.reason;
      this.#detail = verdict.ok
        ? `${formatIpv4(this.#localBe)} came back on another interface`
        : verdict.detail;
      return;
    }
    if (this.#attach(verdict, false, true)) this.#addFlow(this.#localBe);
  }

  // Waiting for a ring group: the attach again, which takes a queue a holder gave up, asks
  // on, or (the shim's bound passed) stops asking. Not a setup failure at creation: a retry
  // that fails leaves the socket on the kernel path, _NET_KERNEL_BYPASS_ERR_EXIT or not.
  #watchAsk(): void {
    const plan = this.#askPlan;
    if (plan === null) return;
    this.#lastWatch = lib().nkb_now_ms();
    if (this.#lastWatch > this.#askUntil) {
      this.#askPlan = null;
      this.#askTimerFollow();
      this.#releaseEnd();
      // Tells the shim, whose ask would otherwise hold the interface's filter open.
      lib().nkb_sock_detach(this.#h);
      this.#detail = `AF_XDP on ${plan.link.name}: no free queue; stopped waiting for one`;
      return;
    }
    if (!this.#attach(plan, false, true)) return;
    // A unicast address's flow, or the group joined meanwhile (a wildcard or group-bound
    // socket has no unicast flow).
    if (this.#localBe !== 0 && !isMulticast(this.#localBe)) return this.#addFlow(this.#localBe);
    const groupBe = this.#waitingGroupBe;
    this.#waitingGroupBe = 0;
    if (groupBe !== 0 && lib().nkb_sock_add_flow(this.#h, groupBe, this.#localPort) >= 0) {
      this.#groupBe = groupBe;
    }
  }

  // The retry timer runs exactly while an ask does (a closed socket's attach is EBADF: the
  // ask, and the timer, end at the next tick).
  #askTimerFollow(): void {
    if (this.#askPlan !== null && this.#askTimer === null) {
      const timer = setInterval(() => this.watchNow(), WATCH_INTERVAL_MS);
      Deno.unrefTimer(timer);
      this.#askTimer = timer;
    } else if (this.#askPlan === null && this.#askTimer !== null) {
      clearInterval(this.#askTimer);
      this.#askTimer = null;
    }
  }

  // The wait for a queue's release ended (the queue came, or the wait stopped).
  #releaseEnd(): void {
    this.#releaseSince = 0;
    this.#releaseTries = 0;
  }

  /** The socket closes: no retry runs after it (its timers go). */
  dispose(): void {
    this.#askPlan = null;
    this.#askTimerFollow();
    this.#releaseEnd();
  }

  // The interface has a new MAC: the filter passes unicast frames to the old one to the
  // kernel from now on (they are another host's), and frames we send carry the new one.
  #macChanged(mac: Uint8Array): void {
    const link = this.#link;
    if (link === null) return;
    const rc = lib().nkb_sock_mac_sync(this.#h);
    if (rc < 0) {
      // The filter cannot follow the interface: the kernel path is always right.
      this.#detach();
      this.#phase = "kernel";
      this.#reason = "setup-failed";
      this.#detail = `${link.name} changed its MAC and the filter could not follow: ${
        errnoName(rc)
      }`;
      return;
    }
    this.#link = { ...this.#link ?? link, mac };
    lib().nkb_dest_clear(this.#h);
  }

  /** A wait that held the engine returned: finish a detach it deferred. */
  afterWait(): void {
    if (!this.#detachLater) return; // every receive's wait ends here
    this.#detach();
    this.#publish();
  }

  // A wildcard or group-bound socket names its interface by a multicast choice.
  #decideInterface(ifaceBe: number): void {
    this.#decideIfindex(addrIfindex(ifaceBe), ifaceBe);
  }

  // `ifindex` (negative: none) is the interface of address `ifaceBe` (0: of a route).
  #decideIfindex(ifindex: number, ifaceBe: number): void {
    if (ifindex < 0) {
      const which = ifaceBe === 0 ? "a route to the group" : formatIpv4(ifaceBe);
      return this.#fallback("no-interface", `no interface has ${which}`);
    }
    const verdict = decideLink(ifindex);
    if (!verdict.ok) return this.#fallback(verdict.reason, verdict.detail);
    this.#attach(verdict, true, true);
  }

  // `ask`: a whole-interface socket that finds every queue held asks for one and waits
  // (#watchAsk retries); not under _NET_KERNEL_BYPASS_ERR_EXIT=1, whose first failure exits.
  #attach(plan: Plan, strict = true, ask = false): boolean {
    const { link, frameSize, queues } = plan;
    // A queue-affine socket gets an engine of its own queue: Workers on different
    // queues then share no rings and no locks.
    const first = this.#opts.queue ?? 0;
    const count = this.#opts.queue === null ? queues : 1;
    const asks = ask && this.#opts.queue === null && this.#opts.errExit !== 1;
    // Binds each queue once. At creation a queue the kernel is still releasing (a socket
    // closed moments ago: 15-25 ms) is waited for up to 50 ms by asking the kernel, no setup
    // meanwhile (NKB_ATTACH_BRIEF): the contract decides at bind. Still bound then, or in a
    // retry in the background (a timer or a send on the event loop, which never waits), the
    // answer is EINPROGRESS: the socket stays on the kernel path, where no datagram is lost,
    // and tries again. Under _NET_KERNEL_BYPASS_ERR_EXIT=1, creation binds again for up to
    // 400 ms: there the answer must come before the call returns.
    const waits = strict && this.#opts.errExit === 1;
    const wait = waits ? 0 : strict ? ATTACH_NOWAIT | ATTACH_BRIEF : ATTACH_NOWAIT;
    const flags = (asks ? ATTACH_ASK : 0) | wait;
    const rc = lib().nkb_sock_attach(
      this.#h,
      link.ifindex,
      first,
      count,
      frameSize,
      flags,
      link.mtu,
    );
    const now = lib().nkb_now_ms();
    let retry = rc === EAGAIN || rc === EINPROGRESS;
    // Not an ask's: a queue the kernel still had not released after RELEASE_GIVE_UP_MS.
    const stuck = rc === EINPROGRESS && !asks && this.#releaseSince !== 0 &&
      now - this.#releaseSince > RELEASE_GIVE_UP_MS &&
      this.#releaseTries >= RELEASE_GIVE_UP_TRIES;
    if (stuck) retry = false;
    if (retry && this.#askPlan === null) this.#askUntil = now + ASK_RETRY_LIMIT_MS;
    this.#askPlan = retry ? plan : null;
    this.#askTimerFollow();
    if (rc === EINPROGRESS && retry) {
      if (this.#releaseSince === 0) this.#releaseSince = now;
      this.#releaseTries++;
    } else {
      this.#releaseEnd();
    }
    if (retry) this.#lastWatch = now; // the next look is the ask timer's, not at once
    if (stuck) {
      // Lets go of the filter the wait held open (nkb_sock_detach: the socket is unattached).
      lib().nkb_sock_detach(this.#h);
      this.#fallback(
        "queue-busy",
        `AF_XDP on ${link.name}: its queue stayed bound ${RELEASE_GIVE_UP_MS} ms (an AF_XDP ` +
          "socket that is not a live nkb process's here holds it)",
        strict,
      );
      return false;
    }
    if (rc < 0) {
      const [reason, detail] = attachFailure(rc, link);
      this.#fallback(reason, detail, strict);
      return false;
    }
    // Destinations looked up while on the kernel path (cached as "kernel" for 5 s) are
    // looked up again: they may now go through the ring.
    if (this.#phase !== "bypass") lib().nkb_dest_clear(this.#h);
    this.#link = link;
    this.#phase = "bypass";
    this.#linkDown = false;
    this.#reason = null;
    this.#detail = null;
    this.#lastWatch = lib().nkb_now_ms();
    return true;
  }

  #addFlow(ipBe: number): void {
    const rc = lib().nkb_sock_add_flow(this.#h, ipBe, this.#localPort);
    if (rc < 0) {
      this.#detach();
      this.#fallback("setup-failed", `filter flow: ${errnoName(rc)}`);
    }
  }

  #fallback(reason: FallbackReason, detail: string, strict = true): void {
    this.#phase = "kernel";
    this.#reason = reason;
    this.#detail = detail;
    if (strict && this.#opts.errExit === 1 && SETUP_FAILURES.has(reason)) {
      const err = new BypassSetupError(reason, detail);
      console.error(`nkb: ${err.message}; exiting (_NET_KERNEL_BYPASS_ERR_EXIT=1)`);
      Deno.exit(1);
    }
  }

  // Tells the host-wide registry (`nkb stat`) what the socket is now; the shim adds
  // the addresses, interface and queues it knows. An FFI call and a getsockname: only
  // on transitions (bind, connect, decisions, link changes), never per datagram.
  #publish(): void {
    const st = this.state();
    const flags = (st.active ? REG_F_BYPASS : 0) | (this.#opts.queue !== null ? REG_F_AFFINE : 0);
    // At most 31 bytes of the reason and a NUL (the slot's field): cut in bytes, not
    // characters, so that a longer encoding is not refused.
    const reason = new Uint8Array(32);
    reason.set(REASON_ENCODER.encode(st.reason ?? "").subarray(0, 31));
    lib().nkb_reg_note(this.#h, flags, this.#opts.recvMode, reason, byteLengthOf(reason));
  }

  // Leaves the rings for good; a wait on another thread defers it to its return.
  #detach(): void {
    this.#beforeDetach();
    lib().nkb_dest_clear(this.#h);
    const rc = lib().nkb_sock_detach(this.#h);
    this.#detachLater = rc === EBUSY;
    this.#groupBe = 0;
  }
}
