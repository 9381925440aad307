// socket.io-client 2.x (Engine.IO v3, Socket.IO protocol v4), the client the
// classic chat examples still load: each transport, acks, the chat route.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { PACKAGE_DIR, ack, collect, connected, publishJson, sio2, until, useGateway } from './lib.mjs';

const CONFIG = `${readFileSync(join(PACKAGE_DIR, 'fixtures/chat.roomcast.toml'), 'utf8')}
[namespaces.v2]
client_publish = true
presence = true
`;

/** Splits an Engine.IO v3 text payload (`<length>:<packet>` repeated). */
function decodeV3Payload(body) {
  const out = [];
  let i = 0;
  while (i < body.length) {
    const colon = body.indexOf(':', i);
    assert.ok(colon > i, `a length prefix at ${i} in ${JSON.stringify(body)}`);
    const len = Number(body.slice(i, colon));
    assert.ok(Number.isInteger(len), `a numeric length at ${i} in ${JSON.stringify(body)}`);
    out.push(body.slice(colon + 1, colon + 1 + len));
    i = colon + 1 + len;
  }
  return out;
}

let gw;
useGateway({ config: CONFIG }, (g) => (gw = g));

describe('socket.io-client 2.x', () => {
  test('the Engine.IO v3 polling handshake answers a v3 payload with an OPEN packet', async () => {
    const res = await fetch(`${gw.url}/socket.io/?EIO=3&transport=polling&b64=1`);
    assert.equal(res.status, 200);
    const body = await res.text();
    // v3 payload: <length>:<packet>..., the first packet being OPEN ("0{...}").
    const packets = decodeV3Payload(body);
    assert.ok(packets.length >= 1 && packets[0].startsWith('0{'), `v3 polling handshake body: ${body}`);
    const open = JSON.parse(packets[0].slice(1));
    assert.equal(typeof open.sid, 'string');
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(typeof open.pingInterval, 'number');
    assert.equal(typeof open.pingTimeout, 'number');
  });

  test('cross-origin polling as 2.x makes it (withCredentials): CORS with credentials', async () => {
    // engine.io-client 3.x sends every cross-origin polling XHR with
    // credentials; a browser drops the answer unless it allows them.
    const origin = 'http://127.0.0.1:1';
    const pre = await fetch(`${gw.url}/socket.io/?EIO=3&transport=polling&t=x`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET' },
    });
    assert.ok(pre.status === 200 || pre.status === 204, `preflight ${pre.status}`);
    const res = await fetch(`${gw.url}/socket.io/?EIO=3&transport=polling&t=y`, { headers: { origin } });
    assert.equal(res.status, 200);
    await res.text();
    assert.equal(res.headers.get('access-control-allow-origin'), origin);
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
  });

  for (const [name, transports, expected] of [
    ['websocket only', ['websocket'], 'websocket'],
    ['polling only', ['polling'], 'polling'],
    ['default: polling upgraded to websocket', undefined, 'websocket'],
  ]) {
    test(`${name}: subscribe, publish and presence with acks; the chat route`, async () => {
      const opts = transports ? { transports } : {};
      const a = await connected(sio2(gw.url, opts));
      const b = await connected(sio2(gw.url, opts));
      assert.equal(a.id, a.io.engine.id, 'socket.id of "/" is the Engine.IO id');
      if (expected === 'websocket') {
        await until(() => a.io.engine.transport.name === 'websocket' && b.io.engine.transport.name === 'websocket', {
          what: 'the upgrade to websocket',
        });
      }
      const room = `v2.${expected}-${transports ? transports.length : 0}`;
      const sub = await ack(a, 'subscribe', room);
      assert.equal(sub.room, room, JSON.stringify(sub));
      assert.equal(typeof sub.epoch, 'string');
      assert.equal(typeof sub.offset, 'number');
      assert.equal(typeof sub.recovered, 'boolean');
      const got = collect(a, 'news');
      const pub = await ack(b, 'publish', { room, event: 'news', data: { headline: 'v2 works', n: [1, 2] } });
      assert.equal(pub.room, room, JSON.stringify(pub));
      assert.deepEqual((await got.take(1))[0], [{ headline: 'v2 works', n: [1, 2] }]);
      await ack(b, 'subscribe', room);
      const pres = await ack(a, 'presence', room);
      assert.deepEqual(pres.clients.map((c) => c.client_id).sort(), [a.id, b.id].sort());
      assert.deepEqual(await ack(a, 'unsubscribe', room), { room });
      assert.equal((await ack(a, 'unsubscribe', room)).error?.code, 'not_found');
      assert.equal((await ack(a, 'subscribe', 'bad room!')).error?.code, 'bad_request');
      assert.equal((await ack(a, 'no-such-event')).error?.code, 'not_found');

      // The chat route: both joined chat.all at connect.
      const ca = collect(a, 'broadcast');
      const cb = collect(b, 'broadcast');
      a.emit('channel', `hi over ${name}`);
      assert.deepEqual((await ca.take(1))[0], [`hi over ${name}`]);
      assert.deepEqual((await cb.take(1))[0], [`hi over ${name}`]);
      assert.equal(a.io.engine.transport.name, expected);
      a.disconnect();
      b.disconnect();
    });
  }

  test('a gRPC publication to a room with many 2.x polling subscribers reaches each once', async () => {
    const socks = await Promise.all(Array.from({ length: 5 }, () => connected(sio2(gw.url, { transports: ['polling'] }))));
    const got = socks.map((s) => collect(s, 'broadcast'));
    for (let i = 0; i < 10; i++) await publishJson(gw, 'chat.all', i, 'broadcast');
    for (const c of got) assert.deepEqual((await c.take(10)).map((x) => x[0]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
