/**
 * Aligned text tables for `nkb stat` and `nkb phys`: every column as wide as its
 * widest cell, numbers on the right.
 *
 * @module
 */

/** One column of a table. */
export interface Column {
  header: string;
  /** "right" for numbers. */
  align: "left" | "right";
}

/** How a table is laid out. */
export interface TableStyle {
  /** Spaces between columns. */
  gap: number;
  /** A dashed rule under the header, one dash run per column (netstat's style). */
  rule: boolean;
}

// C0 controls, DEL and C1 controls: a process chooses its own command line, and must
// not be able to move the cursor or recolour the terminal of whoever lists it.
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** `text` with control characters shown as "?". */
export function printable(text: string): string {
  return text.replace(CONTROL, "?");
}

/** The table as lines ending in "\n"; no line ends in spaces. */
export function formatTable(columns: Column[], rows: string[][], style: TableStyle): string {
  const cells = rows.map((row) => columns.map((_, i) => printable(row[i] ?? "")));
  const widths = columns.map((c, i) =>
    cells.reduce((w, row) => Math.max(w, row[i].length), c.header.length)
  );
  const line = (row: string[]): string =>
    row.map((cell, i) =>
      columns[i].align === "right" ? cell.padStart(widths[i]) : cell.padEnd(widths[i])
    ).join(" ".repeat(style.gap)).trimEnd();
  const out = [line(columns.map((c) => c.header))];
  if (style.rule) out.push(widths.map((w) => "-".repeat(w)).join(" ".repeat(style.gap)));
  for (const row of cells) out.push(line(row));
  return out.map((l) => `${l}\n`).join("");
}
