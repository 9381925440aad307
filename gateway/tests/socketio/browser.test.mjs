// The classic socket.io chat page (fixtures/chat-index.html, unchanged but
// for the server address substituted at serve time) in headless Chromium,
// loading socket.io-client 2.x's socket.io.slim.js from another origin than
// the node's, against a node running the chat configuration. Two pages: a
// message typed in one shows in both.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { Gateway, PACKAGE_DIR, freePort, until } from './lib.mjs';

const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const PAGE = readFileSync(join(PACKAGE_DIR, 'fixtures/chat-index.html'));
const CHAT = readFileSync(join(PACKAGE_DIR, 'fixtures/chat.roomcast.toml'), 'utf8');
// The seed page's client is socket.io-client 2.2.0's slim build; 2.5.0, the
// last 2.x, is checked too.
const CLIENTS = {
  '2.2.0': join(PACKAGE_DIR, 'node_modules/socket.io-client-v2.2/dist/socket.io.slim.js'),
  '2.5.0': join(PACKAGE_DIR, 'node_modules/socket.io-client-v2/dist/socket.io.slim.js'),
};

// socket.io-client 2.x makes its cross-origin polling requests with
// credentials (XHR withCredentials), so the node must answer them with
// Access-Control-Allow-Credentials. The chat configuration as the example
// has it, and the same with `cors_credentials = true` spelled out.
const CONFIGS = {
  'the example configuration': CHAT,
  'cors_credentials = true': CHAT.replace(/^\[socketio\]\n/m, '[socketio]\ncors_credentials = true\n'),
};

let gw;
let browser;
before(async () => {
  assert.notEqual(CONFIGS['cors_credentials = true'], CHAT);
  browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ARGS });
});
after(async () => {
  await browser?.close().catch(() => {});
  await gw?.kill();
});

/** Serves the page (address replaced) and the client script on a port of its own. */
async function servePage(slimPath) {
  const original = PAGE.toString('latin1');
  assert.ok(original.includes("io('http://localhost:3000')"), 'the fixture connects to localhost:3000');
  const html = Buffer.from(original.replace("io('http://localhost:3000')", `io('${gw.url}')`), 'latin1');
  const slim = readFileSync(slimPath);
  const port = await freePort();
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(html);
    } else if (req.url === '/socket.io.slim.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' }).end(slim);
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((ok) => server.close(ok)) };
}

async function chatters() {
  const p = await gw.control.presence({ room: 'chat.all' });
  return p.clients.length;
}

const shown = (page) => page.$$eval('#content-wrap p', (ps) => ps.map((p) => p.textContent));

describe('the classic chat page in Chromium', () => {
  for (const [label, config] of Object.entries(CONFIGS)) for (const [version, slimPath] of Object.entries(CLIENTS)) {
    test(`two pages chat through the node (socket.io-client ${version}, ${label})`, async () => {
      await gw?.kill();
      gw = await Gateway.start({ config });
      const site = await servePage(slimPath);
      const context = await browser.newContext();
      const errors = [];
      const failed = [];
      try {
        const base = await chatters();
        const pages = [await context.newPage(), await context.newPage()];
        for (const page of pages) {
          page.on('pageerror', (e) => errors.push(String(e)));
          page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
          page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText}`));
          page.sio = { requests: [], websockets: [] };
          page.on('request', (r) => r.url().startsWith(`${gw.url}/socket.io/`) && page.sio.requests.push(r.url()));
          page.on('websocket', (w) => w.url().includes('/socket.io/') && page.sio.websockets.push(w));
          await page.goto(site.url);
        }
        await until(async () => (await chatters()) === base + 2, { ms: 10000, what: 'both pages to join chat.all' });

        const [one, two] = pages;
        await one.fill('#input', 'hello from page one');
        await one.click('#btn');
        for (const page of pages) {
          await until(async () => (await shown(page)).includes('hello from page one'), {
            ms: 5000,
            what: 'the message on both pages',
          });
        }
        await two.fill('#input', '你好 from page two');
        await two.click('#btn');
        for (const page of pages) {
          await until(async () => (await shown(page)).length === 2, { ms: 5000, what: 'the reply on both pages' });
          assert.deepEqual(await shown(page), ['hello from page one', '你好 from page two']);
        }
        // Each page handshook over cross-origin long-polling (so the node
        // answered CORS) and then upgraded to a WebSocket that is still open.
        for (const page of pages) {
          const polls = page.sio.requests.filter((u) => u.includes('transport=polling'));
          assert.ok(polls.length > 0, `polling requests: ${JSON.stringify(page.sio.requests)}`);
          const sockets = page.sio.websockets.filter((w) => w.url().includes('transport=websocket'));
          assert.equal(sockets.length, 1, `websockets: ${page.sio.websockets.map((w) => w.url())}`);
          assert.equal(sockets[0].isClosed(), false, 'the WebSocket is still open');
        }
        if (process.env.SCREENSHOT_DIR) await one.screenshot({ path: join(process.env.SCREENSHOT_DIR, `chat-${version}-${label.replace(/\W+/g, '_')}.png`) });
        assert.deepEqual(errors, [], 'no page errors');
      } finally {
        if (failed.length) console.log(`failed requests: ${failed.slice(0, 3).join('\n')}`);
        if (errors.length) console.log(`page errors: ${errors.slice(0, 3).join('\n')}`);
        await context.close();
        await site.close();
      }
    });
  }
});
