// Starts real `roomcast` nodes (and, for the multi-node test, a real
// redis-server) on free loopback ports for the browser tests.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { RoomcastClient, OPEN } from '../../roomcast.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The package root, clients/js. */
export const PACKAGE_DIR = resolve(here, '../..');
/** The gateway binary: ROOMCAST_BIN, else the workspace's debug build. */
export const ROOMCAST_BIN = resolve(PACKAGE_DIR, process.env.ROOMCAST_BIN || '../../target/debug/roomcast');

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
export async function until(fn, { ms = 15000, every = 100, what = 'condition' } = {}) {
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
    await new Promise((r) => setTimeout(r, every));
  }
}

/**
 * One gateway process. `start()` spawns it and waits for /healthz; `kill()`
 * ends it the hard way (SIGKILL: no draining, clients see 1006), `stop()`
 * the polite way (SIGTERM: draining, clients see 1001). The same object can
 * be started again on the same ports.
 */
export class Gateway {
  constructor({ httpPort, grpcPort, args = [] }) {
    this.httpPort = httpPort;
    this.grpcPort = grpcPort;
    this.args = args;
    this.proc = null;
    this.output = '';
  }

  static async create(options = {}) {
    const gw = new Gateway({ httpPort: await freePort(), grpcPort: await freePort(), ...options });
    await gw.start();
    return gw;
  }

  get url() {
    return `http://127.0.0.1:${this.httpPort}/`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.httpPort}/ws`;
  }

  async start() {
    if (!existsSync(ROOMCAST_BIN)) {
      throw new Error(`no gateway binary at ${ROOMCAST_BIN}: build it (cargo build -p roomcast-gateway) or set ROOMCAST_BIN`);
    }
    const args = [
      '--listen',
      `127.0.0.1:${this.httpPort}`,
      '--grpc-listen',
      `127.0.0.1:${this.grpcPort}`,
      '--demo',
      ...this.args,
    ];
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
        if (proc.exitCode !== null) throw new Error(`gateway exited with ${proc.exitCode}:\n${this.output}`);
        const res = await fetch(`http://127.0.0.1:${this.httpPort}/healthz`);
        return res.ok;
      },
      { ms: 20000, what: 'the gateway to listen' },
    ).catch((err) => {
      proc.kill('SIGKILL');
      throw new Error(`${err.message}\n--- gateway output ---\n${this.output}`);
    });
    return this;
  }

  async kill() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A redis-server on a free port with nothing persisted, or null when none is installed. */
export async function startRedis() {
  const bin = process.env.REDIS_SERVER || 'redis-server';
  if (spawnSync(bin, ['--version']).status !== 0) return null;
  const port = await freePort();
  const proc = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const url = `redis://127.0.0.1:${port}`;
  await until(
    () =>
      new Promise((ok) => {
        const c = connect(port, '127.0.0.1', () => {
          c.end();
          ok(true);
        });
        c.on('error', () => ok(false));
      }),
    { ms: 10000, what: 'redis-server' },
  );
  return {
    url,
    async stop() {
      proc.kill('SIGKILL');
    },
  };
}

/** The browser client, run in Node over the `ws` package; resolves once OPEN. */
export async function nodeClient(wsUrl, options = {}) {
  const client = new RoomcastClient(wsUrl, { WebSocket, clientName: 'e2e-node', ...options });
  await until(() => client.readyState === OPEN, { ms: 10000, what: 'the Node client to connect' });
  return client;
}
