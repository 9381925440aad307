// Shared helpers for the socket.io compatibility suite: a real `roomcast`
// node on free loopback ports, socket.io clients (4.x and 2.x), a gRPC
// Control client, a Roomcast-protocol `/ws` client, JWTs and /metrics.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { io as io4 } from 'socket.io-client';
import io2 from 'socket.io-client-v2';
import WebSocket from 'ws';

export { WebSocket };

const here = dirname(fileURLToPath(import.meta.url));
/** This package's folder, gateway/tests/socketio. */
export const PACKAGE_DIR = here;
/** The workspace root. */
export const REPO_DIR = resolve(here, '../../..');
/** The gateway binary: ROOMCAST_BIN, else the workspace's debug build. */
export const ROOMCAST_BIN = resolve(here, process.env.ROOMCAST_BIN || '../../../target/debug/roomcast');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value or `ms` passes. */
export async function until(fn, { ms = 10000, every = 50, what = 'condition' } = {}) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(every);
  }
}

/** Rejects after `ms` with a message naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * One node for a whole test file: started before its tests (`options` as for
 * `Gateway.start`), handed to `set`, and killed after them with every client
 * the file opened.
 */
export function useGateway(options, set) {
  let gw;
  before(async () => {
    gw = await Gateway.start(options);
    set(gw);
  });
  after(async () => {
    closeAll();
    await gw?.kill();
  });
}

/**
 * One `roomcast` process on free ports. `config` (TOML text) is written to a
 * temporary file passed with `--config`; `args` are extra flags.
 */
export class Gateway {
  constructor({ httpPort, grpcPort, args = [], config = null }) {
    this.httpPort = httpPort;
    this.grpcPort = grpcPort;
    this.args = args;
    this.config = config;
    this.proc = null;
    this.output = '';
    this.dir = null;
    this._grpc = null;
  }

  /** Starts a node; `options`: `{args, config}`. */
  static async start(options = {}) {
    const gw = new Gateway({ httpPort: await freePort(), grpcPort: await freePort(), ...options });
    await gw.start();
    return gw;
  }

  /** `http://127.0.0.1:PORT`, what socket.io clients are given. */
  get url() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.httpPort}/ws`;
  }

  async start() {
    if (!existsSync(ROOMCAST_BIN)) {
      throw new Error(`no gateway binary at ${ROOMCAST_BIN}: build it (cargo build -p roomcast-gateway) or set ROOMCAST_BIN`);
    }
    const args = ['--listen', `127.0.0.1:${this.httpPort}`, '--grpc-listen', `127.0.0.1:${this.grpcPort}`];
    if (this.config !== null) {
      this.dir = await mkdtemp(join(tmpdir(), 'roomcast-sio-'));
      const file = join(this.dir, 'roomcast.toml');
      await writeFile(file, this.config);
      args.push('--config', file);
    }
    args.push(...this.args);
    const proc = spawn(ROOMCAST_BIN, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    this.proc = proc;
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20000);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    await until(
      async () => {
        if (proc.exitCode !== null) throw new Error(`roomcast exited with ${proc.exitCode}:\n${this.output}`);
        const res = await fetch(`${this.url}/healthz`);
        return res.ok;
      },
      { ms: 20000, what: 'roomcast to listen' },
    ).catch(async (err) => {
      proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`${err.message}\n--- roomcast output ---\n${this.output}`);
    });
    return this;
  }

  /** Ends the process (SIGKILL) and removes its config file. */
  async kill() {
    if (this._grpc) {
      this._grpc.close();
      this._grpc = null;
    }
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** The gRPC Control client of this node, with promise-returning methods. */
  get control() {
    if (!this._grpc) this._grpc = controlClient(`127.0.0.1:${this.grpcPort}`);
    return this._grpc;
  }

  /** /metrics as text. */
  async metricsText() {
    const res = await fetch(`${this.url}/metrics`);
    if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
    return res.text();
  }

  /** Sum of every sample of metric `name` whose labels include `labels`. */
  async metric(name, labels = {}) {
    return sumMetric(await this.metricsText(), name, labels);
  }
}

/** Sums the samples of `name` in Prometheus text `text` matching `labels`. */
export function sumMetric(text, name, labels = {}) {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = {};
    for (const kv of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[kv[1]] = kv[2];
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[4]);
      found = true;
    }
  }
  return found ? sum : null;
}

// ---------------------------------------------------------------- gRPC

let controlService = null;

/** A `roomcast.v1.Control` client whose methods return promises. */
export function controlClient(address) {
  if (!controlService) {
    const def = protoLoader.loadSync('roomcast/v1/control.proto', {
      includeDirs: [join(REPO_DIR, 'proto')],
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    controlService = grpc.loadPackageDefinition(def).roomcast.v1.Control;
  }
  const client = new controlService(address, grpc.credentials.createInsecure());
  const call = (method) => (req) =>
    new Promise((ok, fail) => client[method](req, { deadline: Date.now() + 10000 }, (err, res) => (err ? fail(err) : ok(res))));
  return {
    raw: client,
    publish: call('Publish'),
    broadcast: call('Broadcast'),
    subscribe: call('Subscribe'),
    unsubscribe: call('Unsubscribe'),
    disconnect: call('Disconnect'),
    presence: call('Presence'),
    history: call('History'),
    rooms: call('Rooms'),
    info: call('Info'),
    close: () => client.close(),
  };
}

/** A gRPC Publish of JSON `value`. */
export function publishJson(gw, room, value, event = '') {
  return gw.control.publish({ room, event, data: Buffer.from(JSON.stringify(value)) });
}

// ---------------------------------------------------------------- JWT

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 JWT for `claims` (`exp` defaults to an hour from now). */
export function mintJwt(secret, claims) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

// ---------------------------------------------------------------- socket.io

/** Every socket made through `sio4`/`sio2`, so `closeAll()` can end them. */
const opened = new Set();

/** A socket.io-client 4.x socket (not yet connected unless `autoConnect`). */
export function sio4(url, opts = {}) {
  const s = io4(url, { forceNew: true, reconnection: false, timeout: 5000, ...opts });
  opened.add(s);
  return s;
}

/** A socket.io-client 2.x socket. */
export function sio2(url, opts = {}) {
  const s = io2(url, { forceNew: true, reconnection: false, timeout: 5000, ...opts });
  opened.add(s);
  return s;
}

/** Disconnects every socket made since the last call. */
export function closeAll() {
  for (const s of opened) {
    try {
      s.disconnect();
      s.io?.engine?.close?.();
    } catch {
      // already gone
    }
  }
  opened.clear();
}

/**
 * Resolves with `socket` once it is connected; rejects on `connect_error`
 * (4.x) or `error` (2.x) or after `ms`.
 */
export function connected(socket, ms = 8000) {
  if (socket.connected) return Promise.resolve(socket);
  return withTimeout(
    new Promise((ok, fail) => {
      const done = () => {
        socket.off('connect', onConnect);
        socket.off('connect_error', onError);
        socket.off('error', onError);
      };
      const onConnect = () => {
        done();
        ok(socket);
      };
      const onError = (err) => {
        done();
        fail(new Error(`socket.io connect failed: ${err?.message ?? JSON.stringify(err)}`));
      };
      socket.on('connect', onConnect);
      socket.on('connect_error', onError);
      socket.on('error', onError);
    }),
    ms,
    'the socket.io client to connect',
  );
}

/**
 * Resolves with what the server answered instead of a connection: the
 * `connect_error` (4.x) or `error` (2.x) argument. Rejects if it connects.
 */
export function refused(socket, ms = 8000) {
  return withTimeout(
    new Promise((ok, fail) => {
      socket.on('connect', () => fail(new Error(`connected (id ${socket.id}) where a refusal was expected`)));
      socket.on('connect_error', (err) => ok(err));
      socket.on('error', (err) => ok(err));
    }),
    ms,
    'connect_error',
  );
}

/** Emits `event` with `args` and resolves with the acknowledgement's arguments. */
export function emitAck(socket, event, ...args) {
  return withTimeout(
    new Promise((ok) => socket.emit(event, ...args, (...reply) => ok(reply))),
    5000,
    `the ack of ${event}`,
  );
}

/** Like emitAck but resolves with the ack's single argument. */
export async function ack(socket, event, ...args) {
  const reply = await emitAck(socket, event, ...args);
  return reply[0];
}

/**
 * Collects every `event` a socket receives: `.items` holds the argument
 * lists; `.next()` / `.take(n)` wait for more.
 */
export function collect(socket, event) {
  const items = [];
  let waiters = [];
  const onEvent = (...args) => {
    items.push(args);
    const w = waiters;
    waiters = [];
    for (const fn of w) fn();
  };
  socket.on(event, onEvent);
  const c = {
    items,
    /** The first argument of each event so far. */
    get values() {
      return items.map((a) => a[0]);
    },
    /** Waits until `n` events have arrived in all; returns their argument lists. */
    async take(n, ms = 5000) {
      await withTimeout(
        (async () => {
          while (items.length < n) await new Promise((r) => waiters.push(r));
        })(),
        ms,
        `${n} '${event}' event(s) (got ${items.length}: ${JSON.stringify(items.slice(0, 5))})`,
      );
      return items.slice(0, n);
    },
    stop() {
      socket.off(event, onEvent);
    },
  };
  return c;
}

/** Resolves with the arguments of the next `event` on an emitter. */
export function once(emitter, event, ms = 5000) {
  return withTimeout(new Promise((ok) => emitter.once(event, (...args) => ok(args))), ms, `'${event}'`);
}

/** Bytes of a binary value as a socket.io client hands it over, or null when it is not binary. */
export function bytesOf(v) {
  if (Buffer.isBuffer(v)) return Buffer.from(v);
  if (v instanceof ArrayBuffer) return Buffer.from(new Uint8Array(v));
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return null;
}

// ---------------------------------------------------------------- Roomcast /ws

/**
 * A Roomcast-protocol client over `/ws` with subprotocol roomcast.v1.json.
 * `.request(cmd)` sends a command with an id and resolves with the reply;
 * `.messages` collects `message` events.
 */
export async function roomcastWs(gw, { token } = {}) {
  const ws = new WebSocket(gw.wsUrl, 'roomcast.v1.json');
  await withTimeout(
    new Promise((ok, fail) => {
      ws.once('open', ok);
      ws.once('error', fail);
    }),
    5000,
    'the /ws connection',
  );
  const pending = new Map();
  const messages = [];
  let waiters = [];
  let nextId = 1;
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString());
    if (frame.id !== undefined && pending.has(frame.id)) {
      pending.get(frame.id)(frame);
      pending.delete(frame.id);
      return;
    }
    if (frame.op === 'message') {
      messages.push(frame);
      const w = waiters;
      waiters = [];
      for (const fn of w) fn();
    }
  });
  const client = {
    ws,
    messages,
    request(cmd) {
      const id = nextId++;
      return withTimeout(
        new Promise((ok) => {
          pending.set(id, ok);
          ws.send(JSON.stringify({ ...cmd, id }));
        }),
        5000,
        `the reply to ${cmd.op}`,
      );
    },
    async take(n, ms = 5000) {
      await withTimeout(
        (async () => {
          while (messages.length < n) await new Promise((r) => waiters.push(r));
        })(),
        ms,
        `${n} /ws message(s) (got ${messages.length})`,
      );
      return messages.slice(0, n);
    },
    close() {
      ws.terminate();
    },
  };
  if (token) {
    const r = await client.request({ op: 'connect', token, client: 'sio-tests' });
    if (r.op !== 'connected') throw new Error(`connect failed: ${JSON.stringify(r)}`);
  }
  return client;
}

// ---------------------------------------------------------------- raw Engine.IO

/**
 * A raw Engine.IO WebSocket connection (`eio` 3 or 4) that records every
 * text packet and answers nothing unless told to.
 */
export async function rawEngineWs(gw, { eio = 4, path = '/socket.io/' } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${gw.httpPort}${path}?EIO=${eio}&transport=websocket`);
  const packets = [];
  const closed = new Promise((ok) => ws.once('close', (code, reason) => ok({ code, reason: reason.toString(), at: Date.now() })));
  ws.on('message', (data, isBinary) => packets.push(isBinary ? data : data.toString()));
  await withTimeout(
    new Promise((ok, fail) => {
      ws.once('open', ok);
      ws.once('error', fail);
    }),
    5000,
    'the raw Engine.IO WebSocket',
  );
  const open = await until(() => packets.find((p) => typeof p === 'string' && p.startsWith('0')), {
    ms: 5000,
    what: 'the Engine.IO OPEN packet',
  });
  return { ws, packets, closed, handshake: JSON.parse(open.slice(1)) };
}

// ---------------------------------------------------------------- TCP proxy

/**
 * A TCP proxy on a free loopback port, forwarding to `targetPort`, so a
 * test can cut connections the way a network does: `retarget(port)` sends
 * new connections elsewhere, `blackhole(true)` silently drops what the
 * server sends (it stays accepted by the kernel, never reaches the client),
 * `cut()` destroys every open connection.
 */
export async function tcpProxy(targetPort) {
  const { createServer: createTcpServer, connect: tcpConnect } = await import('node:net');
  let target = targetPort;
  let dropping = false;
  const pairs = new Set();
  const server = createTcpServer((down) => {
    const up = tcpConnect(target, '127.0.0.1');
    const pair = { up, down };
    pairs.add(pair);
    down.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      if (!dropping) down.write(d);
    });
    const end = () => {
      pairs.delete(pair);
      up.destroy();
      down.destroy();
    };
    up.on('close', end);
    down.on('close', end);
    up.on('error', end);
    down.on('error', end);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    port: server.address().port,
    get url() {
      return `http://127.0.0.1:${server.address().port}`;
    },
    retarget(port) {
      target = port;
    },
    blackhole(on) {
      dropping = on;
    },
    cut() {
      for (const { up, down } of pairs) {
        up.destroy();
        down.destroy();
      }
      pairs.clear();
    },
    close() {
      this.cut();
      return new Promise((ok) => server.close(ok));
    },
  };
}

/**
 * A redis-server of this test on a free port, nothing persisted. `stop()`
 * kills it (SIGKILL), `restart()` starts it again on the same port, empty.
 */
export async function startRedis() {
  const bin = process.env.REDIS_SERVER || 'redis-server';
  const { connect: tcpConnect } = await import('node:net');
  const port = await freePort();
  let proc = null;
  const up = () =>
    new Promise((ok) => {
      const c = tcpConnect(port, '127.0.0.1', () => {
        c.end();
        ok(true);
      });
      c.on('error', () => ok(false));
    });
  const launch = async () => {
    proc = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    proc.on('error', (err) => {
      throw new Error(`cannot run ${bin}: ${err.message}`);
    });
    await until(up, { ms: 10000, what: `redis-server on port ${port}` });
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (proc && proc.exitCode === null && proc.signalCode === null) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await gone;
      }
    },
    async restart() {
      await this.stop();
      await launch();
    },
  };
}

/**
 * HAProxy in front of `nodes` (Gateways), round-robin with no stickiness:
 * the project's deploy/haproxy/haproxy.cfg `defaults` and `frontend ws`,
 * with `balance roundrobin`, loopback addresses and quick health checks.
 * Every request goes to the next node, whatever session it belongs to.
 */
export async function startHaproxy(nodes) {
  const { readFile } = await import('node:fs/promises');
  const project = await readFile(join(REPO_DIR, 'deploy/haproxy/haproxy.cfg'), 'utf8');
  const section = (name) => {
    const m = new RegExp(`^${name}\\b[^\\n]*\\n((?:[ \\t]+[^\\n]*\\n|[ \\t]*#[^\\n]*\\n|\\n)*)`, 'm').exec(project);
    if (!m) throw new Error(`deploy/haproxy/haproxy.cfg has no '${name}' section`);
    return m[1]
      .split('\n')
      .filter((l) => l.trim() && !l.trim().startsWith('#'))
      .filter((l) => !/^\s*(log|option httplog)\b/.test(l));
  };
  const port = await freePort();
  const defaults = section('defaults');
  const frontend = section('frontend ws').filter((l) => !/^\s*bind\b/.test(l));
  const backend = section('backend gateways')
    .filter((l) => !/^\s*(server|default-server)\b/.test(l))
    .map((l) => l.replace(/balance\s+\S+/, 'balance roundrobin'));
  if (!backend.some((l) => /balance roundrobin/.test(l))) throw new Error('backend gateways has no balance line');
  const cfg = [
    'global',
    '    maxconn 4000',
    'defaults',
    ...defaults,
    'frontend ws',
    `    bind 127.0.0.1:${port}`,
    ...frontend,
    'backend gateways',
    ...backend,
    '    default-server check inter 300ms fall 1 rise 1',
    ...nodes.map((n, i) => `    server node-${i + 1} 127.0.0.1:${n.httpPort}`),
    '',
  ].join('\n');
  const dir = await mkdtemp(join(tmpdir(), 'roomcast-haproxy-'));
  const file = join(dir, 'haproxy.cfg');
  await writeFile(file, cfg);
  let output = '';
  const proc = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.on('error', (err) => {
    output += `cannot run haproxy: ${err.message}\n`;
  });
  proc.stdout.on('data', (c) => (output = (output + c).slice(-10000)));
  proc.stderr.on('data', (c) => (output = (output + c).slice(-10000)));
  const exited = new Promise((r) => proc.once('exit', r));
  await until(
    async () => {
      if (proc.exitCode !== null) throw new Error(`haproxy exited:\n${output}\n${cfg}`);
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    },
    { ms: 10000, what: 'haproxy to listen' },
  );
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    config: cfg,
    get output() {
      return output;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
