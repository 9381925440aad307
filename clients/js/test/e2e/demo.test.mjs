// The demo page in headless Chromium against a real `roomcast --demo` node:
// every panel works, two pages talk to each other, commands issued before
// the socket opens arrive, and a dropped connection recovers what it missed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launch } from './browser.mjs';
import { Gateway, PACKAGE_DIR, nodeClient, until } from './gateway.mjs';

let gw;
let browser;
let alice; // two pages, two profiles: two separate users
let bob;
let bobBrowser;

async function openDemo(b, nick) {
  const page = await b.context.newPage();
  page.on('pageerror', (err) => {
    b.errors.push(err.message);
  });
  await page.goto(gw.url);
  await page.waitForSelector('body[data-state="open"]', { timeout: 15000 });
  if (nick) {
    await page.fill('#chat-nick', nick);
    await page.dispatchEvent('#chat-nick', 'change');
  }
  return page;
}

async function say(page, text) {
  await page.fill('#chat-input', text);
  await page.click('#chat-form button[type="submit"]');
}

async function chatHas(page, text) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#chat-messages li')].some((li) => li.textContent.includes(t)),
      text,
      { timeout: 10000 },
    );
  } catch (err) {
    const shown = await page.$$eval('#chat-messages li', (els) => els.map((e) => e.textContent));
    throw new Error(`${err.message}\nwanted "${text}"; chat shows ${JSON.stringify(shown)}`);
  }
}

before(async () => {
  gw = await Gateway.create();
  browser = await launch();
  bobBrowser = await launch();
});

after(async () => {
  await browser?.close();
  await bobBrowser?.close();
  await gw?.stop();
});

test('the page and the client module are served', async () => {
  for (const [path, type] of [
    ['/', 'text/html'],
    ['/demo.css', 'text/css'],
    ['/demo.js', 'javascript'],
    ['/roomcast.js', 'javascript'],
  ]) {
    const res = await fetch(new URL(path, gw.url));
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get('content-type') || '', new RegExp(type), path);
  }
});

test('the page loads, connects and shows the round-trip time', async () => {
  alice = await openDemo(browser, 'alice');
  assert.equal(await alice.textContent('#state-text'), 'Connected');
  await alice.waitForFunction(() => /\d+(\.\d)? ms/.test(document.querySelector('#rtt').textContent), null, {
    timeout: 10000,
  });
  assert.notEqual((await alice.textContent('#node')).trim(), '–');
  assert.deepEqual(browser.errors, []);
});

test('echo comes back', async () => {
  await alice.fill('#echo-input', 'ping from the browser');
  await alice.click('#echo-form button');
  await alice.waitForFunction(
    () => /ping from the browser/.test(document.querySelector('#echo-log li')?.textContent || ''),
    null,
    { timeout: 5000 },
  );
  assert.match(await alice.textContent('#echo-log li .ms'), /ms$/);
});

test('the server clock ticks every second', async () => {
  await alice.waitForFunction(() => Number(document.querySelector('#clock-ticks').textContent) >= 1, null, {
    timeout: 10000,
  });
  const first = Number(await alice.textContent('#clock-ticks'));
  await alice.waitForFunction((n) => Number(document.querySelector('#clock-ticks').textContent) >= n + 2, first, {
    timeout: 10000,
  });
  assert.match(await alice.textContent('#clock-time'), /^\d{2}:\d{2}:\d{2}$/);
  const skew = Number((await alice.textContent('#clock-skew')).replace(/[^-\d]/g, ''));
  assert.ok(Math.abs(skew) < 5000, `the clock is the server's own time (skew ${skew} ms)`);
});

test('two pages chat with each other and see each other in presence', async () => {
  bob = await openDemo(bobBrowser, 'bob');
  const aliceId = await alice.evaluate(() => window.roomcast.session.client_id);
  const bobId = await bob.evaluate(() => window.roomcast.session.client_id);
  assert.notEqual(aliceId, bobId);

  // Alice's page hears Bob join, and both presence lists show both.
  await alice.waitForFunction(
    () => [...document.querySelectorAll('#chat-messages li.system')].some((li) => /joined/.test(li.textContent)),
    null,
    { timeout: 10000 },
  );
  for (const page of [alice, bob]) {
    await page
      .waitForFunction(
        (ids) => ids.every((id) => document.querySelector(`#presence-list li[data-client-id="${id}"]`)),
        [aliceId, bobId],
        { timeout: 10000 },
      )
      .catch(async (err) => {
        const shown = await page.$$eval('#presence-list li', (els) => els.map((e) => e.dataset.clientId || e.textContent));
        const asked = await page.evaluate(() => window.roomcast.presence('chat.lobby'));
        throw new Error(`${err.message}\nwanted ${aliceId} and ${bobId}; list shows ${shown}; presence now ${JSON.stringify(asked)}`);
      });
  }

  await say(alice, 'hi bob, this is alice');
  await chatHas(bob, 'hi bob, this is alice');
  await say(bob, 'hello alice!');
  await chatHas(alice, 'hello alice!');
  // Bob's own copy comes back through the room too; wait for it before counting.
  await chatHas(bob, 'hello alice!');
  // Each page marks its own messages.
  assert.equal(await bob.locator('#chat-messages li.mine').filter({ hasText: 'hello alice!' }).count(), 1);
  assert.equal(await bob.locator('#chat-messages li:not(.mine)').filter({ hasText: 'hi bob' }).count(), 1);
});

test('the ticker moves for every symbol', async () => {
  const prices = () =>
    alice.evaluate(() =>
      Object.fromEntries(
        [...document.querySelectorAll('#quotes-body tr')].map((tr) => [
          tr.dataset.symbol,
          tr.classList.contains('waiting') ? null : tr.querySelector('.price').textContent,
        ]),
      ),
    );
  const first = await until(
    async () => {
      const p = await prices();
      return Object.values(p).every((v) => v !== null) && p;
    },
    { what: 'a quote for every symbol' },
  );
  assert.deepEqual(Object.keys(first).sort(), ['AAPL', 'AMZN', 'GOOG', 'MSFT', 'TSLA']);
  for (const v of Object.values(first)) assert.match(v, /^\d+\.\d{2}$/);
  await until(
    async () => {
      const p = await prices();
      return Object.keys(p).filter((s) => p[s] !== first[s]).length >= 3;
    },
    { what: 'prices to change' },
  );
});

test('a danmaku bullet flies across the other page', async () => {
  await alice.fill('#danmaku-input', 'bullets from alice');
  await alice.click('#danmaku-form button[type="submit"]');
  for (const page of [alice, bob]) {
    const bullet = page.locator('.bullet', { hasText: 'bullets from alice' });
    await bullet.waitFor({ timeout: 5000 });
    // It moves: it starts past the right edge and travels left.
    const x1 = (await bullet.boundingBox()).x;
    await until(async () => (await bullet.boundingBox()).x < x1 - 20, { ms: 5000, what: 'the bullet to move left' });
  }
});

test('commands issued before the socket opens are buffered and arrive', async () => {
  const result = await alice.evaluate(async () => {
    const { RoomcastClient } = await import('/roomcast.js');
    const c = new RoomcastClient({ clientName: 'buffered' });
    const stateAtCall = c.readyState;
    const sub = c.subscribe('chat.lobby');
    const published = c.publish('chat.lobby', { user: 'early-bird', text: 'sent before the socket opened' });
    const echoed = c.echo({ n: 42 });
    const reply = await published;
    const back = await echoed;
    const subscribed = sub.state;
    c.close();
    return { stateAtCall, reply, back, subscribed };
  });
  assert.equal(result.stateAtCall, 0, 'called while CONNECTING');
  assert.equal(result.reply.op, 'published');
  assert.equal(result.reply.room, 'chat.lobby');
  assert.deepEqual(result.back, { n: 42 });
  assert.equal(result.subscribed, 'subscribed');
  await chatHas(bob, 'sent before the socket opened');
});

test('a dropped connection comes back and recovers what it missed', async () => {
  const publisher = await nodeClient(gw.wsUrl);
  try {
    await bob.click('#drop');
    await bob.waitForSelector('body:not([data-state="open"])', { timeout: 5000 });
    for (let i = 1; i <= 3; i++) {
      await publisher.publish('chat.lobby', { user: 'carol', text: `while bob was away #${i}` });
    }
    await bob.waitForSelector('body[data-state="open"]', { timeout: 15000 });
    for (let i = 1; i <= 3; i++) await chatHas(bob, `while bob was away #${i}`);
    await chatHas(bob, '3 missed messages recovered');
    // In order, and each once.
    const texts = await bob.$$eval('#chat-messages li .text', (els) => els.map((e) => e.textContent));
    const missed = texts.filter((t) => t.startsWith('while bob was away'));
    assert.deepEqual(missed, ['while bob was away #1', 'while bob was away #2', 'while bob was away #3']);
  } finally {
    publisher.close();
  }
});

test('screenshot of the demo', async () => {
  // Fill the stage and the chat so the picture shows the page at work.
  const carol = await nodeClient(gw.wsUrl);
  await carol.publish('chat.lobby', { user: 'carol', text: 'Welcome to the lobby! Open a second window to chat with yourself.' });
  carol.close();
  await say(alice, 'Every panel here is one room on one WebSocket.');
  await say(bob, 'and the clock and the ticker come from a backend over gRPC');
  await say(alice, 'Try "Drop connection": missed messages are recovered on reconnect.');
  await alice.click('#volley');
  await alice.waitForTimeout(2200);
  const height = await alice.evaluate(() => document.documentElement.scrollHeight);
  await alice.setViewportSize({ width: 1440, height });
  const dir = process.env.UPDATE_SCREENSHOTS ? resolve(PACKAGE_DIR, '../../docs/images') : join(tmpdir(), 'roomcast-e2e');
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'demo.png');
  await alice.screenshot({ path });
  assert.deepEqual(browser.errors, [], 'no script errors on the page');
  assert.deepEqual(bobBrowser.errors, [], 'no script errors on the page');
});
