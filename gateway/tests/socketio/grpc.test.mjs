// The gRPC control plane sees socket.io clients like any other: their
// client_id is socket.id, and Control.Publish reaches socket.io and
// Roomcast-protocol (/ws, roomcast.v1.json) subscribers of one room in one order.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ack,
  collect,
  connected,
  once,
  publishJson,
  roomcastWs,
  sio2,
  sio4,
  sleep,
  until,
  useGateway,
} from './lib.mjs';

const CONFIG = `
command_rate = 0

[namespaces.live]
client_publish = true
presence = true
history_size = 100
history_ttl = "5m"
`;

let gw;
useGateway({ config: CONFIG }, (g) => (gw = g));

describe('gRPC Control and socket.io clients', () => {
  test('50 publications reach a 4.x, a 2.x and a /ws client in the same order', async () => {
    const room = 'live.order';
    const s4 = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const s4p = await connected(sio4(gw.url, { transports: ['polling'] }));
    const s2 = await connected(sio2(gw.url));
    const ws = await roomcastWs(gw);
    for (const s of [s4, s4p, s2]) assert.equal((await ack(s, 'subscribe', room)).room, room);
    const sub = await ws.request({ op: 'subscribe', room });
    assert.equal(sub.op, 'subscribed', JSON.stringify(sub));
    const got = [s4, s4p, s2].map((s) => collect(s, 'seq'));
    const N = 50;
    // Fire them all at once: the order is the order the node accepted them.
    const replies = await Promise.all(
      Array.from({ length: N }, (_, i) => publishJson(gw, room, { i, text: `msg ${i}` }, 'seq')),
    );
    const byOffset = replies.map((r, i) => [Number(r.offset), i]).sort((x, y) => x[0] - y[0]).map(([, i]) => i);
    const wsMsgs = await ws.take(N, 10000);
    assert.ok(wsMsgs.every((m) => m.room === room && m.event === 'seq'), JSON.stringify(wsMsgs[0]));
    const wsOrder = wsMsgs.map((m) => m.data.i);
    assert.deepEqual(wsOrder, byOffset, '/ws order is offset order');
    for (const [k, c] of got.entries()) {
      const items = await c.take(N, 10000);
      assert.deepEqual(
        items.map((args) => args[0].i),
        wsOrder,
        `socket.io client #${k} sees the /ws order`,
      );
      assert.ok(items.every((args) => args.length === 1 && args[0].text === `msg ${args[0].i}`));
    }
    await sleep(200);
    for (const c of got) assert.equal(c.items.length, N, 'no duplicates');
    ws.close();
  });

  test('socket.io publishes reach /ws clients, and /ws publishes reach socket.io clients', async () => {
    const room = 'live.mixed';
    const s = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const ws = await roomcastWs(gw);
    await ack(s, 'subscribe', room);
    await ws.request({ op: 'subscribe', room });
    const got = collect(s, 'note');
    const r = await ack(s, 'publish', { room, event: 'note', data: { from: 'sio' } });
    assert.equal(r.room, room);
    const pub = await ws.request({ op: 'publish', room, event: 'note', data: { from: 'ws' } });
    assert.equal(pub.op, 'published', JSON.stringify(pub));
    const [m1, m2] = await ws.take(2);
    assert.deepEqual([m1.event, m1.data], ['note', { from: 'sio' }]);
    assert.deepEqual([m2.event, m2.data], ['note', { from: 'ws' }]);
    assert.equal(m1.offset, r.offset);
    const items = await got.take(2);
    assert.deepEqual(items, [[{ from: 'sio' }], [{ from: 'ws' }]]);
    ws.close();
  });

  test('Presence lists socket.id as client_id (4.x and 2.x)', async () => {
    const room = 'live.presence';
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio2(gw.url, { transports: ['websocket'] }));
    await ack(a, 'subscribe', room);
    await ack(b, 'subscribe', room);
    const p = await gw.control.presence({ room });
    assert.deepEqual(p.clients.map((c) => c.client_id).sort(), [a.id, b.id].sort());
    const rooms = await gw.control.rooms({ prefix: 'live.presence' });
    assert.deepEqual(
      rooms.rooms.map((r) => [r.room, Number(r.subscribers)]),
      [[room, 2]],
    );
  });

  test('Subscribe and Unsubscribe by socket.id', async () => {
    const room = 'live.server-side';
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio2(gw.url, { transports: ['polling'] }));
    const ga = collect(a, 'push');
    const gb = collect(b, 'push');
    await gw.control.subscribe({ client_id: a.id, room });
    await gw.control.subscribe({ client_id: b.id, room });
    await publishJson(gw, room, 'one', 'push');
    assert.deepEqual((await ga.take(1))[0], ['one']);
    assert.deepEqual((await gb.take(1))[0], ['one']);
    await gw.control.unsubscribe({ client_id: a.id, room });
    await publishJson(gw, room, 'two', 'push');
    assert.deepEqual((await gb.take(2))[1], ['two']);
    await sleep(200);
    assert.deepEqual(ga.values, ['one']);
  });

  test('exclude_client_id = socket.id skips that socket', async () => {
    const room = 'live.exclude';
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio4(gw.url, { transports: ['websocket'] }));
    await ack(a, 'subscribe', room);
    await ack(b, 'subscribe', room);
    const ga = collect(a, 'message');
    const gb = collect(b, 'message');
    await gw.control.publish({ room, data: Buffer.from('"not for a"'), exclude_client_id: a.id });
    await gw.control.publish({ room, data: Buffer.from('"for all"') });
    assert.deepEqual((await gb.take(2)).map((x) => x[0]), ['not for a', 'for all']);
    await ga.take(1);
    await sleep(150);
    assert.deepEqual(ga.values, ['for all']);
  });

  for (const [label, make] of [
    ['4.x', () => sio4(gw.url, { transports: ['websocket'] })],
    ['2.x', () => sio2(gw.url, { transports: ['websocket'] })],
  ]) {
    test(`Disconnect by socket.id closes that socket only (${label})`, async () => {
      const a = await connected(make());
      const b = await connected(make());
      const gone = once(a, 'disconnect', 5000);
      const r = await gw.control.disconnect({ client_id: a.id, reason: 'kicked' });
      assert.equal(Number(r.disconnected), 1);
      await gone;
      assert.equal(a.connected, false);
      await sleep(200);
      assert.equal(b.connected, true);
      await until(async () => {
        const room = 'live.after-kick';
        const r2 = await ack(b, 'subscribe', room);
        return r2.room === room;
      });
    });
  }
});
