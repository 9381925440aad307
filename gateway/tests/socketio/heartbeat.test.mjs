// The Engine.IO heartbeat follows the node's --ping-interval/--ping-timeout:
// healthy socket.io clients stay, a client that stops answering is dropped
// and counted in roomcast_ping_timeouts_total.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connected, rawEngineWs, sio2, sio4, sleep, until, useGateway, withTimeout } from './lib.mjs';

let gw;
useGateway({ args: ['--ping-interval', '300ms', '--ping-timeout', '200ms'] }, (g) => (gw = g));

const timeouts = async () => (await gw.metric('roomcast_ping_timeouts_total')) ?? 0;

describe('heartbeat', () => {
  test('the handshake advertises the node heartbeat', async () => {
    // Over WebSocket, closed right after: an abandoned polling session would
    // time out during the next test and be counted there.
    const raw = await rawEngineWs(gw, { eio: 4 });
    raw.ws.close();
    assert.equal(raw.handshake.pingInterval, 300);
    assert.equal(raw.handshake.pingTimeout, 200);
  });

  test('healthy 4.x and 2.x clients stay connected over many ping periods', async () => {
    const socks = [
      await connected(sio4(gw.url, { transports: ['websocket'] })),
      await connected(sio4(gw.url, { transports: ['polling'] })),
      await connected(sio2(gw.url, { transports: ['websocket'] })),
      await connected(sio2(gw.url, { transports: ['polling'] })),
    ];
    const ids = socks.map((s) => s.id);
    let drops = 0;
    for (const s of socks) s.on('disconnect', () => drops++);
    const before = await timeouts();
    await sleep(2500);
    assert.equal(drops, 0, 'no disconnects');
    assert.deepEqual(
      socks.map((s) => s.id),
      ids,
    );
    assert.ok(socks.every((s) => s.connected));
    assert.equal(await timeouts(), before, 'no ping timeouts counted');
    for (const s of socks) s.disconnect();
  });

  test('Engine.IO v4 over WebSocket: a client that never answers "2" is closed and counted', async () => {
    const before = await timeouts();
    const raw = await rawEngineWs(gw, { eio: 4 });
    raw.ws.send('40');
    const opened = Date.now();
    const closed = await withTimeout(raw.closed, 5000, 'the server to close the silent client');
    assert.ok(raw.packets.includes('2'), `a ping was sent: ${JSON.stringify(raw.packets)}`);
    assert.ok(!raw.packets.slice(1).some((p) => p === '3'), 'the server sent no pong');
    assert.ok(closed.at - opened >= 300, `closed after ${closed.at - opened} ms, before the first ping was due`);
    assert.ok(closed.at - opened < 2000, `closed after ${closed.at - opened} ms`);
    await until(async () => (await timeouts()) === before + 1, { ms: 3000, what: 'roomcast_ping_timeouts_total + 1' });
  });

  test('Engine.IO v4 over WebSocket: a client that answers pings stays', async () => {
    const raw = await rawEngineWs(gw, { eio: 4 });
    raw.ws.on('message', (d) => {
      if (d.toString() === '2') raw.ws.send('3');
    });
    raw.ws.send('40');
    await sleep(1500);
    assert.ok(raw.packets.filter((p) => p === '2').length >= 3, `pings: ${JSON.stringify(raw.packets)}`);
    assert.equal(raw.ws.readyState, 1, 'still open');
    raw.ws.close();
  });

  test('Engine.IO v3 over WebSocket: a client that never sends "2" is closed and counted', async () => {
    const before = await timeouts();
    const raw = await rawEngineWs(gw, { eio: 3 });
    assert.equal(raw.handshake.pingInterval, 300);
    await withTimeout(raw.closed, 5000, 'the server to close the silent v3 client');
    await until(async () => (await timeouts()) === before + 1, { ms: 3000, what: 'roomcast_ping_timeouts_total + 1' });
  });

  test('Engine.IO v3 over WebSocket: a client that pings gets "3" and stays', async () => {
    const raw = await rawEngineWs(gw, { eio: 3 });
    const timer = setInterval(() => raw.ws.send('2'), 250);
    await sleep(1500);
    clearInterval(timer);
    assert.ok(raw.packets.filter((p) => p === '3').length >= 3, `pongs: ${JSON.stringify(raw.packets)}`);
    assert.equal(raw.ws.readyState, 1, 'still open');
    raw.ws.close();
  });

  test('Engine.IO v4 polling: a session that stops polling expires and is counted', async () => {
    const before = await timeouts();
    const body = await (await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling`)).text();
    const { sid } = JSON.parse(body.slice(1));
    await sleep(1500);
    const res = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`);
    assert.equal(res.status, 400, 'the session is gone');
    await res.text();
    await until(async () => (await timeouts()) === before + 1, { ms: 3000, what: 'roomcast_ping_timeouts_total + 1' });
  });
});
