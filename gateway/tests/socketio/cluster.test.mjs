// socket.io across a cluster: three nodes on one redis-server, behind HAProxy
// round-robin with no sticky sessions, so consecutive requests of one
// client land on different nodes. Long-polling and the upgrade work anyway
// (requests go to the node that owns the session), a client whose node is
// killed recovers on another, Redis restarts are followed, and
// `@socket.io/redis-emitter` reaches every node's subscribers.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Emitter } from '@socket.io/redis-emitter';
import { createClient } from 'redis';
import {
  Gateway,
  ack,
  closeAll,
  collect,
  connected,
  once,
  publishJson,
  roomcastWs,
  sio2,
  sio4,
  sleep,
  startHaproxy,
  startRedis,
  until,
} from './lib.mjs';

const CONFIG = `
command_rate = 0

[socketio]
recovery = "2m"

[socketio.emitter]
enabled = true

[namespaces.chat]
client_publish = true
presence = true
history_size = 100
history_ttl = "5m"
`;

let redis;
let nodes = [];
let lb;

/** Node `i` (1-based), on the ports of `previous` when given. */
async function startNode(i, previous = null) {
  const options = {
    config: CONFIG,
    args: ['--adapter', 'redis', '--redis-url', redis.url, '--node-id', `node-${i}`, '--ping-interval', '500ms', '--ping-timeout', '2s'],
  };
  if (!previous) return Gateway.start(options);
  return new Gateway({ ...options, httpPort: previous.httpPort, grpcPort: previous.grpcPort }).start();
}

before(async () => {
  redis = await startRedis();
  nodes = await Promise.all([1, 2, 3].map((i) => startNode(i)));
  // Each node must see the others before requests can be sent on.
  await until(async () => (await nodes[0].control.info({})).nodes.length === 3, { ms: 15000, what: 'three nodes in Info' });
  lb = await startHaproxy(nodes);
});

after(async () => {
  closeAll();
  await lb?.stop();
  await Promise.all(nodes.map((n) => n.kill()));
  await redis?.stop();
});

/** Sum of a metric over the live nodes. */
async function clusterMetric(name, labels = {}) {
  let sum = 0;
  for (const n of nodes) {
    if (n.proc.exitCode !== null || n.proc.signalCode !== null) continue;
    sum += (await n.metric(name, labels)) ?? 0;
  }
  return sum;
}

/** A node still running, for gRPC calls. */
function liveNode() {
  return nodes.find((n) => n.proc.exitCode === null && n.proc.signalCode === null);
}

/** Two clients chat through the balancer: every message reaches the other, in order. */
async function chat(make, transport) {
  const alice = await connected(make());
  const bob = await connected(make());
  for (const s of [alice, bob]) {
    const a = await ack(s, 'subscribe', 'chat.lobby');
    assert.equal(a.room, 'chat.lobby', JSON.stringify(a));
  }
  const toBob = collect(bob, 'said');
  const toAlice = collect(alice, 'said');
  for (let i = 0; i < 20; i++) {
    const from = i % 2 ? bob : alice;
    const r = await ack(from, 'publish', { room: 'chat.lobby', event: 'said', data: { i, transport } });
    assert.ok(r.offset > 0, JSON.stringify(r));
  }
  const got = (c) => c.values.map((v) => v.i);
  await toBob.take(20, 15000);
  await toAlice.take(20, 15000);
  const all = [...Array(20).keys()];
  assert.deepEqual(got(toBob), all, 'bob hears everyone, in order');
  assert.deepEqual(got(toAlice), all, 'alice hears everyone, in order');
  return { alice, bob };
}

describe('no sticky sessions', () => {
  test('polling only: requests of one session land on every node and still reach it', async () => {
    const before = await clusterMetric('roomcast_socketio_forwarded_requests_total', { outcome: 'forwarded' });
    const { alice, bob } = await chat(() => sio4(lb.url, { transports: ['polling'] }), 'polling');
    assert.equal(alice.io.engine.transport.name, 'polling');
    const forwarded = (await clusterMetric('roomcast_socketio_forwarded_requests_total', { outcome: 'forwarded' })) - before;
    assert.ok(forwarded >= 10, `requests went to the owning node (${forwarded} forwarded)`);
    alice.disconnect();
    bob.disconnect();
  });

  test('polling then upgrade: the WebSocket may land on any node', async () => {
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const s = await connected(sio4(lb.url, { transports: ['polling', 'websocket'] }));
      clients.push(s);
    }
    await until(() => clients.every((s) => s.io.engine.transport.name === 'websocket'), {
      ms: 10000,
      what: 'every client upgraded to WebSocket',
    });
    // Round robin: three upgrades, three nodes; at most one of them lands
    // on the node that owns its session unless they all do, which the
    // balancer's rotation rules out for consecutive requests.
    const relayed = await clusterMetric('roomcast_socketio_relayed_websockets');
    assert.ok(relayed >= 1, `some upgrade was relayed to its owner (${relayed})`);
    const { alice, bob } = await chat(() => sio4(lb.url, { transports: ['polling', 'websocket'] }), 'upgrade');
    await until(() => alice.io.engine.transport.name === 'websocket' && bob.io.engine.transport.name === 'websocket', {
      what: 'the chatting clients upgraded',
    });
    // After the upgrade too.
    const heard = collect(bob, 'said');
    await ack(alice, 'publish', { room: 'chat.lobby', event: 'said', data: { i: 'after' } });
    await heard.take(1);
    for (const s of [...clients, alice, bob]) s.disconnect();
  });

  test('socket.io-client 2.x over polling, through the balancer', async () => {
    const s = await connected(sio2(lb.url, { transports: ['polling'] }));
    const got = collect(s, 'said');
    await new Promise((ok) => s.emit('subscribe', 'chat.v2', ok));
    for (let i = 0; i < 5; i++) await publishJson(liveNode(), 'chat.v2', i, 'said');
    await got.take(5, 10000);
    assert.deepEqual(got.values, [0, 1, 2, 3, 4]);
    s.close();
  });
});

describe('presence and Info see socket.io sessions on every node', () => {
  test('Presence through one node lists sockets of all three', async () => {
    const sockets = [];
    for (let i = 0; i < 3; i++) sockets.push(await connected(sio4(nodes[i].url, { transports: ['websocket'] })));
    for (const s of sockets) await ack(s, 'subscribe', 'chat.seen');
    for (const n of nodes) {
      const p = await n.control.presence({ room: 'chat.seen' });
      assert.deepEqual(
        p.clients.map((c) => c.client_id).sort(),
        sockets.map((s) => s.id).sort(),
        'every socket, whichever node it is on',
      );
      assert.deepEqual(new Set(p.clients.map((c) => c.node)), new Set(['node-1', 'node-2', 'node-3']));
    }
    // socket.io's own presence event sees them too.
    const seen = await ack(sockets[0], 'presence', 'chat.seen');
    assert.equal(seen.clients.length, 3, JSON.stringify(seen));
    // Info: each node announces its sessions every second.
    await until(
      async () => {
        const info = await nodes[1].control.info({});
        return info.nodes.length === 3 && info.nodes.every((n) => Number(n.connections) >= 1);
      },
      { what: 'Info to count a socket.io session on every node' },
    );
    for (const s of sockets) s.disconnect();
  });
});

describe('@socket.io/redis-emitter', () => {
  test('emitter.to(room).emit reaches socket.io and roomcast.v1 subscribers on every node', async () => {
    const pub = createClient({ url: redis.url });
    await pub.connect();
    try {
      const emitter = new Emitter(pub);
      const sockets = [];
      for (const n of nodes) sockets.push(await connected(sio4(n.url, { transports: ['websocket'] })));
      for (const s of sockets) await ack(s, 'subscribe', 'chat.emitted');
      const ws = await roomcastWs(nodes[2]);
      const sub = await ws.request({ op: 'subscribe', room: 'chat.emitted' });
      assert.equal(sub.op, 'subscribed', JSON.stringify(sub));
      const got = sockets.map((s) => collect(s, 'quote'));
      const bin = sockets.map((s) => collect(s, 'blob'));
      await until(async () => (await clusterMetric('roomcast_socketio_emitter_up')) === 3, { what: 'every node listening to the emitter' });

      emitter.to('chat.emitted').emit('quote', { sym: 'ACME', px: 12.5 });
      emitter.to('chat.emitted').emit('blob', Buffer.from([1, 2, 3]));
      for (const g of got) assert.deepEqual((await g.take(1, 5000))[0], [{ sym: 'ACME', px: 12.5 }]);
      for (const g of bin) {
        const [[b]] = await g.take(1, 5000);
        assert.deepEqual([...new Uint8Array(b)], [1, 2, 3]);
      }
      await until(() => ws.messages.some((m) => m.event === 'quote'), { what: 'the /ws client to get the quote' });
      const m = ws.messages.find((x) => x.event === 'quote');
      assert.equal(m.room, 'chat.emitted');
      assert.deepEqual(m.data, { sym: 'ACME', px: 12.5 });

      // Not supported: dropped and counted, never delivered wrong.
      const before = await clusterMetric('roomcast_socketio_emitter_messages_total', { outcome: 'except' });
      emitter.to('chat.emitted').except('chat.other').emit('quote', { sym: 'NOPE' });
      await until(
        async () => (await clusterMetric('roomcast_socketio_emitter_messages_total', { outcome: 'except' })) === before + 3,
        { what: 'the except() message counted on every node' },
      );
      await sleep(200);
      for (const g of got) assert.equal(g.items.length, 1, 'the except() message was not delivered');
      ws.close();
      for (const s of sockets) s.disconnect();
    } finally {
      await pub.quit();
    }
  });
});

describe('a node killed mid-conversation', () => {
  for (const transports of [['websocket'], ['polling']]) {
    test(`over ${transports[0]}: the client recovers on another node with everything it missed`, async () => {
      const s = await connected(
        sio4(lb.url, {
          transports,
          reconnection: true,
          reconnectionDelay: 300,
          reconnectionDelayMax: 300,
          randomizationFactor: 0,
        }),
      );
      const id = s.id;
      const room = `chat.kill.${transports[0]}`;
      const other = `chat.kill2.${transports[0]}`;
      await ack(s, 'subscribe', room);
      await ack(s, 'subscribe', other);
      const main = collect(s, 'line');
      const side = collect(s, 'side');
      for (let i = 0; i < 5; i++) await publishJson(liveNode(), room, i, 'line');
      await publishJson(liveNode(), other, 's0', 'side');
      await main.take(5);
      await side.take(1);
      // A heartbeat or two, so the node has kept where the client stands.
      await sleep(1500);

      // Which node holds the session: the one whose Presence reply says so.
      const where = (await liveNode().control.presence({ room })).clients.find((c) => c.client_id === id).node;
      const victim = nodes.find((n, i) => `node-${i + 1}` === where);
      const disconnected = once(s, 'disconnect', 10000);
      await victim.kill();
      await disconnected;
      const survivor = liveNode();
      for (let i = 5; i < 10; i++) await publishJson(survivor, room, i, 'line');
      await publishJson(survivor, other, 's1', 'side');

      await once(s, 'connect', 15000);
      assert.equal(s.recovered, true, 'socket.recovered');
      assert.equal(s.id, id, 'the same socket id, on another node');
      await main.take(10, 10000);
      await side.take(2, 10000);
      await publishJson(survivor, room, 10, 'line');
      await main.take(11, 10000);
      await sleep(200);
      assert.deepEqual(main.values, [...Array(11).keys()], 'every publication of the room, once, in order');
      assert.deepEqual(side.values, ['s0', 's1'], 'the other room too');
      s.disconnect();

      // The node comes back on its ports for the next test, and the
      // balancer's health check takes it again.
      const i = nodes.indexOf(victim);
      nodes[i] = await startNode(i + 1, victim);
      await until(async () => (await liveNode().control.info({})).nodes.length === 3, { ms: 15000, what: 'three nodes again' });
      await sleep(1000);
    });
  }
});

describe('Redis restarted under socket.io clients', () => {
  test('roomcast_adapter_up follows, rooms are subscribed again, a stale position is told it cannot recover', async () => {
    const sockets = [];
    for (const n of nodes) {
      sockets.push(
        await connected(
          sio4(n.url, {
            transports: ['websocket'],
            reconnection: true,
            reconnectionDelay: 300,
            reconnectionDelayMax: 300,
            randomizationFactor: 0,
          }),
        ),
      );
    }
    for (const s of sockets) await ack(s, 'subscribe', 'chat.restart');
    const got = sockets.map((s) => collect(s, 'r'));
    await publishJson(nodes[0], 'chat.restart', 'before', 'r');
    for (const g of got) await g.take(1);

    await redis.stop();
    for (const n of nodes) {
      await until(async () => (await n.metric('roomcast_adapter_up')) === 0, { ms: 15000, what: 'adapter_up 0' });
    }
    // Refused while Redis is down: nothing is accepted that could be lost.
    await assert.rejects(publishJson(nodes[1], 'chat.restart', 'during', 'r'));
    await redis.restart();
    for (const n of nodes) {
      await until(async () => (await n.metric('roomcast_adapter_up')) === 1, { ms: 20000, what: 'adapter_up 1' });
    }
    // The sessions stayed; their rooms were subscribed again on every node.
    await publishJson(nodes[1], 'chat.restart', 'after', 'r');
    for (const g of got) {
      await g.take(2, 10000);
      assert.deepEqual(g.values, ['before', 'after']);
    }
    // Redis lost the history: a client that comes back is told so
    // (a new socket, recovered false), never served a wrong history.
    const s = sockets[0];
    const id = s.id;
    const back = once(s, 'connect', 10000);
    s.io.engine.close();
    await back;
    assert.equal(s.recovered, false);
    assert.notEqual(s.id, id);
    for (const x of sockets) x.disconnect();
  });
});
