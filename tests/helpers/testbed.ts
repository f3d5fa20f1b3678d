/**
 * The tests' conventions on top of `examples/testbed.ts`: one testbed per test,
 * with its own /24, IPv6 left on (so the XDP program also sees the link's
 * IPv6 traffic), and scripts taken from `tests/fixtures/`. Loading this module
 * deletes the namespaces a killed earlier run left behind.
 *
 * @module
 */

import { type Side, Testbed } from "../../examples/testbed.ts";

export { type Message, sleep, Testbed, type TestbedProcess } from "../../examples/testbed.ts";

/** The directory of the fixture scripts. */
export const FIXTURES: string = new URL("../fixtures/", import.meta.url).pathname;

/** Creates the testbed of one test (remove it with `await using`). */
export function createTestbed(): Promise<Testbed> {
  return Testbed.create({ thirdOctet: "next", ipv6: true, scriptDir: FIXTURES });
}

/** Sends one UDP datagram `text` from side `s` to `host:port` with python3 (no Deno start-up). */
export async function sendUdp(
  tb: Testbed,
  s: Side,
  text: string,
  host: string,
  port: number,
): Promise<void> {
  const code = `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); ` +
    `s.sendto(${JSON.stringify(text)}.encode(), (${JSON.stringify(host)}, ${port}))`;
  await tb.execOk(s, ["python3", "-c", code]);
}

const NETNS_ETC = "/etc/netns/";
const OUR_NS = /^nkb-[0-9a-f]{4}-\d+-[ab]$/;

/**
 * Writes `files` (name: content, e.g. `hosts`, `resolv.conf`) to /etc/netns/NS/, which
 * `ip netns exec NS` mounts over the same files in /etc for the processes it starts.
 * Disposing removes them and the directory.
 */
export async function netnsEtc(
  ns: string,
  files: Record<string, string>,
): Promise<AsyncDisposable> {
  if (!OUR_NS.test(ns)) throw new TypeError(`netnsEtc: ${ns} is not a testbed namespace`);
  const dir = `${NETNS_ETC}${ns}`;
  await Deno.mkdir(dir, { recursive: true });
  const remove = async (): Promise<void> => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    for (const [name, text] of Object.entries(files)) {
      if (name.includes("/")) throw new TypeError(`netnsEtc: ${name} is not a file name`);
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
  } catch (e) {
    await remove();
    throw e;
  }
  return { [Symbol.asyncDispose]: remove };
}

// The /etc/netns directories a killed earlier run left behind: those of testbed
// namespaces that no longer exist (a live run creates its namespace first).
function removeStaleEtc(): void {
  let entries: Deno.DirEntry[];
  try {
    entries = Array.from(Deno.readDirSync(NETNS_ETC));
  } catch {
    return;
  }
  const live = new Set(
    new TextDecoder().decode(
      new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped", stderr: "null" })
        .outputSync().stdout,
    ).split("\n").map((l) => l.split(" ")[0]),
  );
  for (const e of entries) {
    if (!OUR_NS.test(e.name) || live.has(e.name)) continue;
    try {
      Deno.removeSync(`${NETNS_ETC}${e.name}`, { recursive: true });
    } catch {
      // Another run removed it first.
    }
  }
}

Testbed.removeStale();
removeStaleEtc();

/**
 * A kernel UDP client on side `s`: `count` request/response rounds with `host:port` (1 s
 * for each answer); how many came back the same.
 */
export async function echoRounds(
  tb: Testbed,
  s: Side,
  host: string,
  port: number,
  count: number,
): Promise<number> {
  const out = await tb.execOk(s, [
    "python3",
    "-c",
    `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
got = 0
for i in range(${count}):
    m = b"p%d" % i
    s.sendto(m, (${JSON.stringify(host)}, ${port}))
    try:
        d, _ = s.recvfrom(2048)
        got += d == m
    except socket.timeout:
        pass
print(got)`,
  ], 60_000);
  return Number(out.trim());
}

/**
 * A python3 kernel UDP echo server on `port` (every address), for `tb.spawn(side,
 * ["python3", "-c", pythonEcho(port)])`: prints "ready" once bound, echoes every datagram.
 */
export function pythonEcho(port: number): string {
  return [
    "import socket",
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)",
    `s.bind(('0.0.0.0', ${port}))`,
    "print('ready', flush=True)",
    "for _ in range(100000):",
    "    d, a = s.recvfrom(65536)",
    "    s.sendto(d, a)",
  ].join("\n");
}

/**
 * Whether `nkb stat --json` in side `s` lists a socket on local `port` whose process's
 * command line mentions `script` (a program under `nkb run` is its child).
 */
export async function statLists(
  tb: Testbed,
  s: Side,
  port: number,
  script: string,
): Promise<boolean> {
  const cli = new URL("../../cli.ts", import.meta.url).pathname;
  const stat = await tb.exec(s, [Deno.execPath(), "run", "-A", "--no-lock", cli, "stat", "--json"]);
  const sockets = JSON.parse(stat.stdout).sockets as {
    cmdline: string[];
    local: { port: number };
  }[];
  return sockets.some((x) => x.local.port === port && x.cmdline.join(" ").includes(script));
}

/**
 * The command that starts fixture `script` as an unmodified program with `denoFlags`:
 * `deno run` plainly, or under `nkb run --no-spin` (the pre-load, receive mode 0).
 */
export function programCommand(
  preload: boolean,
  denoFlags: string[],
  script: string,
  args: string[],
): string[] {
  const program = [...denoFlags, `${FIXTURES}${script}`, ...args];
  if (!preload) return [Deno.execPath(), "run", ...program];
  const cli = new URL("../../cli.ts", import.meta.url).pathname;
  return [Deno.execPath(), "run", "-A", "--no-lock", cli, "run", "--no-spin", ...program];
}
