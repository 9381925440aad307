// Binary both ways: a gRPC publication with `binary` set reaches socket.io
// clients as binary, and binary a socket.io client emits (socket.io sends it
// as attachments) is published as a binary publication.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ack, bytesOf, collect, connected, sio2, sio4, useGateway } from './lib.mjs';

const CONFIG = `
[socketio.events.file]
room = "bin.files"
as = "file"

[namespaces.bin]
client_publish = true
history_size = 50
history_ttl = "5m"
`;

const BYTES = Buffer.from([0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0x22, 0x5c]);

let gw;
useGateway({ config: CONFIG }, (g) => (gw = g));

function assertBinary(args, expected) {
  assert.equal(args.length, 1, `one argument, got ${args.length}`);
  const got = bytesOf(args[0]);
  assert.ok(got, `a binary argument, got ${typeof args[0]}: ${JSON.stringify(args[0])}`);
  assert.deepEqual([...got], [...expected]);
}

describe('binary', () => {
  for (const transport of ['websocket', 'polling']) {
    test(`gRPC Publish with binary: true arrives as binary (4.x, ${transport})`, async () => {
      const a = await connected(sio4(gw.url, { transports: [transport] }));
      await ack(a, 'subscribe', `bin.grpc-${transport}`);
      const got = collect(a, 'blob');
      await gw.control.publish({ room: `bin.grpc-${transport}`, event: 'blob', data: BYTES, binary: true });
      assertBinary((await got.take(1))[0], BYTES);
      // A JSON publication after it is still JSON.
      const json = collect(a, 'text');
      await gw.control.publish({ room: `bin.grpc-${transport}`, event: 'text', data: Buffer.from('{"a":[1,2]}') });
      assert.deepEqual((await json.take(1))[0], [{ a: [1, 2] }]);
    });

    test(`gRPC Publish with binary: true arrives as binary (2.x, ${transport})`, async () => {
      const a = await connected(sio2(gw.url, { transports: [transport] }));
      await ack(a, 'subscribe', `bin.grpc2-${transport}`);
      const got = collect(a, 'blob');
      await gw.control.publish({ room: `bin.grpc2-${transport}`, event: 'blob', data: BYTES, binary: true });
      assertBinary((await got.take(1))[0], BYTES);
    });
  }

  test('a routed emit of a Buffer reaches a socket.io subscriber as binary', async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio4(gw.url, { transports: ['polling'] }));
    await ack(b, 'subscribe', 'bin.files');
    const got = collect(b, 'file');
    a.emit('file', BYTES);
    assertBinary((await got.take(1))[0], BYTES);
    const hist = await gw.control.history({ room: 'bin.files', limit: 0 });
    const last = hist.publications.at(-1);
    assert.equal(last.binary, true, 'kept as a binary publication');
    assert.equal(last.event, 'file');
    assert.deepEqual([...last.data], [...BYTES]);
  });

  test('the built-in publish with a Buffer as data is a binary publication', async () => {
    const a = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const b = await connected(sio2(gw.url, { transports: ['websocket'] }));
    await ack(b, 'subscribe', 'bin.pub');
    const got = collect(b, 'raw');
    const r = await ack(a, 'publish', { room: 'bin.pub', event: 'raw', data: BYTES });
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.room, 'bin.pub');
    assertBinary((await got.take(1))[0], BYTES);
    const hist = await gw.control.history({ room: 'bin.pub', limit: 0 });
    assert.equal(hist.publications.at(-1).binary, true);
    assert.deepEqual([...hist.publications.at(-1).data], [...BYTES]);
  });
});
