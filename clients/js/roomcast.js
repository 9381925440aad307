// Roomcast browser client: one WebSocket speaking `roomcast.v1.json`, with
// reconnection, history recovery, buffering and an application-level
// heartbeat. No dependencies and no build step: load it with
// `<script type="module">` or import it from Node with a WebSocket class.
//
// The pure parts (backoff, close-code policy, reply matching, position
// tracking) are exported separately so they can be tested without a socket
// or a clock.

/** The JSON subprotocol this client speaks. */
export const PROTOCOL = 'roomcast.v1.json';

/** Opening a socket, waiting for `connected`, or waiting to retry. */
export const CONNECTING = 0;
/** The server answered `connect`; commands flow. */
export const OPEN = 1;
/** `close()` was called and the socket is shutting down. */
export const CLOSING = 2;
/** Not connected and not going to reconnect on its own. */
export const CLOSED = 3;

/** Names of the four states, indexed by state. */
export const STATE_NAMES = Object.freeze(['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']);

/** Defaults for every tunable option. */
export const DEFAULTS = Object.freeze({
  minDelay: 500,
  maxDelay: 30000,
  factor: 2,
  // A connection that stayed up this long resets the backoff; a shorter one
  // counts as another failed attempt, so a server that accepts and at once
  // closes is not hammered.
  stableAfter: 5000,
  pingInterval: 10000,
  pingTimeout: 5000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  // Most commands kept while not connected; past it the oldest are dropped
  // (their promises reject with `buffer_overflow`).
  maxBuffered: 1000,
});

// ---------------------------------------------------------------------------
// Pure logic
// ---------------------------------------------------------------------------

/**
 * Exponential backoff with full jitter: a uniformly random delay between 0
 * and min(maxDelay, minDelay * factor^attempt). `attempt` counts failed
 * attempts in a row, from 0.
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const { minDelay, maxDelay, factor } = { ...DEFAULTS, ...opts };
  const cap = Math.min(maxDelay, minDelay * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(random() * cap);
}

/**
 * What a close code asks of the client. Returns `{reconnect, mode}` with mode
 * one of:
 *  - `stop`: do not reconnect (credentials refused, kicked by an operator,
 *    origin or policy refused);
 *  - `fast`: the node is draining; reconnect at once (the load balancer sends
 *    us elsewhere) with a small jitter so a whole node's clients don't arrive
 *    in the same millisecond;
 *  - `slow`: the node is overloaded; back off harder than usual;
 *  - `normal`: anything else (network loss 1006, slow consumer 4008, ping
 *    timeout 4009, internal error, ...).
 */
export function closePolicy(code) {
  switch (code) {
    case 4001: // unauthorized
    case 4003: // forbidden, disconnected by an operator
    case 1008: // origin not allowed / policy violation: retrying cannot help
      return { reconnect: false, mode: 'stop' };
    case 1001:
      return { reconnect: true, mode: 'fast' };
    case 1013:
      return { reconnect: true, mode: 'slow' };
    default:
      return { reconnect: true, mode: 'normal' };
  }
}

/**
 * The delay before the next attempt after a close with `code`, given the
 * number of failed attempts before this one.
 */
export function reconnectDelay(code, attempt, opts = {}, random = Math.random) {
  const o = { ...DEFAULTS, ...opts };
  switch (closePolicy(code).mode) {
    case 'stop':
      return null;
    case 'fast':
      return Math.floor(random() * Math.min(o.minDelay, 250));
    case 'slow': {
      // Three steps further along the curve, and never less than half of it
      // (equal jitter), so an overloaded node is not retried immediately.
      const cap = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, attempt + 3));
      return Math.floor(cap / 2 + random() * (cap / 2));
    }
    default:
      return backoffDelay(attempt, o, random);
  }
}

/** An error reply from the server, or a local failure of a command. */
export class RoomcastError extends Error {
  /**
   * @param {string} code a contract error code (`forbidden`, ...) or a local
   *   one (`timeout`, `disconnected`, `closed`, `buffer_overflow`)
   * @param {string} message
   * @param {object} [reply] the server's `error` frame, when there was one
   */
  constructor(code, message, reply) {
    super(message || code);
    this.name = 'RoomcastError';
    this.code = code;
    if (reply !== undefined) this.reply = reply;
  }
}

/**
 * Commands awaiting a reply, matched by `id`. Ids are allocated here and
 * never reused within one client.
 */
export class PendingReplies {
  constructor() {
    this._next = 1;
    this._map = new Map();
  }

  /** Allocates the next id. */
  nextId() {
    return this._next++;
  }

  /** Registers a waiter for `id`: `{resolve, reject, op}`. */
  add(id, waiter) {
    this._map.set(id, waiter);
  }

  /** Whether `id` is awaited. */
  has(id) {
    return this._map.has(id);
  }

  /** How many replies are awaited. */
  get size() {
    return this._map.size;
  }

  /**
   * Settles the waiter a frame answers: an `error` rejects it, anything else
   * resolves it. Returns false when the frame answers nothing we wait for.
   */
  settle(frame) {
    if (!frame || typeof frame.id !== 'number') return false;
    const w = this._map.get(frame.id);
    if (!w) return false;
    this._map.delete(frame.id);
    if (w.timer !== undefined) w.clear(w.timer);
    if (frame.op === 'error') {
      w.reject(new RoomcastError(frame.code || 'internal', frame.message || '', frame));
    } else {
      w.resolve(frame);
    }
    return true;
  }

  /** Rejects one waiter with `err`. */
  fail(id, err) {
    const w = this._map.get(id);
    if (!w) return false;
    this._map.delete(id);
    if (w.timer !== undefined) w.clear(w.timer);
    w.reject(err);
    return true;
  }

  /** Rejects every waiter with `err`. */
  failAll(err) {
    for (const id of [...this._map.keys()]) this.fail(id, err);
  }
}

/**
 * Tracks a subscription's position in its room's history, the `since` to
 * send when resubscribing, and drops duplicates a replay may overlap with.
 */
export class Position {
  constructor(since) {
    // Known once the server told us where the room is (or the application
    // handed us a position). The epoch may be '' for a room whose history
    // has not started yet: that is still a position to resume from, and the
    // server decides whether it can.
    this.known = Boolean(since);
    this.epoch = since && since.epoch != null ? since.epoch : null;
    this.offset = since && since.offset != null ? since.offset : null;
  }

  /** The `since` to send on (re)subscribe, or undefined before the first `subscribed`. */
  since() {
    if (!this.known) return undefined;
    return { epoch: this.epoch == null ? '' : this.epoch, offset: this.offset == null ? 0 : this.offset };
  }

  /**
   * Applies a `subscribed` reply. Returns `{gap}`: true when we asked to
   * recover and the server could not.
   */
  subscribed(reply, askedSince) {
    const gap = Boolean(askedSince) && reply.recovered === false;
    if (!askedSince || reply.recovered === false) {
      // Nothing will be replayed: the current top is where we are.
      this.epoch = reply.epoch != null ? reply.epoch : '';
      this.offset = typeof reply.offset === 'number' ? reply.offset : 0;
    } else if (this.epoch === '' && reply.epoch) {
      // Recovered from before the room's history began: from now on the
      // room's epoch is the one to resume from.
      this.epoch = reply.epoch;
    }
    this.known = true;
    return { gap };
  }

  /** Applies a message; returns false for one already seen (a replay overlap). */
  message(msg) {
    if (typeof msg.offset !== 'number' || msg.offset === 0) return true;
    if (this.offset != null && msg.offset <= this.offset) return false;
    this.offset = msg.offset;
    return true;
  }
}

/** A tiny event emitter: `on` returns a function that removes the listener. */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Adds a listener called at most once. */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /** Removes a listener. */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
    return this;
  }

  /** Calls every listener of `event`; a throwing listener does not stop the others. */
  emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // Reported asynchronously so the client's own state stays consistent.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
    return true;
  }
}

// ---------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------

/**
 * One room this client wants to receive. Created by `client.subscribe(room)`;
 * survives reconnects (it is resubscribed with the last seen position) until
 * `unsubscribe()`.
 *
 * Events: `subscribed` (the reply, plus `resubscribed`), `message`, `join`,
 * `leave`, `gap` (history could not be recovered after a reconnect),
 * `error` (the server refused the subscription), `unsubscribed`.
 */
export class Subscription extends Emitter {
  constructor(client, room, since) {
    super();
    /** The room's name. */
    this.room = room;
    /** `subscribing`, `subscribed` or `unsubscribed`. */
    this.state = 'subscribing';
    this.position = new Position(since);
    this._client = client;
    this._everSubscribed = false;
  }

  /** The room's history epoch, once known. */
  get epoch() {
    return this.position.epoch;
  }

  /** The offset of the last message seen, once known. */
  get offset() {
    return this.position.offset;
  }

  /** Stops receiving the room. Resolves once the server confirmed (or at once when offline). */
  unsubscribe() {
    return this._client._unsubscribe(this);
  }

  /** Publishes to this subscription's room. */
  publish(data, opts) {
    return this._client.publish(this.room, data, opts);
  }

  /** Who is in this subscription's room. */
  presence() {
    return this._client.presence(this.room);
  }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

function ignore() {}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new TypeError('roomcast: a URL is required outside a browser page');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

/**
 * A Roomcast connection that keeps itself connected.
 *
 * Events: `state` (state, previous), `connected` (the server's reply),
 * `disconnected` ({code, reason, wasClean, willReconnect, delay}),
 * `reconnecting` ({attempt, delay}), `rtt` (ms), `message` (every message,
 * whichever room), `join`, `leave`, `error` (errors not tied to a command),
 * `frame` (every decoded server frame, for debugging).
 */
export class RoomcastClient extends Emitter {
  /**
   * @param {string} [url] the `/ws` URL; defaults to the page's own host
   * @param {object} [options] see roomcast.d.ts
   */
  constructor(url, options = {}) {
    super();
    if (url && typeof url === 'object') {
      options = url;
      url = undefined;
    }
    this.url = url || options.url || defaultUrl();
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('roomcast: no WebSocket class; pass one as options.WebSocket');
    }
    this._random = options.random || Math.random;
    this._now = options.now || (() => Date.now());
    this._setTimeout = options.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout || ((t) => clearTimeout(t));

    /** One of CONNECTING, OPEN, CLOSING, CLOSED. */
    this.readyState = CLOSED;
    /** The last measured round-trip time of a `ping`, in ms (null until measured). */
    this.rtt = null;
    /** The server's `connected` reply of the current session. */
    this.session = null;
    /** Failed attempts in a row. */
    this.attempt = 0;

    this._ws = null;
    this._pending = new PendingReplies();
    this._queue = []; // frames waiting for OPEN: {frame, id}
    this._subs = new Map(); // room -> Subscription
    this._timers = { reconnect: null, ping: null, deadline: null, connect: null };
    this._openedAt = 0;
    this._stopped = true;
    this._authFailures = 0; // consecutive 4001 closes without a `connected` between
    this._generation = 0; // bumps on every socket, so stale callbacks are ignored

    if (options.autoConnect !== false) this.connect();
  }

  /** The name of the current state. */
  get stateName() {
    return STATE_NAMES[this.readyState];
  }

  /** The subscriptions, by room. */
  get subscriptions() {
    return new Map(this._subs);
  }

  // -- lifecycle -------------------------------------------------------------

  /** Starts (or restarts after `close()` or a terminal close code) connecting. */
  connect() {
    if (!this._stopped && this.readyState !== CLOSED) return this;
    this._stopped = false;
    this.attempt = 0;
    this._authFailures = 0;
    this._watchOnline(true);
    this._open();
    return this;
  }

  /** When the browser says the network is back, retry now instead of at the end of the backoff. */
  _watchOnline(on) {
    const target = globalThis.window;
    if (!target || typeof target.addEventListener !== 'function') return;
    if (!this._onOnline) this._onOnline = () => this.reconnectNow();
    if (on) target.addEventListener('online', this._onOnline);
    else target.removeEventListener('online', this._onOnline);
  }

  /** Closes the connection and stops reconnecting. Buffered commands are rejected. */
  close(code = 1000, reason = '') {
    this._stopped = true;
    this._clearTimer('reconnect');
    this._stopHeartbeat();
    const ws = this._ws;
    const err = new RoomcastError('closed', 'client closed');
    this._pending.failAll(err);
    this._dropQueue(err);
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      this._setState(CLOSING);
      try {
        ws.close(code, reason);
      } catch (_) {
        ws.close();
      }
      // The close event finishes the job; if it never comes, don't hang.
      this._armTimer('connect', this.options.pingTimeout, () => this._finishStop(code, reason, false));
    } else {
      this._finishStop(code, reason, true);
    }
    return this;
  }

  _finishStop(code, reason, wasClean) {
    this._clearTimer('connect');
    this._watchOnline(false);
    this._detach();
    if (this.readyState !== CLOSED) {
      this.session = null;
      this._markSubsPending();
      this._setState(CLOSED);
      this.emit('disconnected', { code, reason, wasClean, willReconnect: false, delay: null });
    }
  }

  async _open() {
    const gen = ++this._generation;
    this._setState(CONNECTING);
    let token = this.options.token;
    if (typeof this.options.getToken === 'function') {
      try {
        token = await this.options.getToken();
      } catch (err) {
        if (gen !== this._generation || this._stopped) return;
        this.emit('error', new RoomcastError('token', `getToken failed: ${err && err.message}`));
        this._scheduleReconnect(1006, 'getToken failed', false);
        return;
      }
      if (gen !== this._generation || this._stopped) return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this.url, this.options.protocols || [PROTOCOL]);
    } catch (err) {
      this.emit('error', err);
      this._scheduleReconnect(1006, String(err && err.message), false);
      return;
    }
    this._ws = ws;
    this._token = token;
    ws.onopen = () => gen === this._generation && this._onSocketOpen();
    ws.onmessage = (ev) => gen === this._generation && this._onSocketMessage(ev);
    ws.onerror = ignore; // a close event always follows
    ws.onclose = (ev) => gen === this._generation && this._onSocketClose(ev.code, ev.reason, ev.wasClean);
    // A connect that never completes (a black-holed SYN, a proxy that never
    // answers) must not stall us forever.
    this._armTimer('connect', this.options.connectTimeout, () => this._abandon('connect timeout'));
  }

  _onSocketOpen() {
    this._openedAt = this._now();
    const hello = { op: 'connect' };
    if (this._token) hello.token = this._token;
    if (this.options.clientName) hello.client = this.options.clientName;
    this._call(
      hello,
      { direct: true, timeout: this.options.connectTimeout },
      (reply) => this._onConnected(reply),
      (err) => {
        if (err.code === 'disconnected' || err.code === 'closed') return;
        this.emit('error', err);
        this._abandon(`connect refused: ${err.code}`);
      },
    );
    this._startHeartbeat();
  }

  _onConnected(reply) {
    this._clearTimer('connect');
    this._authFailures = 0;
    this.session = reply;
    this._setState(OPEN);
    this.emit('connected', reply);
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    const queued = this._queue;
    this._queue = [];
    for (const item of queued) this._sendNow(item.frame);
  }

  _onSocketMessage(ev) {
    this._alive();
    if (typeof ev.data !== 'string') return; // the JSON subprotocol is text only
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch (_) {
      this.emit('error', new RoomcastError('bad_frame', 'server sent invalid JSON'));
      return;
    }
    this.emit('frame', frame);
    if (this._pending.settle(frame)) return;
    switch (frame.op) {
      case 'message': {
        const sub = this._subs.get(frame.room);
        if (sub && !sub.position.message(frame)) return; // replay overlap
        if (sub) sub.emit('message', frame);
        this.emit('message', frame);
        break;
      }
      case 'join':
      case 'leave': {
        const sub = this._subs.get(frame.room);
        if (sub) sub.emit(frame.op, frame);
        this.emit(frame.op, frame);
        break;
      }
      case 'error':
        this.emit('error', new RoomcastError(frame.code || 'internal', frame.message || '', frame));
        break;
      default:
        // Replies to commands that carried no id, and ops newer than us.
        break;
    }
  }

  _onSocketClose(code, reason, wasClean) {
    this._detach();
    const lived = this._openedAt ? this._now() - this._openedAt : 0;
    this._openedAt = 0;
    if (this._stopped) {
      this._finishStop(code, reason, wasClean);
      return;
    }
    this._scheduleReconnect(code, reason, wasClean, lived);
  }

  /** Gives up on a socket without waiting for its close event, which may never come. */
  _abandon(reason) {
    const ws = this._ws;
    const lived = this._openedAt ? this._now() - this._openedAt : 0;
    this._openedAt = 0;
    this._detach();
    if (ws) {
      try {
        ws.close(4000, reason.slice(0, 120));
      } catch (_) {
        /* already closing */
      }
    }
    if (this._stopped) return;
    this._scheduleReconnect(1006, reason, false, lived);
  }

  /** Forgets the current socket: its late events are ignored from now on. */
  _detach() {
    this._generation++;
    this._stopHeartbeat();
    this._clearTimer('connect');
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: some WebSocket implementations (Node's `ws`) throw when an
      // error is emitted with no listener, as closing a half-open socket does.
      ws.onerror = ignore;
    }
    this._pending.failAll(new RoomcastError('disconnected', 'connection lost before the reply'));
    this.session = null;
  }

  _scheduleReconnect(code, reason, wasClean, lived = 0) {
    const policy = closePolicy(code);
    let reconnect = policy.reconnect;
    if (code === 4001 && typeof this.options.getToken === 'function' && this._authFailures === 0) {
      // An expired token: fetch a fresh one and try once more. A second 4001
      // before any success means the credentials are simply refused.
      reconnect = true;
    }
    if (code === 4001) this._authFailures++;
    if (lived >= this.options.stableAfter) this.attempt = 0;
    this._markSubsPending();
    if (!reconnect) {
      this._stopped = true;
      this._watchOnline(false);
      this._dropQueue(new RoomcastError('closed', `connection closed with ${code}`));
      this._setState(CLOSED);
      this.emit('disconnected', { code, reason, wasClean, willReconnect: false, delay: null });
      return;
    }
    const delay = code === 4001 ? 0 : reconnectDelay(code, this.attempt, this.options, this._random);
    this.attempt++;
    this._setState(CONNECTING);
    this.emit('disconnected', { code, reason, wasClean, willReconnect: true, delay });
    this.emit('reconnecting', { attempt: this.attempt, delay });
    this._armTimer('reconnect', delay, () => {
      if (!this._stopped) this._open();
    });
  }

  /** Skips the wait before the next attempt (for example when the browser comes back online). */
  reconnectNow() {
    if (this._stopped || this._timers.reconnect === null) return;
    this._clearTimer('reconnect');
    this._open();
  }

  /** Every subscription waits for the next session, which resubscribes it. */
  _markSubsPending() {
    for (const sub of this._subs.values()) {
      if (sub.state === 'subscribed') sub.state = 'subscribing';
    }
  }

  _setState(state) {
    if (state === this.readyState) return;
    const prev = this.readyState;
    this.readyState = state;
    this.emit('state', state, prev);
  }

  // -- heartbeat ---------------------------------------------------------------

  _startHeartbeat() {
    this._stopHeartbeat();
    if (!(this.options.pingInterval > 0)) return;
    this._armTimer('ping', this.options.pingInterval, () => this._heartbeat());
  }

  _stopHeartbeat() {
    this._clearTimer('ping');
    this._clearTimer('deadline');
  }

  _heartbeat() {
    this.ping().catch(() => {
      /* a lost connection is handled by the deadline or the close event */
    });
    // Any frame from the server before the deadline proves the link alive.
    this._armTimer('deadline', this.options.pingTimeout, () => this._abandon('heartbeat timeout'));
    this._armTimer('ping', this.options.pingInterval, () => this._heartbeat());
  }

  _alive() {
    this._clearTimer('deadline');
  }

  /** Sends a `ping` now; resolves with the round-trip time in ms. */
  ping() {
    const started = this._now();
    return this._request({ op: 'ping' }, { direct: true }).then(() => {
      const rtt = this._now() - started;
      this.rtt = rtt;
      this.emit('rtt', rtt);
      return rtt;
    });
  }

  // -- commands --------------------------------------------------------------

  /**
   * Subscribes to a room. Returns the room's Subscription (the existing one
   * when already subscribed). `options.since` recovers history from a
   * position the application remembered.
   */
  subscribe(room, options = {}) {
    const existing = this._subs.get(room);
    if (existing) return existing;
    const sub = new Subscription(this, room, options.since);
    this._subs.set(room, sub);
    if (this.readyState === OPEN) this._sendSubscribe(sub);
    return sub;
  }

  _sendSubscribe(sub) {
    const since = sub.position.since();
    const frame = { op: 'subscribe', room: sub.room };
    if (since) frame.since = since;
    sub.state = 'subscribing';
    this._call(
      frame,
      { direct: true },
      (reply) => {
        if (this._subs.get(sub.room) !== sub) return;
        const { gap } = sub.position.subscribed(reply, since);
        sub.state = 'subscribed';
        const resubscribed = sub._everSubscribed;
        sub._everSubscribed = true;
        sub.emit('subscribed', { ...reply, resubscribed });
        if (gap) sub.emit('gap', { room: sub.room, since, epoch: reply.epoch, offset: reply.offset });
      },
      (err) => {
        if (err.code === 'disconnected' || err.code === 'closed') return; // retried on reconnect
        if (this._subs.get(sub.room) === sub) this._subs.delete(sub.room);
        sub.state = 'unsubscribed';
        sub.emit('error', err);
      },
    );
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.room) !== sub) return Promise.resolve();
    this._subs.delete(sub.room);
    const wasSubscribed = sub.state === 'subscribed';
    sub.state = 'unsubscribed';
    sub.emit('unsubscribed', { room: sub.room });
    if (this.readyState !== OPEN || !wasSubscribed) {
      // Nothing to undo on the server, or the next session won't resubscribe.
      if (this.readyState === OPEN) this._send({ op: 'unsubscribe', room: sub.room });
      return Promise.resolve();
    }
    return this._request({ op: 'unsubscribe', room: sub.room }).then(() => undefined);
  }

  /** Publishes `data` to `room`; resolves with the `published` reply. */
  publish(room, data, options = {}) {
    const frame = { op: 'publish', room, data };
    if (options.event) frame.event = options.event;
    return this._request(frame, options);
  }

  /** Who is in `room`; resolves with the list of clients. */
  presence(room, options = {}) {
    return this._request({ op: 'presence', room }, options).then((r) => r.clients || []);
  }

  /**
   * Calls `method` of the application's backend with `data` (the node's
   * backend hooks); resolves with its answer, rejects with its error.
   */
  rpc(method, data = null, options = {}) {
    return this._request({ op: 'rpc', method, data }, options).then((r) => r.data);
  }

  /** Sends `data` to the server and resolves with what comes back. */
  echo(data, options = {}) {
    return this._request({ op: 'echo', data }, options).then((r) => r.data);
  }

  /** Sends a raw command with no id (no success reply); buffered while not OPEN. */
  send(frame) {
    this._send(frame);
  }

  _send(frame) {
    if (this.readyState === OPEN && this._ws) {
      this._sendNow(frame);
    } else {
      this._enqueue({ frame, id: undefined });
    }
  }

  _sendNow(frame) {
    try {
      this._ws.send(JSON.stringify(frame));
    } catch (err) {
      if (typeof frame.id === 'number') this._pending.fail(frame.id, new RoomcastError('disconnected', String(err)));
    }
  }

  _enqueue(item) {
    // Kept even while CLOSED: an application may queue work before calling
    // connect(). Requests still time out after `requestTimeout`.
    this._queue.push(item);
    while (this._queue.length > this.options.maxBuffered) {
      const old = this._queue.shift();
      if (old.id !== undefined) {
        this._pending.fail(old.id, new RoomcastError('buffer_overflow', 'too many commands buffered'));
      }
    }
  }

  _dropQueue(err) {
    const q = this._queue;
    this._queue = [];
    for (const item of q) if (item.id !== undefined) this._pending.fail(item.id, err);
  }

  /**
   * Sends a command with a fresh id; `onReply`/`onError` run synchronously
   * when the answer is decoded, so the client's own bookkeeping (session,
   * positions) is in place before the next frame is handled. `direct` sends
   * on the socket even before OPEN (the handshake itself) and fails at once
   * when there is no socket.
   */
  _call(frame, { direct = false, timeout } = {}, onReply, onError) {
    const id = this._pending.nextId();
    frame = { ...frame, id };
    const ms = timeout === undefined ? this.options.requestTimeout : timeout;
    const waiter = { resolve: onReply, reject: onError, op: frame.op, clear: this._clearTimeout };
    if (ms > 0) {
      waiter.timer = this._setTimeout(() => {
        this._queue = this._queue.filter((item) => item.id !== id);
        this._pending.fail(id, new RoomcastError('timeout', `no reply to ${frame.op} within ${ms} ms`));
      }, ms);
    }
    this._pending.add(id, waiter);
    if (direct) {
      if (this._ws && this._ws.readyState === 1) this._sendNow(frame);
      else this._pending.fail(id, new RoomcastError('disconnected', 'not connected'));
    } else if (this.readyState === OPEN && this._ws) {
      this._sendNow(frame);
    } else {
      this._enqueue({ frame, id });
    }
  }

  /** `_call` as a promise, for the public commands. */
  _request(frame, options) {
    return new Promise((resolve, reject) => this._call(frame, options, resolve, reject));
  }

  // -- timers ----------------------------------------------------------------

  _armTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = this._setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      this._clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }
}

/** Creates a client and starts connecting: `connect(url, options)`. */
export function connect(url, options) {
  return new RoomcastClient(url, options);
}

export default RoomcastClient;
