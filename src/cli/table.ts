// Aligned text tables for the CLI (like `cilium-dbg service list`): a header
// row, columns padded to their widest cell, and cells that span several lines
// (a frontend's backends) continuing under their column.

export function table(header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number | readonly string[]>>): string {
  const cells = rows.map((r) => r.map((c) => (Array.isArray(c) ? (c.length ? c.map(String) : ['']) : [String(c)])));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => Math.max(...(r[i] ?? ['']).map((s) => s.length)))));
  const line = (parts: readonly string[]) =>
    parts
      .map((p, i) => (i === parts.length - 1 ? p : p.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd();
  const out = [line(header)];
  for (const r of cells) {
    const height = Math.max(...r.map((c) => c.length));
    for (let k = 0; k < height; k++) out.push(line(header.map((_, i) => r[i]?.[k] ?? '')));
  }
  return out.join('\n') + '\n';
}
