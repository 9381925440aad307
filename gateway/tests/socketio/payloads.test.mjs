// What long-polling and the polling-to-WebSocket upgrade must get right:
// non-ASCII text (Engine.IO v3 payload lengths count UTF-16 code units),
// large messages, binary from 2.x clients, and order and completeness of a
// stream of publications that spans the upgrade.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ack,
  bytesOf,
  collect,
  connected,
  publishJson,
  sio2,
  sio4,
  sleep,
  useGateway,
  withTimeout,
} from './lib.mjs';

const CONFIG = `
command_rate = 0
max_message_bytes = "256KiB"

[socketio.events.file]
room = "p.files"
as = "file"

[socketio.events.say]
room = "p.chat"
as = "said"
`;

const TEXTS = ['héllo', '你好，世界', 'emoji 😀🎉 and 𝄞', 'mixed ü 😀 你 \u0000 nul', '"quotes" \\ and \n newline', '12:34:5:'];

let gw;
useGateway({ config: CONFIG }, (g) => (gw = g));

const clients = {
  '4.x polling': () => sio4(gw.url, { transports: ['polling'] }),
  '4.x websocket': () => sio4(gw.url, { transports: ['websocket'] }),
  '2.x polling': () => sio2(gw.url, { transports: ['polling'] }),
  '2.x polling, base64': () => sio2(gw.url, { transports: ['polling'], forceBase64: true }),
  '2.x websocket': () => sio2(gw.url, { transports: ['websocket'] }),
};

describe('payloads', () => {
  for (const [name, make] of Object.entries(clients)) {
    test(`non-ASCII text both ways (${name})`, async () => {
      const a = await connected(make());
      const b = await connected(make());
      await ack(b, 'subscribe', 'p.chat');
      const got = collect(b, 'said');
      // Sent together, so polling carries several in one payload.
      for (const t of TEXTS) a.emit('say', t);
      const items = await got.take(TEXTS.length);
      assert.deepEqual(
        items.map((x) => x[0]),
        TEXTS,
      );
      // And from gRPC, several per payload again.
      const viaGrpc = collect(b, 'g');
      await Promise.all(TEXTS.map((t) => publishJson(gw, 'p.chat', { t }, 'g')));
      const g = (await viaGrpc.take(TEXTS.length)).map((x) => x[0].t);
      assert.deepEqual([...g].sort(), [...TEXTS].sort());
      a.disconnect();
      b.disconnect();
    });

    test(`a 100 kB message both ways (${name})`, async () => {
      const a = await connected(make());
      await ack(a, 'subscribe', 'p.big');
      const got = collect(a, 'big');
      const text = 'x😀y'.repeat(25000);
      const r = await ack(a, 'publish', { room: 'p.big', event: 'big', data: { text } });
      assert.equal(r.error, undefined, JSON.stringify(r).slice(0, 200));
      const [args] = await got.take(1, 10000);
      assert.equal(args[0].text.length, text.length);
      assert.equal(args[0].text, text);
      a.disconnect();
    });
  }

  for (const name of ['2.x polling', '2.x polling, base64', '2.x websocket']) {
    test(`binary emitted by a 2.x client reaches others as binary (${name})`, async () => {
      const a = await connected(clients[name]());
      const b = await connected(sio4(gw.url, { transports: ['websocket'] }));
      const c = await connected(clients[name]());
      await ack(b, 'subscribe', 'p.files');
      await ack(c, 'subscribe', 'p.files');
      const gb = collect(b, 'file');
      const gc = collect(c, 'file');
      const bytes = Buffer.from([0, 255, 1, 254, 10, 13, 0x30, 0x3a]);
      a.emit('file', bytes);
      for (const g of [gb, gc]) {
        const [args] = await g.take(1);
        assert.deepEqual([...(bytesOf(args[0]) ?? [])], [...bytes], `binary, got ${JSON.stringify(args)}`);
      }
    });
  }

  for (const [label, make] of [
    ['4.x', (o) => sio4(gw.url, o)],
    ['2.x', (o) => sio2(gw.url, o)],
  ]) {
    test(`publications streaming across the upgrade arrive once each, in order (${label})`, async () => {
      const N = 300;
      const room = `p.upgrade-${label}`;
      // Up to the upgrade the socket is on polling.
      const s = make({ autoConnect: false });
      const got = collect(s, 'n');
      let publishing = null;
      s.once('connect', () => {
        publishing = (async () => {
          await ack(s, 'subscribe', room);
          for (let i = 0; i < N; i++) {
            await publishJson(gw, room, i, 'n');
            if (i % 20 === 0) await sleep(5);
          }
        })();
      });
      s.connect();
      // The engine exists once connect() returns; listen before it can upgrade.
      const upgraded = new Promise((ok) => s.io.engine.once('upgrade', ok));
      await connected(s);
      await withTimeout(upgraded, 5000, 'the upgrade to websocket');
      await withTimeout(publishing, 20000, 'the publications');
      await got.take(N, 20000);
      await sleep(200);
      const values = got.values;
      assert.equal(values.length, N, 'no duplicates');
      assert.deepEqual(values, Array.from({ length: N }, (_, i) => i));
      assert.equal(s.io.engine.transport.name, 'websocket');
      s.disconnect();
    });
  }
});
