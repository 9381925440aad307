// The built-in events of contract section 7 (subscribe, unsubscribe,
// publish, presence), each with its acknowledgement, their error acks, and
// events that are neither built in nor routed.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Gateway, ack, collect, connected, publishJson, sio4, sleep, until, useGateway } from './lib.mjs';

const CONFIG = `
[namespaces.chat]
client_publish = true
presence = true
join_leave = true

[namespaces.hist]
client_publish = true
history_size = 100
history_ttl = "5m"

[namespaces.quotes]
client_publish = false
`;

let gw;
useGateway({ config: CONFIG }, (g) => (gw = g));

const client = () => connected(sio4(gw.url, { transports: ['websocket'] }));

function assertError(reply, code) {
  assert.ok(reply && typeof reply === 'object', `an object ack, got ${JSON.stringify(reply)}`);
  assert.ok(reply.error && typeof reply.error === 'object', `an error ack, got ${JSON.stringify(reply)}`);
  assert.equal(reply.error.code, code, `error code in ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.error.message, 'string', `error message in ${JSON.stringify(reply)}`);
}

describe('subscribe', () => {
  test('a room name: ack {room, epoch, offset, recovered}; then publications arrive', async () => {
    const a = await client();
    const r = await ack(a, 'subscribe', 'chat.sub1');
    assert.deepEqual(Object.keys(r).sort(), ['epoch', 'offset', 'recovered', 'room']);
    assert.equal(r.room, 'chat.sub1');
    assert.equal(typeof r.recovered, 'boolean');
    const got = collect(a, 'message');
    await publishJson(gw, 'chat.sub1', { via: 'grpc' });
    assert.deepEqual((await got.take(1))[0], [{ via: 'grpc' }]);
  });

  test('subscribing twice delivers once (the second is acked or refused with bad_request)', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'chat.twice');
    const again = await ack(a, 'subscribe', 'chat.twice');
    if (again.error) assertError(again, 'bad_request');
    else assert.equal(again.room, 'chat.twice', JSON.stringify(again));
    const got = collect(a, 'message');
    await publishJson(gw, 'chat.twice', 1);
    await publishJson(gw, 'chat.twice', 2);
    await got.take(2);
    await sleep(200);
    assert.deepEqual(got.values, [1, 2]);
  });

  test('offsets count publications in a room with history', async () => {
    const a = await client();
    const first = await ack(a, 'subscribe', 'hist.offsets');
    assert.equal(first.offset, 0, JSON.stringify(first));
    const p1 = await ack(a, 'publish', { room: 'hist.offsets', data: 'one' });
    const p2 = await ack(a, 'publish', { room: 'hist.offsets', data: 'two' });
    assert.deepEqual(p1, { room: 'hist.offsets', offset: 1 });
    assert.deepEqual(p2, { room: 'hist.offsets', offset: 2 });
    const b = await client();
    const second = await ack(b, 'subscribe', 'hist.offsets');
    assert.equal(second.epoch, first.epoch);
    assert.equal(second.offset, 2);
  });

  test('{room, since}: recovered, missed publications as events, oldest first, after the ack', async () => {
    const a = await client();
    const start = await ack(a, 'subscribe', 'hist.since');
    for (const n of [1, 2, 3]) await publishJson(gw, 'hist.since', { n }, 'tick');
    const b = await client();
    const order = [];
    b.on('tick', (d) => order.push(['tick', d.n]));
    const r = await new Promise((ok) =>
      b.emit('subscribe', { room: 'hist.since', since: { epoch: start.epoch, offset: start.offset } }, (reply) => {
        order.push(['ack']);
        ok(reply);
      }),
    );
    assert.equal(r.room, 'hist.since', JSON.stringify(r));
    assert.equal(r.recovered, true, JSON.stringify(r));
    assert.equal(r.epoch, start.epoch);
    assert.equal(r.offset, start.offset + 3);
    const deadline = Date.now() + 3000;
    while (order.length < 4 && Date.now() < deadline) await sleep(20);
    assert.deepEqual(order, [['ack'], ['tick', 1], ['tick', 2], ['tick', 3]]);
    // Only the missed ones: a new publication follows, nothing is repeated.
    await publishJson(gw, 'hist.since', { n: 4 }, 'tick');
    while (order.length < 5 && Date.now() < deadline + 3000) await sleep(20);
    await sleep(100);
    assert.deepEqual(order.slice(4), [['tick', 4]]);
  });

  test('{room, since} with an unknown epoch: recovered false', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'hist.epoch');
    await publishJson(gw, 'hist.epoch', 'x');
    const r = await ack(a, 'subscribe', { room: 'hist.epoch2', since: { epoch: 'no-such-epoch', offset: 5 } });
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.recovered, false, JSON.stringify(r));
  });

  test('an invalid room name: bad_request', async () => {
    const a = await client();
    assertError(await ack(a, 'subscribe', 'bad room!'), 'bad_request');
    assertError(await ack(a, 'subscribe', ''), 'bad_request');
    assertError(await ack(a, 'subscribe', 'x'.repeat(201)), 'bad_request');
    assertError(await ack(a, 'subscribe', 42), 'bad_request');
    assertError(await ack(a, 'subscribe', { since: { epoch: 'e', offset: 0 } }), 'bad_request');
    // The socket is still usable.
    const ok = await ack(a, 'subscribe', 'chat.after-errors');
    assert.equal(ok.room, 'chat.after-errors', JSON.stringify(ok));
    assert.ok(a.connected);
  });
});

describe('unsubscribe', () => {
  test('ack {room}; publications stop', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'chat.unsub');
    const got = collect(a, 'message');
    await publishJson(gw, 'chat.unsub', 'before');
    await got.take(1);
    const r = await ack(a, 'unsubscribe', 'chat.unsub');
    assert.deepEqual(r, { room: 'chat.unsub' });
    await publishJson(gw, 'chat.unsub', 'after');
    await sleep(300);
    assert.deepEqual(got.values, ['before']);
  });

  test('a room not joined: not_found; an invalid name: bad_request', async () => {
    const a = await client();
    assertError(await ack(a, 'unsubscribe', 'chat.never-joined'), 'not_found');
    // An invalid name cannot have been joined either; /ws answers not_found too.
    const bad = await ack(a, 'unsubscribe', 'bad room!');
    assert.ok(['bad_request', 'not_found'].includes(bad.error?.code), JSON.stringify(bad));
  });
});

describe('publish', () => {
  test('ack {room, offset}; reaches every subscriber, the publisher too when subscribed', async () => {
    const a = await client();
    const b = await client();
    await ack(a, 'subscribe', 'chat.pub');
    await ack(b, 'subscribe', 'chat.pub');
    const ga = collect(a, 'said');
    const gb = collect(b, 'said');
    const r = await ack(a, 'publish', { room: 'chat.pub', event: 'said', data: { who: 'a' } });
    assert.deepEqual(Object.keys(r).sort(), ['offset', 'room']);
    assert.equal(r.room, 'chat.pub');
    assert.deepEqual((await ga.take(1))[0], [{ who: 'a' }]);
    assert.deepEqual((await gb.take(1))[0], [{ who: 'a' }]);
  });

  test('without an ack it still publishes', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'chat.noack');
    const got = collect(a, 'message');
    a.emit('publish', { room: 'chat.noack', data: 'quiet' });
    assert.deepEqual((await got.take(1))[0], ['quiet']);
  });

  test('a namespace without client publish: forbidden', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'quotes.x');
    const got = collect(a, 'message');
    assertError(await ack(a, 'publish', { room: 'quotes.x', data: 1 }), 'forbidden');
    await sleep(200);
    assert.equal(got.items.length, 0, 'nothing was published');
  });

  test('malformed publishes: bad_request', async () => {
    const a = await client();
    assertError(await ack(a, 'publish', { room: 'bad room!', data: 1 }), 'bad_request');
    assertError(await ack(a, 'publish', { data: 1 }), 'bad_request');
    assertError(await ack(a, 'publish', 'chat.x'), 'bad_request');
    assertError(await ack(a, 'publish', { room: 'chat.x', event: 5, data: 1 }), 'bad_request');
    assert.ok(a.connected);
  });

  test('over the command rate: too_many_requests, and the socket stays', async () => {
    const slow = await Gateway.start({ args: ['--command-rate', '5'] });
    try {
      const a = await connected(sio4(slow.url, { transports: ['websocket'] }));
      const replies = await Promise.all(
        Array.from({ length: 30 }, (_, i) => ack(a, 'publish', { room: 'rate.x', data: i })),
      );
      const codes = replies.map((r) => r.error?.code ?? 'ok');
      assert.ok(codes.includes('ok'), codes.join(','));
      assert.ok(codes.includes('too_many_requests'), codes.join(','));
      assert.deepEqual(
        [...new Set(codes)].sort(),
        ['ok', 'too_many_requests'],
        codes.join(','),
      );
      await sleep(1200);
      const later = await ack(a, 'publish', { room: 'rate.x', data: 'later' });
      assert.equal(later.error, undefined, JSON.stringify(later));
      assert.ok(a.connected);
      a.disconnect();
    } finally {
      await slow.kill();
    }
  });
});

describe('presence', () => {
  test('ack {room, clients:[{client_id, user}]} with every socket id', async () => {
    const a = await client();
    const b = await client();
    await ack(a, 'subscribe', 'chat.who');
    await ack(b, 'subscribe', 'chat.who');
    const r = await ack(a, 'presence', 'chat.who');
    assert.equal(r.room, 'chat.who', JSON.stringify(r));
    assert.ok(Array.isArray(r.clients), JSON.stringify(r));
    assert.deepEqual(r.clients.map((c) => c.client_id).sort(), [a.id, b.id].sort());
    for (const c of r.clients) assert.equal(typeof c.user, 'string', JSON.stringify(c));
    b.disconnect();
    await until(
      async () => {
        const after = await ack(a, 'presence', 'chat.who');
        return JSON.stringify(after.clients.map((c) => c.client_id)) === JSON.stringify([a.id]);
      },
      { ms: 3000, what: 'the disconnected socket to leave presence' },
    );
  });

  test('presence off in the namespace: forbidden; invalid name: bad_request', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'hist.nopresence');
    assertError(await ack(a, 'presence', 'hist.nopresence'), 'forbidden');
    assertError(await ack(a, 'presence', 'other.room'), 'forbidden');
    assertError(await ack(a, 'presence', 'bad room!'), 'bad_request');
  });
});

describe('room events', () => {
  test('join and leave in a namespace with join_leave, as the events join and leave', async () => {
    const a = await client();
    await ack(a, 'subscribe', 'chat.jl');
    const joins = collect(a, 'join');
    const leaves = collect(a, 'leave');
    const b = await client();
    await ack(b, 'subscribe', 'chat.jl');
    const [j] = await joins.take(1);
    assert.equal(j[0].room, 'chat.jl', JSON.stringify(j));
    assert.equal(j[0].client_id, b.id, JSON.stringify(j));
    const bid = b.id;
    await ack(b, 'unsubscribe', 'chat.jl');
    const [l] = await leaves.take(1);
    assert.equal(l[0].room, 'chat.jl', JSON.stringify(l));
    assert.equal(l[0].client_id, bid, JSON.stringify(l));
  });
});

describe('events neither built in nor routed', () => {
  test('with an ack: not_found; without: dropped, the socket stays', async () => {
    const a = await client();
    assertError(await ack(a, 'no-such-event', { x: 1 }), 'not_found');
    a.emit('no-such-event', 'fire and forget');
    a.emit('another-unknown');
    const r = await ack(a, 'subscribe', 'chat.still-here');
    assert.equal(r.room, 'chat.still-here', JSON.stringify(r));
    assert.ok(a.connected);
  });
});
