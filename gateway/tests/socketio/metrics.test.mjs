// socket.io sessions show in /metrics, labelled by protocol and transport
// (roomcast_sessions{protocol="socket.io",transport}), and their activity
// moves the node's usual counters.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ack, collect, connected, sio2, sio4, sumMetric, until, useGateway } from './lib.mjs';

let gw;
useGateway({}, (g) => (gw = g));

const sessions = (text, transport) => sumMetric(text, 'roomcast_sessions', { protocol: 'socket.io', transport });

describe('metrics', () => {
  test('socket.io sessions by transport; publications and subscriptions counted', async () => {
    const base = await gw.metricsText();
    assert.equal(sessions(base, 'websocket'), 0, 'roomcast_sessions{protocol="socket.io",transport="websocket"} exposed at 0');
    assert.equal(sessions(base, 'polling'), 0, 'roomcast_sessions{protocol="socket.io",transport="polling"} exposed at 0');
    assert.notEqual(sumMetric(base, 'roomcast_ping_timeouts_total'), null, 'roomcast_ping_timeouts_total is exposed');
    const publicationsBefore = sumMetric(base, 'roomcast_publications_total', { source: 'client' }) ?? 0;

    const ws = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const poll = await connected(sio4(gw.url, { transports: ['polling'] }));
    const v2 = await connected(sio2(gw.url, { transports: ['polling'] }));
    const upgraded = await connected(sio4(gw.url));
    await until(() => upgraded.io.engine.transport.name === 'websocket', { what: 'the upgrade' });
    await ack(ws, 'subscribe', 'm.room');
    const got = collect(ws, 'message');
    await ack(poll, 'publish', { room: 'm.room', data: 1 });
    await got.take(1);

    await until(
      async () => {
        const t = await gw.metricsText();
        return sessions(t, 'websocket') === 2 && sessions(t, 'polling') === 2;
      },
      { ms: 3000, what: 'roomcast_sessions socket.io websocket=2 polling=2' },
    ).catch(async (err) => {
      const t = await gw.metricsText();
      throw new Error(`${err.message}\n${t.split('\n').filter((l) => l.startsWith('roomcast_sessions')).join('\n')}`);
    });
    const text = await gw.metricsText();
    assert.equal(sumMetric(text, 'roomcast_publications_total', { source: 'client' }), publicationsBefore + 1);
    assert.ok((sumMetric(text, 'roomcast_subscriptions') ?? 0) >= 1, 'roomcast_subscriptions counts the socket.io subscription');
    assert.ok((sumMetric(text, 'roomcast_socketio_upgrades_total') ?? 0) >= 1, 'roomcast_socketio_upgrades_total');

    for (const s of [ws, poll, v2, upgraded]) s.disconnect();
    await until(
      async () => {
        const t = await gw.metricsText();
        return sessions(t, 'websocket') === 0 && sessions(t, 'polling') === 0;
      },
      { ms: 5000, what: 'roomcast_sessions back to 0' },
    );
  });
});
