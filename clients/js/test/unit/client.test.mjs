// The client's state machine, driven through a scripted socket and a manual
// clock (see fakes.mjs). Real sockets and a real gateway: ../e2e.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { RoomcastClient, CONNECTING, OPEN, CLOSING, CLOSED, PROTOCOL } from '../../roomcast.js';
import { FakeClock, FakeWebSocket, flush } from './fakes.mjs';

let clock;

function client(options = {}) {
  return new RoomcastClient('ws://gateway.test/ws', {
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.nowFn,
    random: () => 0.5,
    minDelay: 100,
    maxDelay: 10000,
    factor: 2,
    pingInterval: 1000,
    pingTimeout: 500,
    requestTimeout: 3000,
    connectTimeout: 2000,
    stableAfter: 5000,
    ...options,
  });
}

beforeEach(() => {
  clock = new FakeClock();
  FakeWebSocket.reset();
});

test('walks CONNECTING -> OPEN on `connected`, offering the JSON subprotocol', () => {
  const c = client({ clientName: 'unit', autoConnect: false });
  const states = [];
  c.on('state', (s, prev) => states.push([prev, s]));
  c.connect();
  assert.equal(c.readyState, CONNECTING);
  const ws = FakeWebSocket.last();
  assert.equal(ws.url, 'ws://gateway.test/ws');
  assert.deepEqual(ws.protocols, [PROTOCOL]);
  ws.open();
  assert.equal(c.readyState, CONNECTING, 'not OPEN before the server answers connect');
  const hello = ws.lastSent('connect');
  assert.equal(hello.client, 'unit');
  assert.equal(typeof hello.id, 'number');
  let info;
  c.on('connected', (r) => (info = r));
  ws.receive({ op: 'connected', id: hello.id, client_id: 'abc', node: 'n1', ping_interval_ms: 25000 });
  assert.equal(c.readyState, OPEN);
  assert.equal(info.client_id, 'abc');
  assert.equal(c.session.node, 'n1');
  assert.deepEqual(states, [[CLOSED, CONNECTING], [CONNECTING, OPEN]]);
});

test('commands issued before OPEN are buffered and sent in order once connected', async () => {
  const c = client();
  const p = c.publish('chat.lobby', { text: 'early' }, { event: 'msg' });
  c.send({ op: 'publish', room: 'chat.lobby', data: 2 });
  const e = c.echo('hi');
  const ws = FakeWebSocket.last();
  ws.open();
  assert.deepEqual(ws.sent.map((f) => f.op), ['connect'], 'held back until connected');
  ws.accept();
  const ops = ws.sent.map((f) => f.op);
  assert.deepEqual(ops, ['connect', 'connect', 'publish', 'publish', 'echo']);
  const pub = ws.sent[2];
  assert.deepEqual({ room: pub.room, data: pub.data, event: pub.event }, { room: 'chat.lobby', data: { text: 'early' }, event: 'msg' });
  assert.equal(ws.sent[3].id, undefined, 'send() carries no id');
  ws.receive({ op: 'published', id: pub.id, room: 'chat.lobby', offset: 4 });
  ws.receive({ op: 'echo', id: ws.sent[4].id, data: 'hi' });
  assert.deepEqual(await p, { op: 'published', id: pub.id, room: 'chat.lobby', offset: 4 });
  assert.equal(await e, 'hi');
});

test('publish rejects with the server error; presence resolves with the clients', async () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  const p = c.publish('quotes.AAPL', 1);
  const pr = c.presence('chat.lobby');
  const pubId = ws.lastSent('publish').id;
  ws.receive({ op: 'error', id: pubId, code: 'forbidden', message: 'backend only' });
  ws.receive({ op: 'presence', id: ws.lastSent('presence').id, room: 'chat.lobby', clients: [{ client_id: 'a', user: 'ann' }] });
  await assert.rejects(p, { name: 'RoomcastError', code: 'forbidden', message: 'backend only' });
  assert.deepEqual(await pr, [{ client_id: 'a', user: 'ann' }]);
});

test('rpc resolves with the backend answer and rejects with its error', async () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  const ok = c.rpc('chat.history', { n: 2 });
  const sent = ws.lastSent('rpc');
  assert.equal(sent.method, 'chat.history');
  assert.deepEqual(sent.data, { n: 2 });
  ws.receive({ op: 'rpc', id: sent.id, data: [{ text: 'hi' }] });
  assert.deepEqual(await ok, [{ text: 'hi' }]);
  const bad = c.rpc('nope');
  ws.receive({ op: 'error', id: ws.lastSent('rpc').id, code: 'not_found', message: 'no method' });
  await assert.rejects(bad, { name: 'RoomcastError', code: 'not_found' });
});

test('a request without a reply times out', async () => {
  const c = client({ pingInterval: 0 });
  FakeWebSocket.last().accept();
  const p = c.echo(1);
  clock.advance(3000);
  await assert.rejects(p, { code: 'timeout' });
});

test('subscriptions route messages, join and leave by room', async () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  const sub = c.subscribe('chat.lobby');
  assert.equal(c.subscribe('chat.lobby'), sub, 'one subscription per room');
  const req = ws.lastSent('subscribe');
  assert.equal(req.room, 'chat.lobby');
  assert.equal(req.since, undefined);
  const seen = [];
  sub.on('subscribed', (r) => seen.push(['subscribed', r.resubscribed]));
  sub.on('message', (m) => seen.push(['message', m.data]));
  sub.on('join', (m) => seen.push(['join', m.user]));
  sub.on('leave', (m) => seen.push(['leave', m.user]));
  const all = [];
  c.on('message', (m) => all.push(m.room));
  ws.receive({ op: 'subscribed', id: req.id, room: 'chat.lobby', epoch: 'E', offset: 3, recovered: false });
  assert.equal(sub.state, 'subscribed');
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'a', offset: 4 });
  ws.receive({ op: 'message', room: 'other', data: 'x' });
  ws.receive({ op: 'join', room: 'chat.lobby', client_id: 'q', user: 'bob' });
  ws.receive({ op: 'leave', room: 'chat.lobby', client_id: 'q', user: 'bob' });
  assert.deepEqual(seen, [['subscribed', false], ['message', 'a'], ['join', 'bob'], ['leave', 'bob']]);
  assert.deepEqual(all, ['chat.lobby', 'other']);
  assert.deepEqual({ epoch: sub.epoch, offset: sub.offset }, { epoch: 'E', offset: 4 });

  const done = sub.unsubscribe();
  const un = ws.lastSent('unsubscribe');
  assert.equal(un.room, 'chat.lobby');
  ws.receive({ op: 'unsubscribed', id: un.id, room: 'chat.lobby' });
  await done;
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'late', offset: 5 });
  assert.equal(seen.length, 4);
  assert.equal(c.subscriptions.size, 0);
});

test('a refused subscription emits error and is dropped', async () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  const sub = c.subscribe('secret.room');
  let err;
  sub.on('error', (e) => (err = e));
  ws.receive({ op: 'error', id: ws.lastSent('subscribe').id, code: 'forbidden', message: 'nope' });
  await flush();
  assert.equal(err.code, 'forbidden');
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(c.subscriptions.has('secret.room'), false);
});

test('after a lost connection it backs off, reconnects and resubscribes with since', async () => {
  const c = client();
  let ws = FakeWebSocket.last();
  ws.accept();
  const sub = c.subscribe('chat.lobby');
  ws.receive({ op: 'subscribed', id: ws.lastSent('subscribe').id, room: 'chat.lobby', epoch: 'E', offset: 10, recovered: false });
  await flush();
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'm11', offset: 11 });

  const events = [];
  c.on('disconnected', (d) => events.push(d));
  const p = c.echo('in flight');
  ws.serverClose(1006, '', false);
  await assert.rejects(p, { code: 'disconnected' });
  assert.equal(c.readyState, CONNECTING);
  assert.equal(events[0].willReconnect, true);
  assert.equal(events[0].delay, 50, 'full jitter of minDelay with random 0.5');
  assert.equal(FakeWebSocket.instances.length, 1);
  clock.advance(49);
  assert.equal(FakeWebSocket.instances.length, 1);
  clock.advance(1);
  assert.equal(FakeWebSocket.instances.length, 2);

  ws = FakeWebSocket.last();
  ws.accept();
  const again = ws.lastSent('subscribe');
  assert.deepEqual(again.since, { epoch: 'E', offset: 11 });
  const got = [];
  let sawGap = false;
  sub.on('message', (m) => got.push(m.offset));
  sub.on('gap', () => (sawGap = true));
  ws.receive({ op: 'subscribed', id: again.id, room: 'chat.lobby', epoch: 'E', offset: 13, recovered: true });
  await flush();
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'm11', offset: 11 }); // overlap, dropped
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'm12', offset: 12 });
  ws.receive({ op: 'message', room: 'chat.lobby', data: 'm13', offset: 13 });
  assert.deepEqual(got, [12, 13]);
  assert.equal(sawGap, false);
});

test('an unrecovered resubscribe emits gap', async () => {
  const c = client();
  let ws = FakeWebSocket.last();
  ws.accept();
  const sub = c.subscribe('chat.lobby');
  ws.receive({ op: 'subscribed', id: ws.lastSent('subscribe').id, room: 'chat.lobby', epoch: 'E', offset: 5, recovered: false });
  await flush();
  let gap;
  sub.on('gap', (g) => (gap = g));
  ws.serverClose(4009, 'ping timeout');
  clock.advance(100);
  ws = FakeWebSocket.last();
  ws.accept();
  const again = ws.lastSent('subscribe');
  ws.receive({ op: 'subscribed', id: again.id, room: 'chat.lobby', epoch: 'F', offset: 1, recovered: false });
  await flush();
  assert.deepEqual(gap, { room: 'chat.lobby', since: { epoch: 'E', offset: 5 }, epoch: 'F', offset: 1 });
  assert.deepEqual({ epoch: sub.epoch, offset: sub.offset }, { epoch: 'F', offset: 1 });
});

test('backoff grows across failed attempts and resets after a stable connection', () => {
  const c = client();
  const delays = [];
  c.on('reconnecting', (r) => delays.push(r.delay));
  for (let i = 0; i < 5; i++) {
    FakeWebSocket.last().serverClose(1006, '', false);
    clock.advance(delays.at(-1));
  }
  assert.deepEqual(delays, [50, 100, 200, 400, 800]);
  const ws = FakeWebSocket.last();
  ws.accept();
  ws.receive({ op: 'pong' }); // keep the heartbeat happy
  for (let t = 0; t < 6000; t += 400) {
    clock.advance(400);
    const ping = FakeWebSocket.last().lastSent('ping');
    if (ping) ws.receive({ op: 'pong', id: ping.id });
  }
  ws.serverClose(1006, '', false);
  assert.equal(delays.at(-1), 50, 'a connection that lived past stableAfter resets the backoff');
});

test('4003 and 4001 stop reconnecting; buffered requests are rejected', async () => {
  for (const code of [4003, 4001]) {
    FakeWebSocket.reset();
    const c = client();
    FakeWebSocket.last().accept();
    FakeWebSocket.last().serverClose(code, 'bye');
    assert.equal(c.readyState, CLOSED, String(code));
    const p = c.publish('chat.lobby', 1);
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1, `no reconnect after ${code}`);
    await assert.rejects(p, { code: 'timeout' });
  }
});

test('4001 with getToken: one retry with a fresh token, then stop', async () => {
  let n = 0;
  const c = client({ getToken: async () => `tok${++n}` });
  await flush();
  let ws = FakeWebSocket.last();
  ws.accept();
  assert.equal(ws.lastSent('connect').token, 'tok1');
  ws.serverClose(4001, 'token expired');
  assert.equal(c.readyState, CONNECTING);
  clock.advance(0);
  await flush();
  ws = FakeWebSocket.last();
  assert.equal(FakeWebSocket.instances.length, 2);
  ws.open();
  assert.equal(ws.lastSent('connect').token, 'tok2');
  ws.serverClose(4001, 'bad token');
  assert.equal(c.readyState, CLOSED, 'a second 4001 before any success stops');
  clock.advance(60000);
  await flush();
  assert.equal(FakeWebSocket.instances.length, 2);
});

test('1001 reconnects quickly, 1013 backs off harder', () => {
  const c = client();
  const delays = [];
  c.on('reconnecting', (r) => delays.push(r.delay));
  FakeWebSocket.last().serverClose(1001, 'draining');
  clock.advance(delays[0]);
  assert.equal(FakeWebSocket.instances.length, 2);
  FakeWebSocket.last().serverClose(1013, 'overloaded');
  assert.ok(delays[0] <= 100, `draining delay ${delays[0]}`);
  assert.equal(delays[1], 1200, 'factor^(attempt+3) with equal jitter');
  assert.equal(c.readyState, CONNECTING);
});

test('heartbeat measures rtt and abandons a silent connection without a close event', () => {
  const c = client();
  let ws = FakeWebSocket.last();
  ws.accept();
  const rtts = [];
  c.on('rtt', (r) => rtts.push(r));
  clock.advance(1000);
  const ping = ws.lastSent('ping');
  assert.ok(ping, 'ping sent after pingInterval');
  clock.advance(30);
  ws.receive({ op: 'pong', id: ping.id });
  return flush().then(() => {
    assert.deepEqual(rtts, [30]);
    assert.equal(c.rtt, 30);
    // Now the network silently dies: the socket never reports close.
    clock.advance(1000);
    assert.equal(c.readyState, OPEN);
    clock.advance(500);
    assert.equal(c.readyState, CONNECTING, 'declared dead after pingTimeout');
    assert.equal(ws.closedWith.code, 4000);
    clock.advance(100);
    assert.equal(FakeWebSocket.instances.length, 2, 'reconnected');
    ws.serverClose(1006, '', false); // a late close from the dead socket changes nothing
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

test('any frame counts as a sign of life', () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  clock.advance(1000);
  ws.receive({ op: 'message', room: 'clock', data: {} });
  clock.advance(900);
  assert.equal(c.readyState, OPEN);
});

test('a connect that never opens is given up after connectTimeout', () => {
  const c = client();
  clock.advance(2000);
  assert.equal(c.readyState, CONNECTING);
  clock.advance(100);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test('close() goes CLOSING -> CLOSED and stops reconnecting; connect() starts again', async () => {
  const c = client();
  const ws = FakeWebSocket.last();
  ws.accept();
  const states = [];
  c.on('state', (s) => states.push(s));
  const p = c.echo('x');
  c.close();
  await assert.rejects(p, { code: 'closed' });
  assert.equal(c.readyState, CLOSING);
  assert.equal(ws.closedWith.code, 1000);
  ws.serverClose(1000, '', true);
  assert.equal(c.readyState, CLOSED);
  assert.deepEqual(states, [CLOSING, CLOSED]);
  clock.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
  c.connect();
  assert.equal(c.readyState, CONNECTING);
  FakeWebSocket.last().accept();
  assert.equal(c.readyState, OPEN);
});

test('close() during the backoff wait is immediate', () => {
  const c = client();
  FakeWebSocket.last().serverClose(1006, '', false);
  c.close();
  assert.equal(c.readyState, CLOSED);
  clock.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test('autoConnect: false waits for connect() and keeps what was queued', () => {
  const c = client({ autoConnect: false });
  assert.equal(c.readyState, CLOSED);
  c.subscribe('clock');
  c.send({ op: 'publish', room: 'danmaku.main', data: 'x' });
  assert.equal(FakeWebSocket.instances.length, 0);
  c.connect();
  const ws = FakeWebSocket.last();
  ws.accept();
  assert.deepEqual(ws.sent.map((f) => f.op), ['connect', 'subscribe', 'publish']);
});
