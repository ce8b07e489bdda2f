/** Case, surrounding and repeated whitespace do not make two texts different. */
export function normalizeText(text: string): string {
  const lower = text.toLowerCase();
  // Most texts are already normal past lower-casing (single spaces, nothing at the ends): a scan
  // that allocates nothing says so, and the replace (a new string) runs only when needed. trim()
  // removes exactly what \s matches, so the fast answer is the slow one.
  if (!NOT_NORMAL.test(lower)) return lower;
  return lower.replace(/\s+/g, ' ').trim();
}

/** Whitespace other than one space, two spaces in a row, or a space at either end. */
const NOT_NORMAL = /[^\S ]|  |^ | $/;
