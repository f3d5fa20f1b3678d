/**
 * The shim's files call each other in layers, never in a circle, and the data path never
 * touches the process's tables: each `ffi/*.c` that build.zig compiles is compiled alone,
 * and `nm` says which file defines each symbol another one uses. The graph of "file A
 * uses a symbol of file B" must have no cycle, and `datapath.c` may use the context
 * (`core.c`) only through the handle entries that resolve or pin one socket.
 */

import assert from "node:assert/strict";
import { ROOT, SHIM_FLAGS, shimSources, zigCc } from "./helpers/zig.ts";

type Symbols = { defined: Set<string>; used: Set<string> };

async function symbolsOf(obj: string): Promise<Symbols> {
  const out = await new Deno.Command("nm", { args: ["-P", obj] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const defined = new Set<string>(), used = new Set<string>();
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const [name, kind] = line.split(" ");
    if (!name || !kind) continue;
    if (kind === "U") used.add(name);
    else if (/^[A-Z]$/.test(kind)) defined.add(name); // global: local ones are lower case
  }
  return { defined, used };
}

/** A cycle in the graph, as a path of files, or null. */
function findCycle(edges: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, 1 | 2>(); // 1 on the path, 2 done
  const path: string[] = [];
  const visit = (n: string): string[] | null => {
    state.set(n, 1);
    path.push(n);
    for (const m of edges.get(n) ?? []) {
      if (state.get(m) === 1) return [...path.slice(path.indexOf(m)), m];
      if (!state.has(m)) {
        const found = visit(m);
        if (found) return found;
      }
    }
    path.pop();
    state.set(n, 2);
    return null;
  };
  for (const n of edges.keys()) {
    if (state.has(n)) continue;
    const found = visit(n);
    if (found) return found;
  }
  return null;
}

Deno.test("ffi layers: no file cycles; the data path reaches the context by handle only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nkb-layers-" });
  try {
    const files = await shimSources();
    assert.ok(files.length >= 10, `c_sources: ${files}`);
    const syms = new Map<string, Symbols>();
    for (const f of files) {
      const obj = `${dir}/${f.slice(4, -2)}.o`;
      const build = await zigCc([
        ...SHIM_FLAGS,
        "-fPIC",
        `-I${ROOT}ffi`,
        "-c",
        "-o",
        obj,
        ROOT + f,
      ]);
      assert.equal(build.code, 0, `${f}: ${build.stderr}`);
      syms.set(f, await symbolsOf(obj));
    }
    const owner = new Map<string, string>();
    for (const [f, s] of syms) for (const name of s.defined) owner.set(name, f);
    const edges = new Map<string, Set<string>>();
    const uses = new Map<string, Map<string, string[]>>(); // file -> file -> symbols
    for (const [f, s] of syms) {
      edges.set(f, new Set());
      uses.set(f, new Map());
      for (const name of s.used) {
        const g = owner.get(name);
        if (!g || g === f) continue;
        edges.get(f)!.add(g);
        const list = uses.get(f)!.get(g) ?? [];
        list.push(name);
        uses.get(f)!.set(g, list);
      }
    }
    const graph = [...edges].map(([f, to]) => `${f} -> ${[...to].join(", ")}`).join("\n");
    console.log(graph);
    const cycle = findCycle(edges);
    assert.equal(cycle, null, `a cycle: ${cycle?.join(" -> ")}\n${graph}`);
    // The data path: handles resolve (or pin) to one socket at the entry; nothing else of
    // the context, and no table (nkb_core) or table lock.
    const fromCore = (uses.get("ffi/datapath.c")!.get("ffi/core.c") ?? []).sort();
    const allowed = [
      "nkb_ranks_held",
      "nkb_sock_get",
      "nkb_sock_handle",
      "nkb_sock_pin",
      "nkb_sock_unpin",
    ];
    assert.deepEqual(
      fromCore.filter((n) => !allowed.includes(n)),
      [],
      `datapath.c uses ${fromCore}`,
    );
    assert.ok(fromCore.includes("nkb_sock_pin"), "the wait pins its sockets");
    for (const f of ["ffi/datapath.c", "ffi/xsk.c", "ffi/tx.c", "ffi/frame.c"]) {
      assert.ok(!syms.get(f)!.used.has("nkb_core"), `${f} reaches the tables`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
