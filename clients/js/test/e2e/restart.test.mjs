// Kill a node under a live page and start it again on the same ports: the
// page notices (even though the socket dies without a close handshake),
// reconnects on its own and resubscribes from where it was.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch } from './browser.mjs';
import { Gateway, nodeClient, startRedis } from './gateway.mjs';

const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function openDemo(b, url) {
  const page = await b.context.newPage();
  await page.goto(url);
  await page.waitForSelector('body[data-state="open"]', { timeout: 15000 });
  return page;
}

function chatHas(page, text, timeout = 15000) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('#chat-messages li')].some((li) => li.textContent.includes(t)),
    text,
    { timeout },
  );
}

test('single node: the page reconnects after the node is killed and restarted', async () => {
  const gw = await Gateway.create();
  cleanup.push(() => gw.stop());
  const browser = await launch();
  cleanup.push(() => browser.close());
  const page = await openDemo(browser, gw.url);
  const before = await page.evaluate(() => window.roomcast.session);

  // Give chat.lobby a history position, so the page has something to recover from.
  await page.fill('#chat-input', 'before the crash');
  await page.click('#chat-form button[type="submit"]');
  await chatHas(page, 'before the crash');

  await gw.kill();
  await page.waitForSelector('body[data-state="connecting"]', { timeout: 15000 });
  await gw.start();
  await page.waitForSelector('body[data-state="open"]', { timeout: 20000 });
  const afterRestart = await page.evaluate(() => window.roomcast.session);
  assert.notEqual(afterRestart.client_id, before.client_id, 'a new session');

  // The memory adapter's history died with the process: the page must say
  // it could not recover rather than pretend nothing was missed.
  await chatHas(page, 'history could not be recovered');

  // And the resubscribed rooms work again.
  const publisher = await nodeClient(gw.wsUrl);
  cleanup.push(() => publisher.close());
  await publisher.publish('chat.lobby', { user: 'carol', text: 'after the restart' });
  await chatHas(page, 'after the restart');
  await page.waitForFunction(() => Number(document.querySelector('#clock-ticks').textContent) > 0);
  assert.deepEqual(browser.errors, []);
});

test('two nodes on Redis: messages published while the page\'s node was down are recovered', async () => {
  const redis = await startRedis();
  assert.ok(redis, 'redis-server is needed for this test (apt-get install redis-server, or set REDIS_SERVER)');
  cleanup.push(() => redis.stop());
  const adapter = ['--adapter', 'redis', '--redis-url', redis.url];
  const a = await Gateway.create({ args: adapter });
  cleanup.push(() => a.stop());
  const b = await Gateway.create({ args: adapter });
  cleanup.push(() => b.stop());

  const browser = await launch();
  cleanup.push(() => browser.close());
  const page = await openDemo(browser, a.url);
  const publisher = await nodeClient(b.wsUrl);
  cleanup.push(() => publisher.close());

  await publisher.publish('chat.lobby', { user: 'carol', text: 'both nodes up' });
  await chatHas(page, 'both nodes up');

  await a.kill();
  await page.waitForSelector('body[data-state="connecting"]', { timeout: 15000 });
  for (let i = 1; i <= 3; i++) {
    await publisher.publish('chat.lobby', { user: 'carol', text: `while node A was down #${i}` });
  }
  await a.start();
  await page.waitForSelector('body[data-state="open"]', { timeout: 20000 });
  await chatHas(page, '3 missed messages recovered');
  const texts = await page.$$eval('#chat-messages li .text', (els) => els.map((e) => e.textContent));
  assert.deepEqual(
    texts.filter((x) => x.startsWith('while node A was down')),
    ['while node A was down #1', 'while node A was down #2', 'while node A was down #3'],
  );
  assert.deepEqual(browser.errors, []);
});
