// JWT auth (contract section 5) for socket.io clients: 4.x sends the token
// in the CONNECT packet's auth payload, 2.x in the `token` query parameter.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ack, connected, mintJwt, once, refused, sio2, sio4, useGateway } from './lib.mjs';

const SECRET = 'socketio-test-secret';
const CONFIG = `
[namespaces.team]
client_publish = true
presence = true
`;

let gw;
useGateway({ config: CONFIG, args: ['--jwt-secret', SECRET] }, (g) => (gw = g));

const past = () => Math.floor(Date.now() / 1000) - 60;

describe('auth, socket.io-client 4.x', () => {
  for (const transports of [['websocket'], ['polling']]) {
    test(`a valid token in auth connects (${transports[0]}); the user is its sub`, async () => {
      const token = mintJwt(SECRET, { sub: 'alice' });
      const s = await connected(sio4(gw.url, { transports, auth: { token } }));
      const r = await ack(s, 'subscribe', `team.${transports[0]}`);
      assert.equal(r.error, undefined, JSON.stringify(r));
      const p = await ack(s, 'presence', `team.${transports[0]}`);
      assert.deepEqual(p.clients, [{ client_id: s.id, user: 'alice' }]);
      s.disconnect();
    });

    test(`missing, badly signed, malformed and expired tokens get connect_error (${transports[0]})`, async () => {
      for (const auth of [
        undefined,
        {},
        { token: '' },
        { token: mintJwt('another-secret', { sub: 'mallory' }) },
        { token: 'not.a.jwt' },
        { token: mintJwt(SECRET, { sub: 'late', exp: past() }) },
      ]) {
        const err = await refused(sio4(gw.url, { transports, ...(auth ? { auth } : {}) }));
        assert.ok(err, `refused with ${JSON.stringify(auth)}`);
      }
    });
  }

  test('rooms and publish claims: outside them is forbidden', async () => {
    const token = mintJwt(SECRET, { sub: 'bob', rooms: ['team.*'], publish: ['team.open'] });
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token } }));
    assert.equal((await ack(s, 'subscribe', 'team.a')).room, 'team.a');
    assert.equal((await ack(s, 'subscribe', 'other.a')).error?.code, 'forbidden');
    assert.equal((await ack(s, 'publish', { room: 'team.open', data: 1 })).room, 'team.open');
    assert.equal((await ack(s, 'publish', { room: 'team.closed', data: 1 })).error?.code, 'forbidden');
  });

  test('the session is closed when the token expires', async () => {
    const token = mintJwt(SECRET, { sub: 'brief', exp: Math.floor(Date.now() / 1000) + 2 });
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token } }));
    const [reason] = await once(s, 'disconnect', 8000);
    assert.ok(reason, 'disconnected');
  });
});

describe('auth, socket.io-client 2.x', () => {
  for (const transports of [['websocket'], ['polling']]) {
    test(`a valid token in the query connects (${transports[0]})`, async () => {
      const token = mintJwt(SECRET, { sub: 'carol' });
      const s = await connected(sio2(gw.url, { transports, query: { token } }));
      const r = await ack(s, 'subscribe', `team.v2-${transports[0]}`);
      assert.equal(r.error, undefined, JSON.stringify(r));
      const p = await ack(s, 'presence', `team.v2-${transports[0]}`);
      assert.deepEqual(p.clients, [{ client_id: s.id, user: 'carol' }]);
      s.disconnect();
    });

    test(`a missing or bad token is refused (${transports[0]})`, async () => {
      for (const query of [undefined, { token: mintJwt('another-secret', { sub: 'm' }) }, { token: mintJwt(SECRET, { sub: 'x', exp: past() }) }]) {
        await refused(sio2(gw.url, { transports, ...(query ? { query } : {}) }));
      }
    });
  }
});
