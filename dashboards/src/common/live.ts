// The live websocket: snapshot, then changes; reconnects with `since` so nothing is missed
// (docs/api.md), and tells the page plainly whether it is connected.
import { API } from "./api";
import type { LiveMessage } from "./types";

// `partial`: connected while the hub cannot reach its database (docs/api.md): calls not yet
// stored still arrive; the hub closes with 1012 once the database is back, and the
// connection resumes with `since` as after any close.
export type ConnectionState = "connecting" | "live" | "partial" | "lost" | "signed_out";

// The connection's own messages, which LiveConnection keeps to itself (`resumed` says it
// is live again, `ping` that the link holds, `lagging` precedes a close it reconnects
// after); the page gets every other one.
type ConnectionMessage = Extract<LiveMessage, { type: "resumed" | "ping" | "lagging" }>;
export type PageMessage = Exclude<LiveMessage, ConnectionMessage>;

const CLOSE_BAD_TOKEN = 4401;
// Backoff between reconnects: quick first (a hub restart takes a second or two), capped so
// a phone on a flaky network keeps trying without hammering the hub.
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 5000;
// The hub pings every 20 s: twice that without a word means the link is dead even if the
// socket has not noticed (a phone that slept, a NAT that forgot us).
const SILENCE_MS = 45_000;

export interface LiveOptions {
  token: () => string | null;
  onMessage: (message: PageMessage) => void;
  onState: (state: ConnectionState) => void;
}

export class LiveConnection {
  private socket: WebSocket | null = null;
  private lastChangeId: number | null = null;
  private retryMs = RECONNECT_MIN_MS;
  private retryTimer: number | undefined;
  private silenceTimer: number | undefined;
  private stopped = false;

  constructor(private readonly options: LiveOptions) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    window.clearTimeout(this.silenceTimer);
    this.socket?.close(1000);
    this.socket = null;
  }

  private open(): void {
    const current = this.options.token();
    if (current === null) {
      this.options.onState("signed_out");
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ token: current });
    if (this.lastChangeId !== null) {
      query.set("since", String(this.lastChangeId));
    }
    this.options.onState(this.lastChangeId === null ? "connecting" : "lost");
    const url = `${scheme}//${location.host}${API}/live?${query.toString()}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onmessage = (event: MessageEvent<string>) => {
      if (socket !== this.socket) {
        return;
      }
      this.heard();
      // A frame holds one message, or an array of several that were ready together.
      const frame = JSON.parse(event.data) as LiveMessage | LiveMessage[];
      for (const message of Array.isArray(frame) ? frame : [frame]) {
        this.handle(message);
      }
    };
    socket.onclose = (event: CloseEvent) => {
      if (socket !== this.socket || this.stopped) {
        return;
      }
      this.socket = null;
      window.clearTimeout(this.silenceTimer);
      if (event.code === CLOSE_BAD_TOKEN) {
        this.options.onState("signed_out");
        return;
      }
      this.options.onState("lost");
      this.retryTimer = window.setTimeout(() => this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
    };
    socket.onerror = () => {
      // onclose follows and reconnects.
    };
  }

  private handle(message: LiveMessage): void {
    if (message.type === "snapshot" || message.type === "resumed") {
      this.retryMs = RECONNECT_MIN_MS;
      this.options.onState(message.type === "resumed" && message.partial === true ? "partial" : "live");
    }
    if ("change_id" in message && typeof message.change_id === "number") {
      this.lastChangeId = Math.max(this.lastChangeId ?? 0, message.change_id);
    }
    if (message.type === "resumed" || message.type === "ping" || message.type === "lagging") {
      return;
    }
    this.options.onMessage(message);
  }

  private heard(): void {
    window.clearTimeout(this.silenceTimer);
    this.silenceTimer = window.setTimeout(() => this.socket?.close(4000), SILENCE_MS);
  }
}

/**
 * The last branch of a page's switch over PageMessage. `message` is `never` there, so a
 * message type the hub's document adds fails the type check until each page decides what
 * it means; at run time (a hub newer than the page) the message is ignored.
 */
export function unknownMessage(message: never): void {
  void message;
}
