// The pure pieces: backoff, close-code policy, reply matching, positions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffDelay,
  closePolicy,
  reconnectDelay,
  PendingReplies,
  Position,
  RoomcastError,
  Emitter,
} from '../../roomcast.js';

const opts = { minDelay: 100, maxDelay: 5000, factor: 2 };

test('backoff grows exponentially up to maxDelay', () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, opts, top), 99);
  assert.equal(backoffDelay(1, opts, top), 199);
  assert.equal(backoffDelay(3, opts, top), 799);
  assert.equal(backoffDelay(10, opts, top), 4999);
  assert.equal(backoffDelay(1000, opts, top), 4999);
});

test('backoff uses full jitter: anywhere from zero to the cap', () => {
  assert.equal(backoffDelay(5, opts, () => 0), 0);
  assert.equal(backoffDelay(5, opts, () => 0.5), 1600);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(i % 12, opts);
    assert.ok(d >= 0 && d < 5000, `delay ${d} out of range`);
  }
});

test('close codes map to the contract policy', () => {
  assert.deepEqual(closePolicy(4001), { reconnect: false, mode: 'stop' });
  assert.deepEqual(closePolicy(4003), { reconnect: false, mode: 'stop' });
  assert.deepEqual(closePolicy(1008), { reconnect: false, mode: 'stop' });
  assert.equal(closePolicy(1001).mode, 'fast');
  assert.equal(closePolicy(1013).mode, 'slow');
  for (const code of [1000, 1006, 1011, 4008, 4009]) {
    assert.deepEqual(closePolicy(code), { reconnect: true, mode: 'normal' }, String(code));
  }
});

test('reconnect delay per close code', () => {
  const half = () => 0.5;
  assert.equal(reconnectDelay(4001, 0, opts, half), null);
  assert.equal(reconnectDelay(4003, 3, opts, half), null);
  // Draining: quick, whatever the attempt count.
  assert.ok(reconnectDelay(1001, 9, opts, half) <= 100);
  // Overloaded: three steps further and at least half of that cap.
  assert.equal(reconnectDelay(1013, 0, opts, () => 0), 400);
  assert.equal(reconnectDelay(1013, 0, opts, () => 0.999999), 799);
  assert.ok(reconnectDelay(1013, 0, opts, half) > reconnectDelay(1006, 0, opts, half));
  assert.equal(reconnectDelay(1013, 20, opts, () => 0), 2500);
  // Ordinary losses: the plain backoff.
  assert.equal(reconnectDelay(4009, 2, opts, half), backoffDelay(2, opts, half));
  assert.equal(reconnectDelay(1006, 2, opts, half), 200);
});

test('replies are matched by id; errors reject with their code', async () => {
  const p = new PendingReplies();
  const a = p.nextId();
  const b = p.nextId();
  assert.notEqual(a, b);
  const pa = new Promise((resolve, reject) => p.add(a, { resolve, reject }));
  const pb = new Promise((resolve, reject) => p.add(b, { resolve, reject }));
  assert.equal(p.size, 2);
  assert.equal(p.settle({ op: 'pong', id: 999 }), false);
  assert.equal(p.settle({ op: 'message', room: 'x' }), false);
  assert.equal(p.settle({ op: 'error', id: b, code: 'forbidden', message: 'no' }), true);
  assert.equal(p.settle({ op: 'published', id: a, room: 'r', offset: 3 }), true);
  assert.equal(p.settle({ op: 'published', id: a }), false, 'settled only once');
  assert.deepEqual(await pa, { op: 'published', id: a, room: 'r', offset: 3 });
  await assert.rejects(pb, (err) => err instanceof RoomcastError && err.code === 'forbidden' && err.message === 'no');
  assert.equal(p.size, 0);
});

test('failAll rejects every waiter', async () => {
  const p = new PendingReplies();
  const ps = [1, 2, 3].map(() => {
    const id = p.nextId();
    return new Promise((resolve, reject) => p.add(id, { resolve, reject }));
  });
  p.failAll(new RoomcastError('disconnected', 'gone'));
  for (const x of ps) await assert.rejects(x, { code: 'disconnected' });
});

test('position: first subscribe takes the room top', () => {
  const pos = new Position();
  assert.equal(pos.since(), undefined);
  assert.deepEqual(pos.subscribed({ epoch: 'e1', offset: 7, recovered: false }, undefined), { gap: false });
  assert.deepEqual(pos.since(), { epoch: 'e1', offset: 7 });
  assert.equal(pos.message({ offset: 8 }), true);
  assert.equal(pos.message({ offset: 8 }), false, 'duplicate dropped');
  assert.equal(pos.message({}), true, 'rooms without history have no offsets');
  assert.deepEqual(pos.since(), { epoch: 'e1', offset: 8 });
});

test('position: a recovered resubscribe keeps counting from the replay', () => {
  const pos = new Position({ epoch: 'e1', offset: 8 });
  const since = pos.since();
  assert.deepEqual(pos.subscribed({ epoch: 'e1', offset: 11, recovered: true }, since), { gap: false });
  assert.equal(pos.message({ offset: 9 }), true);
  assert.equal(pos.message({ offset: 10 }), true);
  assert.equal(pos.message({ offset: 11 }), true);
  assert.deepEqual(pos.since(), { epoch: 'e1', offset: 11 });
});

test('position: an unrecovered resubscribe is a gap and jumps to the new top', () => {
  const pos = new Position({ epoch: 'e1', offset: 8 });
  const r = pos.subscribed({ epoch: 'e2', offset: 2, recovered: false }, pos.since());
  assert.deepEqual(r, { gap: true });
  assert.deepEqual(pos.since(), { epoch: 'e2', offset: 2 });
});

test('position: a room whose history had not begun still has a position to resume from', () => {
  const pos = new Position();
  pos.subscribed({ epoch: '', offset: 0, recovered: true }, undefined);
  assert.deepEqual(pos.since(), { epoch: '', offset: 0 });
  pos.message({ offset: 1 });
  assert.deepEqual(pos.since(), { epoch: '', offset: 1 });
  // The server replays from the start of the epoch that began meanwhile.
  assert.deepEqual(pos.subscribed({ epoch: 'E', offset: 3, recovered: true }, pos.since()), { gap: false });
  pos.message({ offset: 2 });
  pos.message({ offset: 3 });
  assert.deepEqual(pos.since(), { epoch: 'E', offset: 3 });
});

test('emitter: on, off and once', async () => {
  const e = new Emitter();
  const got = [];
  const off = e.on('x', (v) => got.push(`a${v}`));
  e.once('x', (v) => got.push(`b${v}`));
  e.emit('x', 1);
  e.emit('x', 2);
  off();
  e.emit('x', 3);
  assert.deepEqual(got, ['a1', 'b1', 'a2']);
});
