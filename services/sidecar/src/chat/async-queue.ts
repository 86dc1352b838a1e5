/** A minimal unbounded async queue: producers push, one consumer awaits `next()`. */
export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private waiter?: (v: T | undefined) => void;

  push(item: T): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(item);
    } else this.items.push(item);
  }

  /** The next item, or undefined after `timeoutMs` without one. */
  next(timeoutMs?: number): Promise<T | undefined> {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.waiter = (v) => {
        clearTimeout(timer);
        resolve(v);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiter = undefined;
          resolve(undefined);
        }, timeoutMs);
      }
    });
  }
}
