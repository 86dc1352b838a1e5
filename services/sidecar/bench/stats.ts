/** Small-sample statistics for the report. */

export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  if (q === 0.5) {
    const mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }
  // Nearest rank: with 20 samples p95 is the 19th value, a real observation.
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

export const median = (values: number[]) => quantile(values, 0.5);
export const p95 = (values: number[]) => quantile(values, 0.95);

/** Rounds to 0.01 for the JSON results (sub-ms differences are what is measured). */
export const r2 = (n: number) => Math.round(n * 100) / 100;

/** A sample's spread, as the report shows it (raw values kept for the JSON results). */
export interface Spread {
  n: number;
  p50: number;
  p95: number;
  max: number;
  values: number[];
}

export function spread(values: number[]): Spread {
  return { n: values.length, p50: r2(median(values)), p95: r2(p95(values)), max: r2(Math.max(...values)), values: values.map(r2) };
}
