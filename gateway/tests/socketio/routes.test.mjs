// Routed events: the classic socket.io chat as configuration only
// (fixtures/chat.roomcast.toml, the project's example): every socket joins
// chat.all, and emit('channel', x) publishes x there as 'broadcast'.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  PACKAGE_DIR,
  ack,
  collect,
  connected,
  publishJson,
  roomcastWs,
  sio2,
  sio4,
  sleep,
  useGateway,
} from './lib.mjs';

const CHAT = readFileSync(join(PACKAGE_DIR, 'fixtures/chat.roomcast.toml'), 'utf8');

let gw;
useGateway({ config: CHAT }, (g) => (gw = g));

describe('routes: the chat configuration', () => {
  test("two 4.x clients: emit('channel', 'hi') reaches both as 'broadcast'", async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio4(gw.url));
    const ga = collect(a, 'broadcast');
    const gb = collect(b, 'broadcast');
    a.emit('channel', 'hi');
    assert.deepEqual((await ga.take(1))[0], ['hi']);
    assert.deepEqual((await gb.take(1))[0], ['hi']);
    b.emit('channel', { from: 'b', text: 'hello back' });
    assert.deepEqual((await ga.take(2))[1], [{ from: 'b', text: 'hello back' }]);
    assert.deepEqual((await gb.take(2))[1], [{ from: 'b', text: 'hello back' }]);
    await sleep(150);
    assert.equal(ga.items.length, 2, 'once each');
    assert.equal(gb.items.length, 2, 'once each');
  });

  test('2.x and 4.x clients chat together; order kept', async () => {
    const a = await connected(sio2(gw.url));
    const b = await connected(sio4(gw.url, { transports: ['polling'] }));
    const ga = collect(a, 'broadcast');
    const gb = collect(b, 'broadcast');
    for (let i = 0; i < 20; i++) (i % 2 ? a : b).emit('channel', `m${i}`);
    // Per sender, order is kept; both see the same interleaving.
    const ia = (await ga.take(20)).map((x) => x[0]);
    const ib = (await gb.take(20)).map((x) => x[0]);
    assert.deepEqual(ia, ib);
    assert.deepEqual(
      ia.filter((m) => Number(m.slice(1)) % 2 === 1),
      Array.from({ length: 10 }, (_, k) => `m${2 * k + 1}`),
    );
  });

  test('joined rooms are real rooms: presence, gRPC publish and /ws subscribers', async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const p = await gw.control.presence({ room: 'chat.all' });
    assert.ok(
      p.clients.some((c) => c.client_id === a.id),
      `socket ${a.id} in chat.all: ${JSON.stringify(p.clients)}`,
    );
    const ws = await roomcastWs(gw);
    await ws.request({ op: 'subscribe', room: 'chat.all' });
    const ga = collect(a, 'broadcast');
    a.emit('channel', 'to everyone');
    const [m] = await ws.take(1);
    assert.equal(m.room, 'chat.all');
    assert.equal(m.event, 'broadcast');
    assert.equal(m.data, 'to everyone');
    await publishJson(gw, 'chat.all', 'from the backend', 'broadcast');
    assert.deepEqual(
      (await ga.take(2)).map((x) => x[0]),
      ['to everyone', 'from the backend'],
    );
    ws.close();
  });

  test('a routed emit with an ack is acknowledged; other events still work', async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const r = await ack(a, 'channel', 'acked');
    assert.equal(r?.error, undefined, JSON.stringify(r));
    assert.equal(r.room, 'chat.all', JSON.stringify(r));
    assert.equal(typeof r.offset, 'number', JSON.stringify(r));
    const u = await ack(a, 'not-routed', 1);
    assert.equal(u?.error?.code, 'not_found', JSON.stringify(u));
  });
});
