// Type declarations for roomcast.js, the Roomcast browser client.

/** The JSON subprotocol the client offers: `roomcast.v1.json`. */
export declare const PROTOCOL: 'roomcast.v1.json';

/** Opening a socket, waiting for `connected`, or waiting to retry. */
export declare const CONNECTING: 0;
/** The server answered `connect`; commands flow. */
export declare const OPEN: 1;
/** `close()` was called and the socket is shutting down. */
export declare const CLOSING: 2;
/** Not connected and not going to reconnect on its own. */
export declare const CLOSED: 3;

/** One of the four client states, numbered like `WebSocket.readyState`. */
export type ReadyState = 0 | 1 | 2 | 3;

/** Names of the states, indexed by state. */
export declare const STATE_NAMES: readonly ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'];

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Backoff tuning, shared by `backoffDelay`, `reconnectDelay` and the client. */
export interface BackoffOptions {
  /** The first retry waits up to this many ms. Default 500. */
  minDelay?: number;
  /** No retry waits longer than this. Default 30000. */
  maxDelay?: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
}

/** A minimal WebSocket constructor: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Something `new`-able that makes a WebSocketLike. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Options of `new RoomcastClient(url, options)`. */
export interface ClientOptions extends BackoffOptions {
  /** The `/ws` URL, when not given as the first argument. Default: the page's host. */
  url?: string;
  /** The WebSocket class. Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Subprotocols to offer. Default `['roomcast.v1.json']`. */
  protocols?: string[];
  /** A fixed JWT sent with `connect`. */
  token?: string;
  /**
   * Called before every (re)connect; its result is sent as the `connect`
   * token. After a 4001 close (expired token) the client calls it once more
   * and retries; a second 4001 in a row stops.
   */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** Free text sent as `connect.client` (shows in server logs). */
  clientName?: string;
  /** Start connecting in the constructor. Default true. */
  autoConnect?: boolean;
  /** A connection that lived this long resets the backoff. Default 5000 ms. */
  stableAfter?: number;
  /** Send a `ping` command this often; 0 turns the heartbeat off. Default 10000 ms. */
  pingInterval?: number;
  /** Declare the connection dead when no frame arrives this long after a ping. Default 5000 ms. */
  pingTimeout?: number;
  /** Reject a command's promise when no reply comes within this. Default 10000 ms; 0 waits forever. */
  requestTimeout?: number;
  /** Give up on a socket that has not opened and answered `connect` within this. Default 10000 ms. */
  connectTimeout?: number;
  /** Most commands buffered while not connected; the oldest are dropped past it. Default 1000. */
  maxBuffered?: number;
  /** Random source in [0, 1) for jitter (tests). */
  random?: () => number;
  /** Clock in ms (tests). */
  now?: () => number;
  /** Timer functions (tests). */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
}

/** A position in a room's history. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** `connected`: the server's answer to `connect`. */
export interface ConnectedReply {
  op: 'connected';
  id?: number;
  client_id: string;
  node: string;
  ping_interval_ms: number;
}

/** `subscribed`, plus whether it was a resubscribe after a reconnect. */
export interface SubscribedEvent {
  op: 'subscribed';
  room: string;
  epoch: string;
  offset: number;
  recovered: boolean;
  resubscribed: boolean;
}

/** A publication delivered to a room. */
export interface Message<T = Json> {
  op: 'message';
  room: string;
  event?: string;
  data: T;
  /** Present when the room keeps history. */
  offset?: number;
}

/** Someone entered or left a room (rooms with join/leave events on). */
export interface JoinLeave {
  op: 'join' | 'leave';
  room: string;
  client_id: string;
  user: string;
}

/** History after a reconnect could not be recovered: messages were missed. */
export interface GapEvent {
  room: string;
  /** What the client asked to recover from. */
  since: StreamPosition;
  /** Where the room is now. */
  epoch: string;
  offset: number;
}

/** `published`: the answer to `publish`. */
export interface PublishedReply {
  op: 'published';
  id: number;
  room: string;
  offset: number;
}

/** One client in a room. */
export interface PresenceClient {
  client_id: string;
  user: string;
  node?: string;
  /** What the application's backend said about the client when it connected. */
  info?: Json;
}

/** Why the connection went away and what happens next. */
export interface DisconnectedEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  willReconnect: boolean;
  /** Ms until the next attempt, or null when not reconnecting. */
  delay: number | null;
}

/**
 * A server error, or a local failure: `timeout`, `disconnected` (the
 * connection dropped before the reply), `closed` (`close()` was called, or a
 * close code ended reconnection), `buffer_overflow`, `token`, `bad_frame`.
 */
export declare class RoomcastError extends Error {
  constructor(code: string, message?: string, reply?: object);
  readonly name: 'RoomcastError';
  /** `bad_request`, `unauthorized`, `forbidden`, `not_found`, `too_many_requests`, `payload_too_large`, `internal`, or a local code. */
  readonly code: string;
  /** The server's `error` frame, when there was one. */
  readonly reply?: { op: 'error'; id?: number; code: string; message: string };
}

/** A tiny event emitter. `on` returns a function that removes the listener. */
export declare class Emitter<Events extends Record<string, unknown[]>> {
  on<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): () => void;
  once<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): () => void;
  off<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this;
  emit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean;
}

/** Events of a Subscription. */
export interface SubscriptionEvents {
  [event: string]: unknown[];
  subscribed: [SubscribedEvent];
  message: [Message];
  join: [JoinLeave];
  leave: [JoinLeave];
  gap: [GapEvent];
  error: [RoomcastError];
  unsubscribed: [{ room: string }];
}

/** One room the client receives; resubscribed after every reconnect until `unsubscribe()`. */
export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly room: string;
  readonly state: 'subscribing' | 'subscribed' | 'unsubscribed';
  /** The room's history epoch, once known. */
  readonly epoch: string | null;
  /** The offset of the last message seen, once known. */
  readonly offset: number | null;
  /** Stop receiving the room. */
  unsubscribe(): Promise<void>;
  /** Publish to this room. */
  publish<T extends Json>(data: T, options?: PublishOptions): Promise<PublishedReply>;
  /** Who is in this room. */
  presence(): Promise<PresenceClient[]>;
}

/** Options of one command. */
export interface RequestOptions {
  /** Overrides `requestTimeout` for this command. */
  timeout?: number;
}

/** Options of `publish`. */
export interface PublishOptions extends RequestOptions {
  /** Event name, delivered as `message.event`. */
  event?: string;
}

/** Events of a RoomcastClient. */
export interface ClientEvents {
  [event: string]: unknown[];
  state: [ReadyState, ReadyState];
  connected: [ConnectedReply];
  disconnected: [DisconnectedEvent];
  reconnecting: [{ attempt: number; delay: number }];
  rtt: [number];
  message: [Message];
  join: [JoinLeave];
  leave: [JoinLeave];
  error: [RoomcastError | Error];
  frame: [Record<string, unknown>];
}

/** A Roomcast connection that keeps itself connected. */
export declare class RoomcastClient extends Emitter<ClientEvents> {
  constructor(url?: string, options?: ClientOptions);
  constructor(options: ClientOptions);
  readonly url: string;
  readonly readyState: ReadyState;
  readonly stateName: 'CONNECTING' | 'OPEN' | 'CLOSING' | 'CLOSED';
  /** The last measured round-trip time of a `ping`, in ms. */
  readonly rtt: number | null;
  /** The server's `connected` reply of the current session. */
  readonly session: ConnectedReply | null;
  /** Failed attempts in a row. */
  readonly attempt: number;
  /** The live subscriptions, by room. */
  readonly subscriptions: Map<string, Subscription>;

  /** Start (or restart after `close()` or a terminal close code) connecting. */
  connect(): this;
  /** Close and stop reconnecting. */
  close(code?: number, reason?: string): this;
  /** Skip the wait before the next attempt. */
  reconnectNow(): void;
  /** Subscribe to a room; returns its subscription (the same one when already subscribed). */
  subscribe(room: string, options?: { since?: StreamPosition }): Subscription;
  /** Publish `data` to `room`; resolves with the `published` reply, rejects with the `error`. */
  publish<T extends Json>(room: string, data: T, options?: PublishOptions): Promise<PublishedReply>;
  /** Who is in `room`. */
  presence(room: string, options?: RequestOptions): Promise<PresenceClient[]>;
  /** Call `method` of the application's backend; resolve with its answer, reject with its error. */
  rpc<R extends Json = Json>(method: string, data?: Json, options?: RequestOptions): Promise<R>;
  /** Send `data` and resolve with what the server echoes. */
  echo<T extends Json>(data: T, options?: RequestOptions): Promise<T>;
  /** Send a `ping` now; resolves with the round-trip time in ms. */
  ping(): Promise<number>;
  /** Send a raw command without an id (no success reply). */
  send(frame: { op: string; [field: string]: unknown }): void;
}

/** Create a client and start connecting. */
export declare function connect(url?: string, options?: ClientOptions): RoomcastClient;

/** Full-jitter exponential backoff: a random delay in [0, min(maxDelay, minDelay * factor^attempt)). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** What a close code asks of the client. */
export declare function closePolicy(code: number): { reconnect: boolean; mode: 'stop' | 'fast' | 'slow' | 'normal' };

/** The delay before the next attempt after a close with `code`, or null for none. */
export declare function reconnectDelay(
  code: number,
  attempt: number,
  options?: BackoffOptions,
  random?: () => number,
): number | null;

/** Default option values. */
export declare const DEFAULTS: Readonly<Required<BackoffOptions> & {
  stableAfter: number;
  pingInterval: number;
  pingTimeout: number;
  requestTimeout: number;
  connectTimeout: number;
  maxBuffered: number;
}>;

/** Commands awaiting a reply, matched by id. */
export declare class PendingReplies {
  nextId(): number;
  add(id: number, waiter: { resolve: (reply: any) => void; reject: (err: Error) => void }): void;
  has(id: number): boolean;
  readonly size: number;
  settle(frame: { id?: number; op?: string; [k: string]: unknown }): boolean;
  fail(id: number, err: Error): boolean;
  failAll(err: Error): void;
}

/** A subscription's position in its room's history. */
export declare class Position {
  constructor(since?: StreamPosition);
  epoch: string | null;
  offset: number | null;
  since(): StreamPosition | undefined;
  subscribed(reply: { epoch: string; offset: number; recovered: boolean }, askedSince?: StreamPosition): { gap: boolean };
  message(msg: { offset?: number }): boolean;
}

export default RoomcastClient;
