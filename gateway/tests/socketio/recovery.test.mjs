// Connection state recovery (socket.io 4.6+, `[socketio] recovery`): a
// client whose connection drops and that reconnects within the window gets
// socket.recovered === true and every publication it missed, once each, in
// order; after the window it starts over (recovered false, a new id).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  Gateway,
  ack,
  closeAll,
  collect,
  connected,
  once,
  publishJson,
  sio4,
  sleep,
  tcpProxy,
  until,
} from './lib.mjs';

const config = (window) => `
command_rate = 0

[socketio]
recovery = "${window}"

[namespaces.rec]
client_publish = true
history_size = 100
history_ttl = "5m"
`;

const gateways = [];
const cleanups = [];
after(async () => {
  closeAll();
  await Promise.all(gateways.map((g) => g.kill()));
  for (const c of cleanups) await c();
});

async function node(window) {
  const gw = await Gateway.start({ config: config(window) });
  gateways.push(gw);
  return gw;
}

/** A 4.x socket that reconnects after `delay` ms, connected (`gw` may be a proxy). */
function recovering(gw, delay, transports = ['websocket']) {
  return connected(
    sio4(gw.url, {
      transports,
      reconnection: true,
      reconnectionDelay: delay,
      reconnectionDelayMax: delay,
      randomizationFactor: 0,
    }),
  );
}

/** Waits until the node no longer lists `id` in `room`. */
async function goneFrom(gw, room, id) {
  await until(async () => !(await gw.control.presence({ room })).clients.some((c) => c.client_id === id), {
    ms: 5000,
    what: `${id} to leave ${room}`,
  }).catch(() => {
    // A node may keep a recoverable session listed during the window; the
    // publications below still happen while the client is away.
  });
}

describe('connection state recovery', () => {
  const drops = {
    'socket.io.engine.close()': (s) => s.io.engine.close(),
    'the TCP connection killed': (s) => s.io.engine.transport.ws._socket.destroy(),
  };
  for (const [how, drop] of Object.entries(drops)) {
    test(`after ${how}: recovered, missed publications once each, in order`, async () => {
      const gw = await node('2m');
      const s = await recovering(gw, 1500);
      assert.ok(!s.recovered, 'a first connection is not a recovery');
      const id = s.id;
      await ack(s, 'subscribe', 'rec.a');
      await ack(s, 'subscribe', 'rec.b');
      const ga = collect(s, 'a');
      const gb = collect(s, 'b');
      for (let i = 0; i < 3; i++) await publishJson(gw, 'rec.a', i, 'a');
      await ga.take(3);

      const disconnected = once(s, 'disconnect', 5000);
      drop(s);
      await disconnected;
      await goneFrom(gw, 'rec.a', id);
      for (let i = 3; i < 10; i++) await publishJson(gw, 'rec.a', i, 'a');
      for (let i = 0; i < 4; i++) await publishJson(gw, 'rec.b', `b${i}`, 'b');

      await once(s, 'connect', 8000);
      assert.equal(s.recovered, true, 'socket.recovered');
      assert.equal(s.id, id, 'the same socket id');
      await ga.take(10);
      await gb.take(4);
      // Live again after the replay, still in both rooms.
      await publishJson(gw, 'rec.a', 10, 'a');
      await publishJson(gw, 'rec.b', 'b4', 'b');
      await ga.take(11);
      await gb.take(5);
      await sleep(200);
      assert.deepEqual(ga.values, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'rec.a: every publication once, in order');
      assert.deepEqual(gb.values, ['b0', 'b1', 'b2', 'b3', 'b4'], 'rec.b: every publication once, in order');
      const p = await gw.control.presence({ room: 'rec.a' });
      assert.deepEqual(
        p.clients.map((c) => c.client_id),
        [id],
      );
      s.disconnect();
    });
  }

  test('over polling: recovered with what was missed', async () => {
    const gw = await node('2m');
    const s = await recovering(gw, 1000, ['polling']);
    const id = s.id;
    await ack(s, 'subscribe', 'rec.poll');
    const g = collect(s, 'message');
    await publishJson(gw, 'rec.poll', 'before');
    await g.take(1);
    const disconnected = once(s, 'disconnect', 5000);
    s.io.engine.close();
    await disconnected;
    await publishJson(gw, 'rec.poll', 'missed');
    await once(s, 'connect', 8000);
    assert.equal(s.recovered, true, `socket.recovered; node log:\n${gw.output.slice(-4000)}`);
    assert.equal(s.id, id);
    await g.take(2);
    await sleep(150);
    assert.deepEqual(g.values, ['before', 'missed']);
    s.disconnect();
  });

  test('a room without history: socket.recovered is never true with a gap', async () => {
    const gw = await node('2m');
    const s = await recovering(gw, 1500);
    await ack(s, 'subscribe', 'rec.kept');
    await ack(s, 'subscribe', 'plain.unkept'); // the default namespace keeps no history
    const gk = collect(s, 'k');
    const gu = collect(s, 'u');
    await publishJson(gw, 'rec.kept', 'k0', 'k');
    await publishJson(gw, 'plain.unkept', 'u0', 'u');
    await gk.take(1);
    await gu.take(1);
    const disconnected = once(s, 'disconnect', 5000);
    s.io.engine.close();
    await disconnected;
    await publishJson(gw, 'rec.kept', 'k1', 'k');
    await publishJson(gw, 'plain.unkept', 'u1', 'u');
    await once(s, 'connect', 8000);
    await sleep(500);
    if (s.recovered) {
      assert.deepEqual(gk.values, ['k0', 'k1']);
      assert.deepEqual(
        gu.values,
        ['u0', 'u1'],
        'socket.recovered is true, so u1 (published to plain.unkept, a room without history, while the socket was away) must have arrived',
      );
    }
    s.disconnect();
  });

  test('publications written into a dying connection are not lost (two rooms)', async () => {
    // The connection goes silent (a dead network path: what the node
    // writes is accepted by TCP and never arrives), then breaks. The client
    // last saw an event of rec.x; the node had meanwhile written more of
    // both rooms. On recovery the client must get all of them.
    const gw = await node('2m');
    const proxy = await tcpProxy(gw.httpPort);
    cleanups.push(() => proxy.close());
    const s = await recovering(proxy, 1000);
    await ack(s, 'subscribe', 'rec.x');
    await ack(s, 'subscribe', 'rec.y');
    const gx = collect(s, 'x');
    const gy = collect(s, 'y');
    await publishJson(gw, 'rec.y', 'y1', 'y');
    await gy.take(1);
    await publishJson(gw, 'rec.x', 'x1', 'x');
    await gx.take(1);

    proxy.blackhole(true);
    await publishJson(gw, 'rec.y', 'y2', 'y');
    await publishJson(gw, 'rec.y', 'y3', 'y');
    await publishJson(gw, 'rec.x', 'x2', 'x');
    await sleep(300);
    const disconnected = once(s, 'disconnect', 5000);
    proxy.cut();
    proxy.blackhole(false);
    await disconnected;
    await once(s, 'connect', 8000);
    assert.equal(s.recovered, true, 'socket.recovered');
    await sleep(500);
    assert.deepEqual(gx.values, ['x1', 'x2'], 'rec.x');
    assert.deepEqual(gy.values, ['y1', 'y2', 'y3'], 'rec.y: y2 and y3 were written to the dead connection, never received');
    s.disconnect();
  });

  test('a deliberate disconnect() is not recoverable', async () => {
    const gw = await node('2m');
    const s = await recovering(gw, 500);
    const id = s.id;
    await ack(s, 'subscribe', 'rec.bye');
    s.disconnect();
    await sleep(200);
    s.connect();
    await once(s, 'connect', 8000);
    assert.ok(!s.recovered, 'socket.recovered');
    assert.notEqual(s.id, id);
    s.disconnect();
  });

  test('after the window: recovered false, a new id, nothing replayed', async () => {
    const gw = await node('1s');
    const s = await recovering(gw, 2500);
    const id = s.id;
    await ack(s, 'subscribe', 'rec.late');
    const g = collect(s, 'message');
    await publishJson(gw, 'rec.late', 'seen');
    await g.take(1);
    const disconnected = once(s, 'disconnect', 5000);
    s.io.engine.close();
    await disconnected;
    await publishJson(gw, 'rec.late', 'missed');
    await once(s, 'connect', 8000);
    assert.ok(!s.recovered, 'reconnected after the window: socket.recovered');
    assert.notEqual(s.id, id, 'a new session');
    await publishJson(gw, 'rec.late', 'not subscribed any more');
    await sleep(300);
    assert.deepEqual(g.values, ['seen']);
    // The old session is gone from its room.
    const p = await gw.control.presence({ room: 'rec.late' });
    assert.deepEqual(p.clients, []);
    s.disconnect();
  });

  test('without [socketio] recovery a reconnect is a new session', async () => {
    const gw = await Gateway.start({ config: config('2m').replace(/\[socketio\]\nrecovery = "2m"\n/, '') });
    gateways.push(gw);
    const s = await recovering(gw, 300);
    const id = s.id;
    const disconnected = once(s, 'disconnect', 5000);
    s.io.engine.close();
    await disconnected;
    await once(s, 'connect', 8000);
    assert.ok(!s.recovered, 'socket.recovered');
    assert.notEqual(s.id, id);
    s.disconnect();
  });
});
