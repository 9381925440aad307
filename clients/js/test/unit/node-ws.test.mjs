// The client over the `ws` package and real loopback sockets, for what a
// scripted socket cannot show: how a real implementation behaves when a
// half-open connection is abandoned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';
import { RoomcastClient, CLOSED } from '../../roomcast.js';

test('a server that accepts TCP but never answers the upgrade is given up on and retried', async () => {
  const held = [];
  const srv = net.createServer((sock) => held.push(sock)).listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  try {
    const c = new RoomcastClient(`ws://127.0.0.1:${srv.address().port}/ws`, {
      WebSocket,
      connectTimeout: 200,
      minDelay: 20,
      maxDelay: 40,
    });
    const reasons = [];
    c.on('disconnected', (d) => reasons.push(d.reason));
    await new Promise((r) => setTimeout(r, 900));
    c.close();
    assert.ok(reasons.filter((r) => r === 'connect timeout').length >= 2, `retried: ${reasons}`);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(c.readyState, CLOSED);
  } finally {
    for (const s of held) s.destroy();
    srv.close();
  }
});
