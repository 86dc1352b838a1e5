/**
 * What a file is, by its first bytes rather than by its name: an image forwarded to a model,
 * or an artifact shown in a browser, must be what its type says.
 */

export type ImageMime = "image/png" | "image/jpeg" | "image/gif" | "image/webp";

/** The formats every vision model takes, and every browser shows. */
const IMAGE_SIGNATURES: Array<{ mime: ImageMime; test: (b: Buffer) => boolean }> = [
  { mime: "image/png", test: (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) },
  { mime: "image/jpeg", test: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  { mime: "image/gif", test: (b) => /^GIF8[79]a$/.test(b.subarray(0, 6).toString("latin1")) },
  { mime: "image/webp", test: (b) => b.subarray(0, 4).toString("latin1") === "RIFF" && b.subarray(8, 12).toString("latin1") === "WEBP" },
];

/** The image type the bytes show (the first 12 are enough), if any. */
export function sniffImage(head: Buffer): ImageMime | undefined {
  return IMAGE_SIGNATURES.find((s) => s.test(head))?.mime;
}

/** A PDF starts with `%PDF-` (readers allow junk before it; browsers' viewers do too, but we do not). */
export function isPdf(head: Buffer): boolean {
  return head.subarray(0, 5).toString("latin1") === "%PDF-";
}

/** git's heuristic: a NUL byte in the first 8000 bytes means binary. */
export function looksBinary(head: Buffer): boolean {
  return head.subarray(0, 8000).includes(0);
}
