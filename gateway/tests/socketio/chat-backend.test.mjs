// The example backend of docs/backend.md (examples/chat-backend), run as its
// own process against a node configured by its roomcast.toml: the socket.io
// chat with names checked at connect, messages checked and stored, history
// on request.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO_DIR, ack, collect, connected, freePort, refused, sio4, until, useGateway } from './lib.mjs';

const EXAMPLE = join(REPO_DIR, 'examples/chat-backend');
const backendPort = await freePort();
const grpcPort = await freePort();
const config = readFileSync(join(EXAMPLE, 'roomcast.toml'), 'utf8').replace(
  'url = "http://127.0.0.1:50052"',
  `url = "http://127.0.0.1:${backendPort}"`,
);

let gw;
useGateway({ config, grpcPort }, (g) => (gw = g));

let backend;
let backendOutput = '';
before(async () => {
  backend = spawn(
    process.execPath,
    [join(EXAMPLE, 'backend.mjs'), '--listen', `127.0.0.1:${backendPort}`, '--control', `127.0.0.1:${grpcPort}`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  backend.stdout.on('data', (c) => (backendOutput += c));
  backend.stderr.on('data', (c) => (backendOutput += c));
  // The node is ready once its backend answers.
  await until(async () => (await fetch(`${gw.url}/readyz`)).ok, { ms: 20000, what: `the example backend\n${backendOutput}` });
});
after(() => backend?.kill());

describe('the example chat backend', () => {
  test('a name is required to join', async () => {
    const err = await refused(sio4(gw.url, { transports: ['websocket'], auth: { name: 'no spaces allowed' } }));
    assert.match(err.message, /pick a name/);
  });

  test('messages are checked, stored and reach everyone; history answers', async () => {
    const alice = await connected(sio4(gw.url, { transports: ['websocket'], auth: { name: 'alice' } }));
    const bob = await connected(sio4(gw.url, { transports: ['polling'], auth: { name: 'bob' } }));
    const heard = collect(bob, 'chat message');
    const r = await ack(alice, 'chat message', '  hello bob  ');
    assert.equal(r.ok, true, JSON.stringify(r));
    const [[m]] = await heard.take(1, 5000);
    assert.equal(m.user, 'alice');
    assert.equal(m.text, 'hello bob');
    assert.deepEqual(await ack(alice, 'chat message', '   '), {
      error: { code: 'bad_request', message: 'a message is not empty' },
    });
    assert.equal((await ack(alice, 'chat message', 'x'.repeat(501))).error.code, 'bad_request');
    const history = await ack(bob, 'history');
    assert.deepEqual(
      history.map((h) => [h.user, h.text]),
      [['alice', 'hello bob']],
      'only the accepted message was stored',
    );
    // Clients cannot publish to the chat themselves: only through the backend.
    const direct = await ack(alice, 'publish', { room: 'chat.lobby', event: 'chat message', data: { text: 'x' } });
    assert.equal(direct.error.code, 'forbidden');
    const left = collect(alice, 'user left');
    bob.disconnect();
    await until(() => left.items.length > 0, { what: 'user left' });
    assert.deepEqual(left.items[0], [{ user: 'bob' }]);
    alice.disconnect();
  });
});
