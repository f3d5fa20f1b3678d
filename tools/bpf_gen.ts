/**
 * Compiles the XDP filter's program (ffi/bpf/filter.bpf.c) to BPF with the pinned zig and
 * writes ffi/filter_prog.h: its instructions and the (instruction, map) relocations that
 * ffi/bpf_filter.c patches with map fds. The shim's build stays plain C: build.zig only
 * includes the committed header, and tests/bpf_gen.test.ts fails when it is stale.
 *
 * usage: deno run --allow-read=. --allow-run=.tools/zig/ziglang/zig
 *          --allow-write=zig-out,ffi/filter_prog.h tools/bpf_gen.ts [--check]
 *
 * The object file is read by a small ELF64 little-endian reader below, which accepts only
 * what the program is meant to be: one function in one section, whose only relocations are
 * 64-bit immediate loads of map symbols from ".maps".
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

/** The program's source, relative to the repository root. */
export const SOURCE = "ffi/bpf/filter.bpf.c";
/** The generated header, relative to the repository root. */
export const HEADER = "ffi/filter_prog.h";
/** The section and function the program is in. */
const SECTION = "xdp";
const FUNCTION = "nkb_xdp";
/** The maps the shim creates, by the names the program's relocations use. */
export const MAPS: readonly string[] = ["nkb_xsks", "nkb_flows", "nkb_ctl"];

/**
 * The compiler's arguments after `zig cc`. BPF v3 (32-bit ALU and jumps, Linux 5.1+) pinned
 * rather than left to the compiler's default; no -g, so no BTF or paths in the object.
 */
export const CC_ARGS: readonly string[] = [
  "-target",
  "bpfel-freestanding-none",
  "-mcpu=v3",
  "-O2",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-fno-asynchronous-unwind-tables",
];

const ZIG = ".tools/zig/ziglang/zig";
const MAX_INSNS = 4096; // BPF_MAXINSNS: more than an unprivileged loader may load
const EM_BPF = 247;
const SHT_SYMTAB = 2;
const SHT_RELA = 4;
const SHT_REL = 9;
const R_BPF_64_64 = 1; // the 64-bit immediate of an ld_imm64 (shown as R_BPF_INSN_64)
const BPF_LD_IMM64 = 0x18; // BPF_LD | BPF_DW | BPF_IMM

/** One instruction slot, decoded from the object's little-endian encoding. */
export interface Insn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

/** One relocation: the ld_imm64 at instruction `insn` loads map `map`. */
export interface Reloc {
  insn: number;
  map: string;
}

/** What the header is made of. */
export interface Program {
  insns: Insn[];
  relocs: Reloc[];
}

interface Section {
  index: number;
  name: string;
  type: number;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
}

function fail(what: string): never {
  throw new Error(`${SOURCE}: ${what}`);
}

function cString(bytes: Uint8Array, at: number): string {
  if (at < 0 || at >= bytes.length) fail(`string offset ${at} outside its table`);
  const end = bytes.indexOf(0, at);
  if (end < 0) fail(`string at ${at} not terminated`);
  return new TextDecoder().decode(bytes.subarray(at, end));
}

function sections(elf: Uint8Array): Section[] {
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const magic = elf.subarray(0, 4);
  if (elf.length < 64 || magic.join() !== "127,69,76,70") fail("the object is not ELF");
  if (elf[4] !== 2 || elf[5] !== 1) fail("the object is not ELF64 little-endian");
  if (v.getUint16(18, true) !== EM_BPF) fail("the object is not for BPF");
  const shoff = Number(v.getBigUint64(40, true));
  const shentsize = v.getUint16(58, true);
  const shnum = v.getUint16(60, true);
  const shstrndx = v.getUint16(62, true);
  if (shentsize !== 64 || shnum === 0 || shnum > 256 || shstrndx >= shnum) {
    fail("unexpected section header table");
  }
  if (shoff + shnum * 64 > elf.length) fail("section header table past the end");
  const raw = Array.from({ length: shnum }, (_, index) => {
    const at = shoff + index * 64;
    const s = {
      index,
      nameOffset: v.getUint32(at, true),
      type: v.getUint32(at + 4, true),
      offset: Number(v.getBigUint64(at + 24, true)),
      size: Number(v.getBigUint64(at + 32, true)),
      link: v.getUint32(at + 40, true),
      info: v.getUint32(at + 44, true),
      entsize: Number(v.getBigUint64(at + 56, true)),
    };
    if (s.type !== 8 && s.offset + s.size > elf.length) fail(`section ${index} past the end`);
    return s; // SHT_NOBITS (8) occupies no file bytes
  });
  const names = raw[shstrndx];
  const strtab = elf.subarray(names.offset, names.offset + names.size);
  return raw.map((s) => ({ ...s, name: cString(strtab, s.nameOffset) }));
}

function decode(bytes: Uint8Array): Insn[] {
  if (bytes.length % 8 !== 0 || bytes.length === 0) fail("the program is not whole instructions");
  if (bytes.length / 8 > MAX_INSNS) fail(`more than ${MAX_INSNS} instructions`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.length / 8 }, (_, i) => ({
    code: bytes[i * 8],
    dst: bytes[i * 8 + 1] & 0x0f,
    src: bytes[i * 8 + 1] >> 4,
    off: v.getInt16(i * 8 + 2, true),
    imm: v.getInt32(i * 8 + 4, true),
  }));
}

interface ElfSymbol {
  name: string;
  shndx: number;
  value: number;
  size: number;
  type: number;
}

function symbols(elf: Uint8Array, symtab: Section, all: Section[]): ElfSymbol[] {
  if (symtab.type !== SHT_SYMTAB || symtab.entsize !== 24) fail("unexpected symbol table");
  const strs = all[symtab.link];
  if (strs === undefined) fail("symbol table without a string table");
  const strtab = elf.subarray(strs.offset, strs.offset + strs.size);
  const v = new DataView(elf.buffer, elf.byteOffset + symtab.offset, symtab.size);
  return Array.from({ length: symtab.size / 24 }, (_, i) => ({
    name: cString(strtab, v.getUint32(i * 24, true)),
    type: v.getUint8(i * 24 + 4) & 0x0f,
    shndx: v.getUint16(i * 24 + 6, true),
    value: Number(v.getBigUint64(i * 24 + 8, true)),
    size: Number(v.getBigUint64(i * 24 + 16, true)),
  }));
}

/** Reads the program and its map relocations out of the compiled object. */
export function parseObject(elf: Uint8Array): Program {
  const all = sections(elf);
  const prog = all.find((s) => s.name === SECTION);
  if (prog === undefined) fail(`no "${SECTION}" section`);
  if (all.some((s) => s.type === SHT_RELA && s.info === prog.index)) fail("RELA relocations");
  const rels = all.filter((s) => s.type === SHT_REL && s.info === prog.index);
  if (rels.length !== 1) fail(`expected one relocation section for "${SECTION}"`);
  const rel = rels[0];
  if (rel.entsize !== 16 || rel.size % 16 !== 0) fail("unexpected relocation entries");
  const syms = symbols(elf, all[rel.link], all);
  const insns = decode(elf.subarray(prog.offset, prog.offset + prog.size));
  // One function, the whole section: a second one (a BPF-to-BPF call) would need a loader
  // that links subprograms, which the shim is not.
  const funcs = syms.filter((s) => s.type === 2 && s.shndx === prog.index);
  if (funcs.length !== 1 || funcs[0].name !== FUNCTION || funcs[0].value !== 0) {
    fail(`"${SECTION}" must hold exactly the function ${FUNCTION}`);
  }
  if (funcs[0].size !== prog.size) fail(`${FUNCTION} does not fill its section`);
  const v = new DataView(elf.buffer, elf.byteOffset + rel.offset, rel.size);
  const relocs: Reloc[] = [];
  for (let i = 0; i < rel.size / 16; i++) {
    const offset = Number(v.getBigUint64(i * 16, true));
    const info = v.getBigUint64(i * 16 + 8, true);
    const type = Number(info & 0xffffffffn);
    const sym = syms[Number(info >> 32n)];
    if (sym === undefined) fail(`relocation ${i} names no symbol`);
    if (type !== R_BPF_64_64) fail(`relocation of type ${type} against ${sym.name}`);
    if (all[sym.shndx]?.name !== ".maps") fail(`relocation against ${sym.name}, not a map`);
    if (!MAPS.includes(sym.name)) fail(`relocation against ${sym.name}, a map the shim lacks`);
    const at = offset / 8;
    if (offset % 8 !== 0 || at + 1 >= insns.length) fail(`relocation at byte ${offset}`);
    if (insns[at].code !== BPF_LD_IMM64 || insns[at].src !== 0 || insns[at].imm !== 0) {
      fail(`relocation at ${at} is not a plain ld_imm64`);
    }
    relocs.push({ insn: at, map: sym.name });
  }
  relocs.sort((a, b) => a.insn - b.insn);
  for (const map of MAPS) {
    if (!relocs.some((r) => r.map === map)) fail(`the program never uses map ${map}`);
  }
  return { insns, relocs };
}

// ---- A listing for the header's comments (the opcodes a filter uses; others in hex) ----

const ALU_OPS: Record<number, string> = {
  0x00: "+=",
  0x10: "-=",
  0x20: "*=",
  0x30: "/=",
  0x40: "|=",
  0x50: "&=",
  0x60: "<<=",
  0x70: ">>=",
  0x90: "%=",
  0xa0: "^=",
  0xb0: "=",
  0xc0: "s>>=",
};
const JMP_OPS: Record<number, string> = {
  0x10: "==",
  0x20: ">",
  0x30: ">=",
  0x40: "&",
  0x50: "!=",
  0x60: "s>",
  0x70: "s>=",
  0xa0: "<",
  0xb0: "<=",
  0xc0: "s<",
  0xd0: "s<=",
};
const SIZES: Record<number, string> = { 0x00: "u32", 0x08: "u16", 0x10: "u8", 0x18: "u64" };

function mem(base: number, off: number, size: number): string {
  return `*(${SIZES[size]} *)(r${base} ${off < 0 ? "-" : "+"} ${Math.abs(off)})`;
}

/** One instruction as text (`at` its index, for jump targets). */
export function listing(x: Insn, at: number, map?: string): string {
  const cls = x.code & 0x07;
  const op = x.code & 0xf0;
  const reg = (x.code & 0x08) !== 0;
  const mode = x.code & 0xe0;
  const size = x.code & 0x18;
  if (x.code === BPF_LD_IMM64) return `r${x.dst} = ${map ?? `${x.imm} ll`}`;
  if (cls === 1 && mode === 0x60) return `r${x.dst} = ${mem(x.src, x.off, size)}`;
  if (cls === 3 && mode === 0x60) return `${mem(x.dst, x.off, size)} = r${x.src}`;
  if (cls === 2 && mode === 0x60) return `${mem(x.dst, x.off, size)} = ${x.imm}`;
  if ((cls === 4 || cls === 7) && ALU_OPS[op] !== undefined) {
    const r = cls === 7 ? "r" : "w";
    return `${r}${x.dst} ${ALU_OPS[op]} ${reg ? `${r}${x.src}` : x.imm}`;
  }
  if (cls === 5 && op === 0x80) return `call ${x.imm}`;
  if (cls === 5 && op === 0x90) return "exit";
  if (cls === 5 && op === 0x00) return `goto ${at + 1 + x.off}`;
  if ((cls === 5 || cls === 6) && JMP_OPS[op] !== undefined) {
    const r = cls === 5 ? "r" : "w";
    return `if ${r}${x.dst} ${JMP_OPS[op]} ${reg ? `${r}${x.src}` : x.imm} goto ${at + 1 + x.off}`;
  }
  return `opcode 0x${x.code.toString(16).padStart(2, "0")}`;
}

/** The header's text: deterministic, a function of the program alone. */
export function render(p: Program, zigVersion: string): string {
  const byInsn = new Map(p.relocs.map((r) => [r.insn, r.map]));
  let second = false; // the slot after an ld_imm64 holds the upper 32 bits of its immediate
  const lines = p.insns.map((x, i) => {
    const text = second ? "(ld_imm64, upper half)" : listing(x, i, byInsn.get(i));
    second = !second && x.code === BPF_LD_IMM64;
    return `    {.code = 0x${x.code.toString(16).padStart(2, "0")}, .dst_reg = ${x.dst}, ` +
      `.src_reg = ${x.src}, .off = ${x.off}, .imm = ${x.imm}},  // ${i}: ${text}`;
  });
  const relocs = p.relocs.map((r) => `    {${r.insn}, "${r.map}"},`);
  return [
    `// Generated by tools/bpf_gen.ts from ${SOURCE}: do not edit. After changing the`,
    "// source, regenerate it (from the repository root) with",
    "//   ./nkbw deno run -A tools/bpf_gen.ts",
    `// which compiles it with zig ${zigVersion} cc ${CC_ARGS.slice(0, 4).join(" ")}`,
    `//   ${CC_ARGS.slice(4).join(" ")}.`,
    "// tests/bpf_gen.test.ts fails when this file is not what the source compiles to.",
    "#ifndef NKB_FILTER_PROG_H",
    "#define NKB_FILTER_PROG_H",
    "",
    "#include <stdint.h>",
    "",
    "#include <linux/bpf.h>",
    "",
    `#define NKB_FILTER_PROG_LEN ${p.insns.length}u`,
    `#define NKB_FILTER_RELOC_COUNT ${p.relocs.length}u`,
    "",
    "// The instructions, fields as decoded from the object (so the host's bit-field order",
    "// does not matter). Map loads hold 0 until the shim patches in a map fd.",
    "static const struct bpf_insn nkb_filter_prog[NKB_FILTER_PROG_LEN] = {",
    ...lines,
    "};",
    "",
    "// Each map load: the index of its ld_imm64 and the map it names.",
    "static const struct nkb_filter_reloc {",
    "  uint32_t insn;",
    "  char map[16];",
    "} nkb_filter_relocs[NKB_FILTER_RELOC_COUNT] = {",
    ...relocs,
    "};",
    "",
    "#endif",
    "",
  ].join("\n");
}

async function zig(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(`${ROOT}${ZIG}`, { args, cwd: ROOT }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Compiles `source` (default: the program's) and returns the header it gives. */
export async function generate(source: string = `${ROOT}${SOURCE}`): Promise<string> {
  const version = await zig(["version"]);
  if (version.code !== 0) fail(`zig version: ${version.stderr}`);
  // Under zig-out/ (ignored by git), named per run: parallel runs never share the object.
  const dir = `${ROOT}zig-out/bpf_gen`;
  await Deno.mkdir(dir, { recursive: true });
  const obj = `${dir}/filter-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.o`;
  try {
    const cc = await zig(["cc", ...CC_ARGS, "-c", source, "-o", obj]);
    if (cc.code !== 0) fail(`zig cc failed:\n${cc.stderr}`);
    return render(parseObject(await Deno.readFile(obj)), version.stdout.trim());
  } finally {
    await Deno.remove(obj).catch(() => {});
  }
}

async function main(args: string[]): Promise<number> {
  const check = args.includes("--check");
  const text = await generate();
  let old = "";
  try {
    old = await Deno.readTextFile(`${ROOT}${HEADER}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (text === old) return 0;
  if (check) {
    console.error(
      `${HEADER} is not what ${SOURCE} compiles to: run tools/bpf_gen.ts and commit ${HEADER}.`,
    );
    return 1;
  }
  await Deno.writeTextFile(`${ROOT}${HEADER}`, text);
  console.log(`${HEADER}: updated`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
