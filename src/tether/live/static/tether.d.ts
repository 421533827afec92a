// Type declarations of tether.js, the browser client of tether's live channels
// (subprotocol tether.live.v1, docs/live-protocol.md).

/** Where a member is in a room that keeps history: the offset of the last message it saw. */
export interface Position {
  epoch: string;
  offset: number;
}

/** The members of a room with presence: connection id -> presence info (oneself included). */
export type Members<Info = unknown> = Record<string, Info>;

export type State = "connecting" | "connected" | "disconnected" | "closed";

export type TokenSource = string | null | (() => string | null | PromiseLike<string | null>);

export interface ClientOptions {
  /** Sent in `connect`; a function is called at each connect and for each refresh. */
  token?: TokenSource;
  /** Backoff between reconnects, in milliseconds: a delay drawn from 0 to
   *  min(maxDelay, minDelay * 2^attempt) (defaults 250 and 10000). */
  minDelay?: number;
  maxDelay?: number;
  /** Milliseconds for the handshake and the `connect` reply (default 10000). */
  connectTimeout?: number;
  /** The WebSocket class to use (default: globalThis.WebSocket). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

export interface JoinOptions<Info = unknown> {
  /** This member's presence info (the room's hook may replace it); sent at every (re)join. */
  info?: Info;
  /** Resume from this position (a position kept from an earlier visit). */
  since?: Position | null;
}

export interface JoinEvent {
  /** True when every message after the room's last position is delivered (the messages
   *  follow this event); false when none is, and the app should reload its state. */
  recovered: boolean;
  /** Where the member is now; null in a room without history. */
  position: Position | null;
}

export interface MessageEvent<Data = unknown> {
  data: Data;
  /** The message's offset and epoch in a room with history; null otherwise. */
  offset: number | null;
  epoch: string | null;
}

export interface LostEvent {
  reason: string;
}

export interface HistoryOptions {
  /** Only messages with an offset over this. */
  since?: number;
  /** At most this many, oldest first (for the last n after a join: since = position.offset - n). */
  limit?: number;
}

export interface HistoryResult<Data = unknown> {
  position: Position;
  messages: { offset: number; data: Data }[];
}

/** A server's error reply (`code` 400..500, `type` its name such as "rate_limited"), a
 *  command cut short by a disconnect (`type` "disconnected", `code` the close code, or 0 when
 *  it was never sent), or a close after which the client stops (`type` "closed"). */
export class TetherError extends Error {
  readonly name: "TetherError";
  readonly code: number;
  readonly type: string;
  /** The setting a limit error names (e.g. "commands_per_second"). */
  readonly limit?: string;
  constructor(code: number, type: string, message?: string, limit?: string);
}

export interface RoomEvents<Data, Info> {
  /** After each (re)join; replayed messages follow it. */
  join: JoinEvent;
  message: MessageEvent<Data>;
  /** The whole member list, after the join reply and after each change. */
  presence: Members<Info>;
  lost: LostEvent;
  /** The join was refused (the room is given up). */
  error: TetherError;
}

export interface ClientEvents {
  state: State;
  /** A refused connect or refresh, a close that stops the client, a token function that failed. */
  error: TetherError | Error;
}

export class Room<Data = any, Info = any> {
  private constructor();
  readonly client: Client;
  readonly name: string;
  /** Sent with every (re)join; may be changed for the next one. */
  info: Info | null;
  /** The last message's position (null before any, or in a room without history). */
  readonly position: Position | null;
  /** What the last join said. */
  readonly recovered: boolean;
  /** From the last join reply and the diffs since (kept as it was while disconnected). */
  readonly presence: Members<Info>;
  /** True between a join reply and the next disconnect or leave. */
  readonly joined: boolean;
  /** Returns a function that removes the listener. */
  on<E extends keyof RoomEvents<Data, Info>>(event: E, listener: (value: RoomEvents<Data, Info>[E]) => void): () => void;
  off<E extends keyof RoomEvents<Data, Info>>(event: E, listener: (value: RoomEvents<Data, Info>[E]) => void): void;
  /** Resolves with the server's reply; rejects with a TetherError: an error reply, or
   *  type "disconnected" when the connection drops first. Asked while the client is
   *  connecting, it is sent once connected (after the join); while disconnected or closed
   *  it is rejected at once. */
  publish(data: Data): Promise<Record<string, never>>;
  /** Sent and settled as `publish` is. */
  history(options?: HistoryOptions): Promise<HistoryResult<Data>>;
  /** Leaves for good; resolves once the server has answered (at once when not connected). */
  leave(): Promise<void>;
}

export class Client {
  constructor(url: string | URL, options?: ClientOptions);
  readonly url: string;
  /** This connection's id (its key in presence); null while not connected. */
  readonly id: string | null;
  readonly state: State;
  /** Throws when a room of that name is already joined. */
  join<Data = any, Info = any>(name: string, options?: JoinOptions<Info>): Room<Data, Info>;
  on<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): void;
  close(): void;
}
