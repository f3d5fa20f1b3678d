/**
 * A child process that speaks JSON lines on stdout. Every wait is bounded: a
 * wait that times out kills nothing by itself but throws with the child's
 * recent stderr, so a failing test says what the child said.
 *
 * @module
 */

/** One message a fixture printed (a parsed JSON object, or `{ raw }` for other lines). */
export type Msg = Record<string, unknown>;

const STDERR_KEEP_CHARS = 8000;

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A spawned fixture with a JSON-lines stdout. */
export class JsonChild {
  readonly name: string;
  readonly proc: Deno.ChildProcess;
  readonly #messages: Msg[] = [];
  #cursor = 0;
  #stderr = "";
  #exited: Deno.CommandStatus | null = null;
  #wake: (() => void) | null = null;
  readonly #done: Promise<void>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array> | null;

  constructor(name: string, proc: Deno.ChildProcess, stdinPiped: boolean) {
    this.name = name;
    this.proc = proc;
    this.#writer = stdinPiped ? proc.stdin.getWriter() : null;
    const out = this.#readLines(proc.stdout, (line) => this.#push(line));
    const err = this.#readLines(proc.stderr, (line) => {
      this.#stderr = (this.#stderr + line + "\n").slice(-STDERR_KEEP_CHARS);
    });
    this.#done = Promise.all([out, err, proc.status]).then(([, , status]) => {
      this.#exited = status;
      this.#notify();
    });
  }

  /** The process id (of deno itself: `ip netns exec` execs without forking). */
  get pid(): number {
    return this.proc.pid;
  }

  /** The exit status once the child exited and its output was read, else null. */
  get exited(): Deno.CommandStatus | null {
    return this.#exited;
  }

  /** The last few thousand characters the child wrote to stderr. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Every message received so far. */
  get messages(): readonly Msg[] {
    return this.#messages;
  }

  /** Waits for the next message (after those already returned) that matches `pred`. */
  async next(pred: (m: Msg) => boolean, timeoutMs: number, what = "a message"): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.#cursor < this.#messages.length) {
        const m = this.#messages[this.#cursor++];
        if (pred(m)) return m;
      }
      if (this.#exited !== null) {
        throw new Error(
          `${this.name}: exited (code ${this.#exited.code}, signal ${this.#exited.signal}) ` +
            `before ${what}; messages ${JSON.stringify(this.#messages).slice(-1500)}; ` +
            `stderr:\n${this.#stderr}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `${this.name}: no ${what} within ${timeoutMs} ms; messages ` +
            `${JSON.stringify(this.#messages).slice(-1500)}; stderr:\n${this.#stderr}`,
        );
      }
      await this.#sleepOrWake(left);
    }
  }

  /** Waits for a message that has the key `key`. */
  nextWith(key: string, timeoutMs: number): Promise<Msg> {
    return this.next((m) => key in m, timeoutMs, `"${key}" message`);
  }

  /** Writes one JSON line to the child's stdin (spawned with stdin piped). */
  async send(msg: Msg): Promise<void> {
    if (this.#writer === null) throw new Error(`${this.name}: stdin is not piped`);
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(msg) + "\n"));
  }

  /** Waits for the exit; on timeout kills the child and throws. */
  async wait(timeoutMs: number): Promise<Deno.CommandStatus> {
    const deadline = Date.now() + timeoutMs;
    while (this.#exited === null) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.kill("SIGKILL");
        throw new Error(
          `${this.name}: did not exit within ${timeoutMs} ms; stderr:\n${this.#stderr}`,
        );
      }
      await this.#sleepOrWake(left);
    }
    return this.#exited;
  }

  /** Sends a signal; a child that already exited is not an error. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    if (this.#exited !== null) return;
    try {
      this.proc.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Kills the child if it still runs and waits (bounded) for its streams to end. */
  async dispose(): Promise<void> {
    try {
      await this.#writer?.close();
    } catch {
      // the child may be gone
    }
    this.kill("SIGKILL");
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#done,
      new Promise<void>((resolve) => timer = setTimeout(resolve, 3000)),
    ]);
    clearTimeout(timer);
  }

  #push(line: string): void {
    const text = line.trim();
    if (text === "") return;
    let msg: Msg;
    try {
      const v = JSON.parse(text);
      msg = typeof v === "object" && v !== null && !Array.isArray(v) ? v : { raw: text };
    } catch {
      msg = { raw: text };
    }
    this.#messages.push(msg);
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async #sleepOrWake(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      timer = setTimeout(resolve, Math.min(ms, 1000));
    });
    clearTimeout(timer);
  }

  async #readLines(stream: ReadableStream<Uint8Array>, onLine: (l: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let rest = "";
    try {
      for await (const chunk of stream) {
        rest += decoder.decode(chunk, { stream: true });
        let nl = rest.indexOf("\n");
        while (nl >= 0) {
          onLine(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
          nl = rest.indexOf("\n");
        }
      }
    } catch {
      // the stream ends with the process
    }
    if (rest !== "") onLine(rest);
  }
}
