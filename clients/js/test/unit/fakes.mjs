// Stand-ins for the two things a unit test cannot own: the clock and the
// network. The state machine is driven through them deterministically; the
// real socket is exercised by the browser tests in ../e2e.

/** A manual clock: timers fire only when the test advances time. */
export class FakeClock {
  constructor() {
    this.now = 0;
    this.seq = 0;
    this.timers = new Map();
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.now + Math.max(0, ms || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
    this.nowFn = () => this.now;
  }

  /** Runs every timer due within `ms`, in order, moving the clock along. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next.at)) {
          next = t;
          nextId = id;
        }
      }
      if (next === null) break;
      this.timers.delete(nextId);
      this.now = next.at;
      next.fn();
    }
    this.now = end;
  }

  /** Delays of the timers now pending, relative to now. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
}

/** A scripted WebSocket: the test opens it, feeds it frames and closes it. */
export class FakeWebSocket {
  static instances = [];

  static reset() {
    FakeWebSocket.instances = [];
  }

  static last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    FakeWebSocket.instances.push(this);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }

  // -- driven by the test --

  open() {
    this.readyState = 1;
    if (this.onopen) this.onopen({});
  }

  receive(frame) {
    if (this.onmessage) this.onmessage({ data: JSON.stringify(frame) });
  }

  serverClose(code, reason = '', wasClean = true) {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason, wasClean });
  }

  /** The last frame sent with `op`. */
  lastSent(op) {
    for (let i = this.sent.length - 1; i >= 0; i--) if (this.sent[i].op === op) return this.sent[i];
    return undefined;
  }

  /** Opens the socket and answers its `connect`. */
  accept(extra = {}) {
    this.open();
    const hello = this.lastSent('connect');
    this.receive({ op: 'connected', id: hello.id, client_id: 'c1', node: 'n1', ping_interval_ms: 25000, ...extra });
  }
}

/** Lets pending promise callbacks run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}
