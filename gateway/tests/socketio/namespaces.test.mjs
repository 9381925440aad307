// socket.io namespaces: the ones listed in `[socketio] namespaces` connect,
// others get CONNECT_ERROR.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Gateway, ack, closeAll, collect, connected, publishJson, refused, sio2, sio4 } from './lib.mjs';

const gateways = [];
after(async () => {
  closeAll();
  await Promise.all(gateways.map((g) => g.kill()));
});

async function node(config) {
  const gw = await Gateway.start({ config });
  gateways.push(gw);
  return gw;
}

describe('namespaces', () => {
  test('by default only "/" is accepted', async () => {
    const gw = await node('');
    const root = await connected(sio4(gw.url, { transports: ['websocket'] }));
    assert.ok(root.id);
    const err = await refused(sio4(`${gw.url}/admin`, { transports: ['websocket'] }));
    assert.ok(err instanceof Error || typeof err === 'object', String(err));
  });

  test('namespaces = ["/", "/admin"]: /admin connects and works, /nope is refused', async () => {
    const gw = await node('[socketio]\nnamespaces = ["/", "/admin"]\n');
    for (const transports of [['websocket'], ['polling']]) {
      const admin = await connected(sio4(`${gw.url}/admin`, { transports }));
      assert.ok(admin.id, 'the /admin socket has an id');
      const r = await ack(admin, 'subscribe', `adm.${transports[0]}`);
      assert.equal(r.room, `adm.${transports[0]}`, JSON.stringify(r));
      const got = collect(admin, 'message');
      await publishJson(gw, `adm.${transports[0]}`, { ns: 'admin' });
      assert.deepEqual((await got.take(1))[0], [{ ns: 'admin' }]);

      const err = await refused(sio4(`${gw.url}/nope`, { transports }));
      assert.ok(err, 'connect_error for /nope');
      // The refusal is the namespace's: "/" on the same node still connects.
      await connected(sio4(gw.url, { transports }));
    }
  });

  test('two namespaces over one connection (multiplexed manager)', async () => {
    const gw = await node('[socketio]\nnamespaces = ["/", "/admin"]\n');
    const root = sio4(gw.url, { transports: ['websocket'] });
    const admin = root.io.socket('/admin');
    await Promise.all([connected(root), connected(admin)]);
    assert.notEqual(root.id, admin.id);
    await ack(root, 'subscribe', 'mux.room');
    await ack(admin, 'subscribe', 'mux.room');
    const g1 = collect(root, 'message');
    const g2 = collect(admin, 'message');
    await publishJson(gw, 'mux.room', 'both');
    assert.deepEqual((await g1.take(1))[0], ['both']);
    assert.deepEqual((await g2.take(1))[0], ['both']);
    const presence = await gw.control.presence({ room: 'mux.room' });
    assert.deepEqual(presence.clients.map((c) => c.client_id).sort(), [root.id, admin.id].sort());
    admin.disconnect();
  });

  test('2.x: /admin connects, /nope is refused', async () => {
    const gw = await node('[socketio]\nnamespaces = ["/", "/admin"]\n');
    const admin = await connected(sio2(`${gw.url}/admin`, { transports: ['websocket'] }));
    const r = await ack(admin, 'subscribe', 'adm2.x');
    assert.equal(r.room, 'adm2.x', JSON.stringify(r));
    const err = await refused(sio2(`${gw.url}/nope`, { transports: ['websocket'] }));
    assert.ok(err, 'an error for /nope');
  });
});
