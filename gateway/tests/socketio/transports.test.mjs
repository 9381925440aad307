// socket.io-client 4.x (Engine.IO v4) over each transport: WebSocket only,
// long-polling only, and the default (polling, then the upgrade to WebSocket).
// Each connects, subscribes with an ack, publishes with the built-in
// `publish` event and receives the publication as an event.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ack, collect, connected, sio4, until, useGateway } from './lib.mjs';

let gw;
useGateway({}, (g) => (gw = g));

describe('socket.io-client 4.x transports', () => {
  test('the Engine.IO v4 polling handshake answers an OPEN packet', async () => {
    const res = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.match(body, /^0\{/, `polling handshake body: ${body}`);
    const open = JSON.parse(body.slice(1));
    assert.equal(typeof open.sid, 'string');
    assert.ok(open.sid.length > 0);
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(typeof open.pingInterval, 'number');
    assert.equal(typeof open.pingTimeout, 'number');
    assert.equal(typeof open.maxPayload, 'number');
  });

  for (const [name, transports, expected] of [
    ['websocket only', ['websocket'], 'websocket'],
    ['polling only', ['polling'], 'polling'],
    ['default: polling upgraded to websocket', undefined, 'websocket'],
  ]) {
    test(name, async () => {
      const opts = transports ? { transports } : {};
      const a = sio4(gw.url, opts);
      const b = sio4(gw.url, opts);
      await Promise.all([connected(a), connected(b)]);
      assert.ok(a.id && b.id && a.id !== b.id, 'each socket has its own id');
      if (expected === 'websocket') {
        await until(() => a.io.engine.transport.name === 'websocket', { what: 'the websocket transport' });
      }
      const room = `t.${name.replace(/\W+/g, '_')}`;
      const sub = await ack(a, 'subscribe', room);
      assert.equal(sub.room, room, JSON.stringify(sub));
      assert.equal(typeof sub.epoch, 'string', JSON.stringify(sub));
      assert.equal(typeof sub.offset, 'number', JSON.stringify(sub));
      assert.equal(typeof sub.recovered, 'boolean', JSON.stringify(sub));
      const got = collect(a, 'greeting');
      const pub = await ack(b, 'publish', { room, event: 'greeting', data: { text: 'hello', n: 1 } });
      assert.equal(pub.room, room, JSON.stringify(pub));
      assert.equal(typeof pub.offset, 'number', JSON.stringify(pub));
      const [args] = await got.take(1);
      assert.deepEqual(args, [{ text: 'hello', n: 1 }], 'one argument: the publication data');
      // The sender is not subscribed, so nothing comes back to it.
      assert.equal(a.io.engine.transport.name, expected);
      assert.equal(b.io.engine.transport.name, expected);
      a.disconnect();
      b.disconnect();
    });
  }

  test('an event without a name arrives as `message`; strings, numbers, arrays and null survive', async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    await ack(a, 'subscribe', 'plain.room');
    const got = collect(a, 'message');
    const values = ['text', 42, [1, 'two', { three: 3 }], null, { nested: { ok: true } }, true];
    for (const data of values) {
      const r = await ack(a, 'publish', { room: 'plain.room', data });
      assert.equal(r.error, undefined, JSON.stringify(r));
    }
    const items = await got.take(values.length);
    assert.deepEqual(
      items.map((args) => args[0]),
      values,
    );
    a.disconnect();
  });
});
