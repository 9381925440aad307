// socket.io sessions show in /metrics: counted as connections, and labelled
// by protocol and transport.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Gateway, ack, closeAll, connected, sio2, sio4, sleep, sumMetric, until } from './lib.mjs';

let gw;
before(async () => {
  gw = await Gateway.start();
});
after(async () => {
  closeAll();
  await gw?.kill();
});

/** Samples (name, labels, value) of every metric in the exposition text. */
function samples(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Gauges labelled with a socket.io protocol value and `transport`, summed per transport. */
function socketioByTransport(text) {
  const by = {};
  for (const s of samples(text)) {
    if (s.name.endsWith('_total') || s.name.endsWith('_bucket') || s.name.endsWith('_sum') || s.name.endsWith('_count')) continue;
    const values = Object.values(s.labels);
    if (!values.some((v) => /socket\.?io/i.test(v))) continue;
    const t = s.labels.transport;
    if (!t) continue;
    by[`${s.name}/${t}`] = (by[`${s.name}/${t}`] ?? 0) + s.value;
  }
  return by;
}

describe('metrics', () => {
  test('socket.io sessions by transport, and the usual counters move', async () => {
    const base = await gw.metricsText();
    const connectionsBefore = sumMetric(base, 'roomcast_connections') ?? 0;
    const publicationsBefore = sumMetric(base, 'roomcast_publications_total', { source: 'client' }) ?? 0;
    assert.notEqual(sumMetric(base, 'roomcast_ping_timeouts_total'), null, 'roomcast_ping_timeouts_total is exposed');

    const ws = await connected(sio4(gw.url, { transports: ['websocket'] }));
    const poll = await connected(sio4(gw.url, { transports: ['polling'] }));
    const v2 = await connected(sio2(gw.url, { transports: ['polling'] }));
    await ack(ws, 'subscribe', 'm.room');
    await ack(poll, 'publish', { room: 'm.room', data: 1 });

    const text = await until(
      async () => {
        const t = await gw.metricsText();
        const by = socketioByTransport(t);
        const names = Object.keys(by);
        const hasWs = names.some((k) => k.endsWith('/websocket') && by[k] >= 1);
        const hasPoll = names.some((k) => k.endsWith('/polling') && by[k] >= 2);
        return hasWs && hasPoll ? t : null;
      },
      { ms: 3000, what: 'socket.io sessions labelled websocket (1) and polling (2)' },
    ).catch(async (err) => {
      const t = await gw.metricsText();
      throw new Error(`${err.message}\nsamples with labels: ${JSON.stringify(socketioByTransport(t))}\n${t.split('\n').filter((l) => /transport|protocol/.test(l)).join('\n')}`);
    });
    assert.equal(sumMetric(text, 'roomcast_connections'), connectionsBefore + 3, 'roomcast_connections counts socket.io sessions');
    assert.equal(
      sumMetric(text, 'roomcast_publications_total', { source: 'client' }),
      publicationsBefore + 1,
      'a socket.io publish is a client publication',
    );
    assert.ok((sumMetric(text, 'roomcast_subscriptions') ?? 0) >= 1);

    for (const s of [ws, poll, v2]) s.disconnect();
    await sleep(300);
    await until(async () => sumMetric(await gw.metricsText(), 'roomcast_connections') === connectionsBefore, {
      ms: 5000,
      what: 'roomcast_connections back down',
    });
  });
});
