// What survives a page reload: the current conversation (its id, its
// messages as shown, and the stream being written with its last seq, so a
// reload mid-answer resumes it), the short-lived token, and whether the
// panel was open. sessionStorage: per tab, gone when the tab closes.

export interface SavedMessage {
  role: "user" | "assistant";
  text: string;
  state: "streaming" | "done" | "error";
  /** Assistant only: `done.finish_reason` (also `data-finish` on the element). */
  finish?: string;
  /** A note under the message (stopped, cut, not sent…). */
  note?: string;
  /** Assistant only: the `send.id`, to send again (same id: no duplicate) if the page reloaded before the ack. */
  sendId?: string;
  streamId?: string;
  /** The last seq rendered in `text`. */
  seq?: number;
  /** Assistant only: the model's reasoning, shown above the answer. */
  reasoning?: string;
  /** The last reasoning seq rendered in `reasoning`. */
  reasoningSeq?: number;
  messageId?: string;
  /** Assistant only: the user's rating of the answer (`1` good, `-1` bad). */
  rating?: 1 | -1;
}

export interface Saved {
  conversationId?: string;
  messages: SavedMessage[];
  open?: boolean;
  token?: { value: string; exp: number };
}

/** Most messages kept, and most characters in all of them. */
const MAX_MESSAGES = 100;
const MAX_CHARS = 200_000;

export class Store {
  constructor(private readonly key: string) {}

  load(): Saved {
    try {
      const raw = sessionStorage.getItem(this.key);
      const data = raw ? (JSON.parse(raw) as Partial<Saved>) : {};
      return { ...data, messages: Array.isArray(data.messages) ? data.messages : [] };
    } catch {
      return { messages: [] };
    }
  }

  save(data: Saved): void {
    let messages = data.messages.slice(-MAX_MESSAGES);
    let chars = messages.reduce((n, m) => n + m.text.length, 0);
    while (chars > MAX_CHARS && messages.length > 1) {
      chars -= (messages[0] as SavedMessage).text.length;
      messages = messages.slice(1);
    }
    try {
      sessionStorage.setItem(this.key, JSON.stringify({ ...data, messages }));
    } catch {
      // Storage full or disabled (private mode): the widget works without it.
    }
  }
}
