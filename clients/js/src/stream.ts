// One answer being streamed: an async iterator of text deltas, another of
// the model's reasoning (when it thinks before answering), an `ack` and a
// `done` promise, and `cancel()`.

import type { FinishReason, Usage } from "./protocol.js";
import type { SkaldError, ConnectionError } from "./errors.js";

/** The server accepted the message (`ack`). */
export interface AckInfo {
  /** The `send.id` (empty for a stream obtained with `resume`). */
  id: string;
  conversationId: string;
  /** The id of the assistant message this stream produces. */
  messageId: string;
  streamId: string;
}

/** The stream ended normally (`finish_reason` `stop`, `length` or `cancelled`). */
export interface DoneInfo {
  streamId: string;
  messageId: string;
  conversationId: string;
  finishReason: FinishReason;
  usage: Usage;
  /** The whole answer: every delta, in `seq` order. */
  text: string;
  /** The model's whole reasoning (empty when it gave none). */
  reasoning: string;
}

/** What the client does for a stream (implemented by `SkaldClient`). */
export interface StreamOwner {
  cancelStream(stream: ChatStream): void;
}

type Outcome = { ok: true; done: DoneInfo } | { ok: false; error: SkaldError | ConnectionError };

function settled<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Rejections are delivered to whoever awaits; an unobserved one must not
  // crash Node or spam the console.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * An answer as it streams. Iterate it (`for await (const text of stream)`)
 * to get the text deltas as they arrive; the iteration ends when the stream
 * ends and throws its error if it failed. `done` resolves with the finish
 * reason, usage and whole text; it rejects with a typed `SkaldError` when
 * the message was refused (no `ack`) or the stream failed
 * (`finish_reason: "error"`, details in `error.stream`), and with a
 * `ConnectionError` when the client was closed or gave up.
 *
 * A dropped connection does not end the stream: the client reconnects and
 * resumes it, and the iteration goes on without a gap or a repeat.
 */
export class ChatStream implements AsyncIterable<string> {
  /** The `send.id`: the idempotency key of the message. */
  readonly id: string;
  /** Resolves when the server accepted the message. */
  readonly ack: Promise<AckInfo>;
  /** Resolves when the stream ends; see the class description. */
  readonly done: Promise<DoneInfo>;

  private readonly owner: StreamOwner;
  private readonly ackSignal = settled<AckInfo>();
  private readonly doneSignal = settled<DoneInfo>();
  private readonly chunks: string[] = [];
  private readonly thoughts: string[] = [];
  private wakers: Array<() => void> = [];
  private outcome: Outcome | undefined;
  private ackInfo: AckInfo | undefined;
  private seq: number;
  private whole: string;
  private reasoningSeq: number;
  private reasoningWhole: string;
  private cancelRequested = false;

  /**
   * The model's reasoning as it streams (`reasoning` frames), before the
   * answer: iterate it next to the text (`for await (const thought of
   * stream.reasoning)`). It ends when the stream ends; it yields nothing
   * for a model that does not think aloud.
   */
  readonly reasoning: AsyncIterable<string>;

  /** @internal */
  constructor(
    owner: StreamOwner,
    id: string,
    start?: { afterSeq: number; text: string; afterReasoningSeq?: number; reasoning?: string },
  ) {
    this.owner = owner;
    this.id = id;
    this.ack = this.ackSignal.promise;
    this.done = this.doneSignal.promise;
    this.seq = start?.afterSeq ?? -1;
    this.whole = start?.text ?? "";
    this.reasoningSeq = start?.afterReasoningSeq ?? -1;
    this.reasoningWhole = start?.reasoning ?? "";
    this.reasoning = { [Symbol.asyncIterator]: () => this.iterate(this.thoughts) };
  }

  /** The stream id, once acknowledged. */
  get streamId(): string | undefined {
    return this.ackInfo?.streamId;
  }

  /** The conversation, once acknowledged. */
  get conversationId(): string | undefined {
    return this.ackInfo?.conversationId || undefined;
  }

  /** The assistant message's id, once acknowledged. */
  get messageId(): string | undefined {
    return this.ackInfo?.messageId || undefined;
  }

  /** The text received so far. */
  get text(): string {
    return this.whole;
  }

  /** The `seq` of the last delta received (-1 before the first). */
  get lastSeq(): number {
    return this.seq;
  }

  /** The reasoning received so far. */
  get reasoningText(): string {
    return this.reasoningWhole;
  }

  /** The `seq` of the last `reasoning` frame received (-1 before the first). */
  get lastReasoningSeq(): number {
    return this.reasoningSeq;
  }

  /** True once the stream ended (done, failed or abandoned). */
  get finished(): boolean {
    return this.outcome !== undefined;
  }

  /** True once `cancel()` was called. */
  get cancelling(): boolean {
    return this.cancelRequested;
  }

  /**
   * Stops the generation (upstream too). The stream then ends with
   * `finishReason: "cancelled"` and the text generated so far. Works before
   * the `ack` (sent as soon as it arrives) and across reconnects (sent
   * after the stream is resumed).
   */
  cancel(): void {
    if (this.outcome || this.cancelRequested) return;
    this.cancelRequested = true;
    this.owner.cancelStream(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.iterate(this.chunks);
  }

  /** An iterator over `chunks` (the text's or the reasoning's) until the end. */
  private iterate(chunks: string[]): AsyncIterator<string> {
    let index = 0;
    return {
      next: async (): Promise<IteratorResult<string>> => {
        for (;;) {
          if (index < chunks.length) {
            return { value: chunks[index++] as string, done: false };
          }
          const outcome = this.outcome;
          if (outcome) {
            if (!outcome.ok) throw outcome.error;
            return { value: undefined, done: true };
          }
          await new Promise<void>((wake) => this.wakers.push(wake));
        }
      },
      return: async (): Promise<IteratorResult<string>> => {
        index = Number.POSITIVE_INFINITY;
        return { value: undefined, done: true };
      },
    };
  }

  /** @internal */
  _acked(info: AckInfo): void {
    this.ackInfo = info;
    this.ackSignal.resolve(info);
  }

  /**
   * @internal
   * Applies a delta; returns false for one already seen (a replay).
   */
  _delta(seq: number, text: string): boolean {
    if (this.outcome || seq <= this.seq) return false;
    this.seq = seq;
    this.whole += text;
    this.chunks.push(text);
    this.wake();
    return true;
  }

  /**
   * @internal
   * Applies a piece of reasoning; returns false for one already seen.
   */
  _reasoning(seq: number, text: string): boolean {
    if (this.outcome || seq <= this.reasoningSeq) return false;
    this.reasoningSeq = seq;
    this.reasoningWhole += text;
    this.thoughts.push(text);
    this.wake();
    return true;
  }

  /** @internal */
  _finish(done: Omit<DoneInfo, "text" | "reasoning">): void {
    if (this.outcome) return;
    const info: DoneInfo = { ...done, text: this.whole, reasoning: this.reasoningWhole };
    if (!this.ackInfo) {
      this._acked({ id: this.id, conversationId: done.conversationId, messageId: done.messageId, streamId: done.streamId });
    }
    this.outcome = { ok: true, done: info };
    this.doneSignal.resolve(info);
    this.wake();
  }

  /** @internal */
  _fail(error: SkaldError | ConnectionError): void {
    if (this.outcome) return;
    this.outcome = { ok: false, error };
    if (!this.ackInfo) this.ackSignal.reject(error);
    this.doneSignal.reject(error);
    this.wake();
  }

  private wake(): void {
    const wakers = this.wakers;
    this.wakers = [];
    for (const wake of wakers) wake();
  }
}
