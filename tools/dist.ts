/**
 * The second half of `./nkbw dist`: wraps each cross-built library in the module the
 * package carries (native/<platform>.ts) and records its SHA-256 and size in
 * src/prebuilt.ts, or, with --check, fails when the recorded ones differ.
 *
 * usage: deno run --allow-read=. --allow-write=native,src/prebuilt.ts tools/dist.ts
 *          --glibc=2.27 [--check] linux-x86_64 linux-aarch64
 */

const TABLE = "src/prebuilt.ts";
const BEGIN = "// BEGIN PREBUILT\n";
const END = "// END PREBUILT\n";

function hex(digest: ArrayBuffer): string {
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function table(rows: { platform: string; sha256: string; size: number }[]): string {
  const lines = rows.map((r) =>
    `  "${r.platform}": {\n    sha256: "${r.sha256}",\n    size: ${r.size},\n  },`
  );
  return `${BEGIN}/** The platforms with a prebuilt library, by \`linux-<Deno.build.arch>\`. */\n` +
    `export const PREBUILT: Readonly<Record<string, Prebuilt>> = {\n${lines.join("\n")}\n};\n` +
    END;
}

function module(platform: string, glibc: string, sha256: string, bytes: Uint8Array): string {
  return `// libnkb.so for ${platform}, glibc ${glibc} or newer, built by ./nkbw dist.\n` +
    `// SHA-256 ${sha256} (src/prebuilt.ts checks it before loading).\n\n` +
    `/** The library, base64. */\n` +
    `export const libnkb: string =\n  "${bytes.toBase64()}";\n`;
}

function platforms(args: string[]): string[] {
  return args.filter((a) => !a.startsWith("--"));
}

/**
 * --stubs: writes an empty native/<platform>.ts where there is none, so that a checkout
 * that never ran ./nkbw dist still type-checks and loads its local build (the loader says
 * "no prebuilt library" if it ever gets to one).
 */
async function stubs(names: string[]): Promise<number> {
  await Deno.mkdir("native", { recursive: true });
  for (const platform of names) {
    const path = `native/${platform}.ts`;
    try {
      await Deno.lstat(path);
    } catch {
      await Deno.writeTextFile(
        path,
        `// Not built in this checkout: ./nkbw dist writes the library here.\n\n` +
          `/** The library, base64 (empty: none). */\nexport const libnkb: string = "";\n`,
      );
    }
  }
  return 0;
}

async function main(args: string[]): Promise<number> {
  const check = args.includes("--check");
  if (args.includes("--stubs")) return await stubs(platforms(args));
  const glibc = args.find((a) => a.startsWith("--glibc="))?.slice("--glibc=".length) ?? "";
  const names = platforms(args);
  if (glibc === "" || names.length === 0) {
    console.error("usage: tools/dist.ts --glibc=X.Y [--check] <platform>...");
    return 2;
  }
  const rows = [];
  const libs: { platform: string; sha256: string; bytes: Uint8Array }[] = [];
  for (const platform of names) {
    const bytes = await Deno.readFile(`zig-out/dist/${platform}/lib/libnkb.so`);
    const sha256 = hex(await crypto.subtle.digest("SHA-256", bytes));
    rows.push({ platform, sha256, size: bytes.byteLength });
    libs.push({ platform, sha256, bytes });
  }
  // native/ is written only with a table that records it: a --check that fails leaves both
  // as they were, never modules whose hashes the loader would refuse.
  const writeModules = async (): Promise<void> => {
    await Deno.mkdir("native", { recursive: true });
    for (const { platform, sha256, bytes } of libs) {
      await Deno.writeTextFile(`native/${platform}.ts`, module(platform, glibc, sha256, bytes));
      console.log(`native/${platform}.ts: ${bytes.byteLength} bytes, SHA-256 ${sha256}`);
    }
  };
  const source = await Deno.readTextFile(TABLE);
  const from = source.indexOf(BEGIN);
  const to = source.indexOf(END);
  if (from < 0 || to < from) {
    console.error(`${TABLE}: no "${BEGIN.trim()}" … "${END.trim()}" block`);
    return 1;
  }
  const updated = source.slice(0, from) + table(rows) + source.slice(to + END.length);
  if (updated === source) {
    await writeModules();
    return 0;
  }
  if (check) {
    console.error(
      `${TABLE} records other hashes than this build's: the sources changed since ./nkbw ` +
        `dist ran, or the build is not reproducible. Run ./nkbw dist and commit ${TABLE}.`,
    );
    return 1;
  }
  await writeModules();
  await Deno.writeTextFile(TABLE, updated);
  console.log(`${TABLE}: updated`);
  return 0;
}

Deno.exit(await main(Deno.args));
