// Backend hooks (contract section 8) seen from socket.io-client: a small
// roomcast.v1.Backend served by @grpc/grpc-js in this process decides
// CONNECTs, answers events that are neither built in nor routed (the answer
// is the ack) and hears when sockets leave.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import {
  REPO_DIR,
  ack,
  collect,
  connected,
  emitAck,
  freePort,
  publishJson,
  refused,
  sio2,
  sio4,
  sleep,
  until,
  useGateway,
} from './lib.mjs';

const SLOW_MS = 3000;

/** What the backend saw. */
const seen = { connects: [], rpcs: [], disconnected: [], publishes: [] };

function hookError(code, message) {
  return { error: { code, message } };
}

const backendImpl = {
  Connect(call, done) {
    const r = call.request;
    seen.connects.push(r);
    const auth = r.auth.length ? JSON.parse(r.auth.toString()) : {};
    if (r.token === 'deny') return done(null, { deny: { code: 4003, reason: 'go away' } });
    if (r.token === 'slow') return setTimeout(() => done(null, {}), SLOW_MS);
    done(null, {
      user: `user-${r.token || auth.name || 'anon'}`,
      rooms: ['chat.welcome'],
      info: Buffer.from(JSON.stringify({ seat: r.token })),
    });
  },
  Subscribe(call, done) {
    if (call.request.room === 'chat.secret') return done(null, hookError('forbidden', 'members only'));
    done(null, {});
  },
  Publish(call, done) {
    const r = call.request;
    seen.publishes.push(r);
    const text = JSON.parse(r.data.toString());
    if (typeof text === 'string' && text.includes('spam')) return done(null, hookError('bad_request', 'no spam'));
    const replaced = { text: String(text).trim(), by: r.caller.user };
    done(null, { replace: { data: Buffer.from(JSON.stringify(replaced)), binary: false } });
  },
  Rpc(call, done) {
    const r = call.request;
    seen.rpcs.push(r);
    if (r.method === 'slow') return setTimeout(() => done(null, {}), SLOW_MS);
    if (r.method === 'missing') return done(null, hookError('not_found', 'no such thing'));
    if (r.binary) return done(null, { data: Buffer.from(r.data).reverse(), binary: true });
    const answer = {
      method: r.method,
      data: JSON.parse(r.data.toString()),
      user: r.caller.user,
      client_id: r.caller.client_id,
      protocol: r.caller.protocol,
    };
    done(null, { data: Buffer.from(JSON.stringify(answer)) });
  },
  Disconnected(call, done) {
    seen.disconnected.push(call.request);
    done(null, {});
  },
};

const def = protoLoader.loadSync('roomcast/v1/backend.proto', {
  includeDirs: [join(REPO_DIR, 'proto')],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Backend } = grpc.loadPackageDefinition(def).roomcast.v1;
const backendPort = await freePort();
const server = new grpc.Server();
server.addService(Backend.service, backendImpl);
await new Promise((ok, fail) =>
  server.bindAsync(`127.0.0.1:${backendPort}`, grpc.ServerCredentials.createInsecure(), (err) =>
    err ? fail(err) : ok(),
  ),
);

const CONFIG = `
[backend]
connect = true
disconnected = true

[namespaces.chat]
subscribe_hook = true
publish_hook = true
presence = true

[namespaces.default]
rpc = true

[socketio.events.channel]
room = "chat.routed"
`;

let gw;
useGateway(
  { config: CONFIG, args: ['--backend-url', `http://127.0.0.1:${backendPort}`, '--backend-timeout', '500ms'] },
  (g) => (gw = g),
);
after(() => server.forceShutdown());

describe('backend hooks, socket.io-client 4.x', () => {
  for (const transports of [['websocket'], ['polling']]) {
    const t = transports[0];
    test(`Connect names the user; an unhandled event is an Rpc whose answer is the ack (${t})`, async () => {
      const s = await connected(sio4(gw.url, { transports, auth: { token: `tok-${t}`, extra: 1 } }));
      const reply = await ack(s, 'chat message', { text: 'hello' });
      assert.deepEqual(reply, {
        method: 'chat message',
        data: { text: 'hello' },
        user: `user-tok-${t}`,
        client_id: s.id,
        protocol: 'socket.io',
      });
      const c = seen.connects.find((r) => r.token === `tok-${t}`);
      assert.equal(c.caller.transport, t);
      assert.equal(c.socketio_namespace, '/');
      assert.deepEqual(JSON.parse(c.auth.toString()), { token: `tok-${t}`, extra: 1 });
      assert.match(c.caller.remote_addr, /^127\.0\.0\.1:\d+$/);
      s.disconnect();
    });
  }

  test('the rooms Connect names are joined at once', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'rooms' } }));
    const got = collect(s, 'news');
    await until(async () => {
      await publishJson(gw, 'chat.welcome', { n: 1 }, 'news');
      return got.items.length > 0;
    }, { what: 'a publication to chat.welcome' });
    assert.deepEqual(got.items[0], [{ n: 1 }]);
    const p = await ack(s, 'presence', 'chat.welcome');
    assert.deepEqual(p.clients, [{ client_id: s.id, user: 'user-rooms', info: { seat: 'rooms' } }]);
    s.disconnect();
  });

  test('a denied CONNECT gets connect_error with the backend reason; a slow backend, internal', async () => {
    const err = await refused(sio4(gw.url, { transports: ['websocket'], auth: { token: 'deny' } }));
    assert.equal(err.message, 'go away');
    const started = Date.now();
    const slow = await refused(sio4(gw.url, { transports: ['polling'], auth: { token: 'slow' } }));
    assert.match(slow.message, /^internal: /);
    assert.ok(Date.now() - started < SLOW_MS, 'the timeout ended it, not the backend');
  });

  test('Rpc errors and timeouts come back as ack errors', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'errs' } }));
    assert.deepEqual(await ack(s, 'missing', 1), { error: { code: 'not_found', message: 'no such thing' } });
    const slow = await ack(s, 'slow', 1);
    assert.equal(slow.error.code, 'internal', JSON.stringify(slow));
    s.disconnect();
  });

  test('binary arguments reach the backend as bytes and binary answers come back as binary', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'bin' } }));
    const reply = await ack(s, 'bytes', Buffer.from([1, 2, 3]));
    assert.ok(Buffer.isBuffer(reply), `a Buffer, got ${typeof reply}`);
    assert.deepEqual([...reply], [3, 2, 1]);
    s.disconnect();
  });

  test('an unacknowledged event still reaches the backend', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'fire' } }));
    s.emit('fire and forget', { n: 7 });
    await until(() => seen.rpcs.find((r) => r.method === 'fire and forget'), { what: 'the Rpc' });
    s.disconnect();
  });

  test('routed and built-in events do not go to the backend; Subscribe and Publish hooks decide them', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'pub' } }));
    const before = seen.rpcs.length;
    assert.equal((await ack(s, 'subscribe', 'chat.room')).room, 'chat.room');
    assert.deepEqual(await ack(s, 'subscribe', 'chat.secret'), {
      error: { code: 'forbidden', message: 'members only' },
    });
    const said = collect(s, 'say');
    const r = await ack(s, 'publish', { room: 'chat.room', event: 'say', data: '  padded  ' });
    assert.equal(r.room, 'chat.room', JSON.stringify(r));
    const [[msg]] = await said.take(1, 5000);
    assert.deepEqual(msg, { text: 'padded', by: 'user-pub' }, 'the backend replaced the data');
    assert.deepEqual(await ack(s, 'publish', { room: 'chat.room', data: 'spam!' }), {
      error: { code: 'bad_request', message: 'no spam' },
    });
    // A routed event is a publication: the Publish hook sees it.
    assert.equal((await ack(s, 'subscribe', 'chat.routed')).room, 'chat.routed');
    const routed = collect(s, 'channel');
    s.emit('channel', 'via route');
    const [[viaRoute]] = await routed.take(1, 5000);
    assert.deepEqual(viaRoute, { text: 'via route', by: 'user-pub' });
    assert.equal(seen.rpcs.length, before, 'no Rpc for built-in or routed events');
    s.disconnect();
  });

  test('Disconnected tells the backend who left and why', async () => {
    const s = await connected(sio4(gw.url, { transports: ['websocket'], auth: { token: 'leaver' } }));
    const id = s.id;
    s.disconnect();
    const d = await until(() => seen.disconnected.find((r) => r.caller.client_id === id), {
      what: 'Disconnected',
    });
    assert.equal(d.caller.user, 'user-leaver');
    assert.equal(d.reason, 'normal');
  });
});

describe('backend hooks, socket.io-client 2.x', () => {
  test('a 2.x emit with an ack reaches the backend and gets its answer', async () => {
    const s = await connected(sio2(gw.url, { transports: ['websocket'], query: { token: 'old' } }));
    const [reply] = await emitAck(s, 'chat message', 'hi from 2.x');
    assert.equal(reply.data, 'hi from 2.x');
    assert.equal(reply.user, 'user-old');
    s.disconnect();
    await sleep(10);
  });
});
