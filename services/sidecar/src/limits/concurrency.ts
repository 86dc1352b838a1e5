/** Caps concurrent chat runs per user: a runaway client gets 429s, not a pile of agents. */
export class ConcurrencyLimiter {
  private readonly active = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** A release function, or undefined when the user is at the cap. */
  tryAcquire(key: string): (() => void) | undefined {
    const n = this.active.get(key) ?? 0;
    if (n >= this.max) return undefined;
    this.active.set(key, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.active.get(key) ?? 1) - 1;
      if (left <= 0) this.active.delete(key);
      else this.active.set(key, left);
    };
  }
}
