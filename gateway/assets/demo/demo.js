// The Roomcast demo page: every panel runs over one client, one WebSocket.
// Everything shown comes from the server; nothing here trusts what it
// receives (text goes in with textContent, colours are checked).

import { RoomcastClient, STATE_NAMES, OPEN } from './roomcast.js';

const $ = (id) => document.getElementById(id);
const wsUrl = new URL('ws', location.href);
wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';

const client = new RoomcastClient(wsUrl.href, {
  clientName: 'roomcast-demo',
  pingInterval: 5000,
  pingTimeout: 4000,
  minDelay: 300,
  maxDelay: 8000,
});
// Handy from the console, and how the browser tests reach the client.
window.roomcast = client;

// ---- connection status ---------------------------------------------------

let reconnects = 0;
let retryAt = 0;
let retryTimer = null;

function log(text, kind = '') {
  const li = document.createElement('li');
  const t = document.createElement('time');
  t.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const span = document.createElement('span');
  span.textContent = text;
  if (kind) span.className = kind;
  li.append(t, span);
  const list = $('conn-log');
  list.prepend(li);
  while (list.children.length > 40) list.lastChild.remove();
}

function renderState() {
  const state = client.readyState;
  document.body.dataset.state = STATE_NAMES[state].toLowerCase();
  let text = { 0: 'Connecting…', 1: 'Connected', 2: 'Closing…', 3: 'Disconnected' }[state];
  if (state === 0 && retryAt > Date.now()) {
    text = `Retrying in ${((retryAt - Date.now()) / 1000).toFixed(1)} s`;
  } else if (state === 0 && reconnects > 0) {
    text = 'Reconnecting…';
  }
  $('state-text').textContent = text;
}

client.on('state', (state) => {
  renderState();
  if (state === OPEN) {
    retryAt = 0;
    clearInterval(retryTimer);
  }
});

client.on('connected', (info) => {
  $('node').textContent = info.node || '–';
  $('client-id').textContent = info.client_id || '–';
  $('client-id').title = info.client_id || '';
  log(`connected to node ${info.node || '?'}`, 'ok');
  client.ping().catch(() => {});
});

client.on('disconnected', (d) => {
  const why = d.reason ? ` (${d.reason})` : '';
  if (d.willReconnect) {
    log(`closed ${d.code}${why}; retry in ${d.delay} ms`, 'warn');
    retryAt = Date.now() + d.delay;
    clearInterval(retryTimer);
    retryTimer = setInterval(renderState, 100);
  } else {
    log(`closed ${d.code}${why}`, 'bad');
  }
  $('rtt').textContent = '–';
  renderState();
});

client.on('reconnecting', () => {
  reconnects += 1;
  $('reconnects').textContent = String(reconnects);
});

client.on('rtt', (ms) => {
  $('rtt').textContent = `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
});

client.on('error', (err) => log(`error: ${err.code || ''} ${err.message}`, 'bad'));

$('drop').addEventListener('click', () => {
  log('connection dropped on purpose; back in 2 s', 'warn');
  client.close(1000, 'dropped from the demo page');
  setTimeout(() => client.connect(), 2000);
});

renderState();

// ---- echo ------------------------------------------------------------------

$('echo-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('echo-input');
  const text = input.value.trim();
  if (!text) return;
  const li = document.createElement('li');
  const txt = document.createElement('span');
  txt.className = 'txt';
  const ms = document.createElement('span');
  ms.className = 'ms';
  li.append(txt, ms);
  const started = performance.now();
  try {
    const back = await client.echo({ text });
    txt.textContent = `↩ ${back.text}`;
    ms.textContent = `${(performance.now() - started).toFixed(1)} ms`;
  } catch (err) {
    li.classList.add('err');
    txt.textContent = `✕ ${text}`;
    ms.textContent = err.code || 'error';
  }
  $('echo-log').prepend(li);
  while ($('echo-log').children.length > 20) $('echo-log').lastChild.remove();
});

// ---- server clock ------------------------------------------------------------

let ticks = 0;
client.subscribe('clock').on('message', (m) => {
  const now = m.data && Number(m.data.now);
  if (!Number.isFinite(now)) return;
  const d = new Date(now);
  $('clock-time').textContent = d.toLocaleTimeString([], { hour12: false });
  $('clock-date').textContent = d.toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
  const skew = Date.now() - now;
  $('clock-skew').textContent = `${skew >= 0 ? '+' : ''}${skew} ms`;
  ticks += 1;
  $('clock-ticks').textContent = String(ticks);
  const pulse = $('clock-pulse');
  pulse.classList.remove('on');
  void pulse.offsetWidth; // restart the animation
  pulse.classList.add('on');
});

// ---- chat --------------------------------------------------------------------

const nickInput = $('chat-nick');
nickInput.value = localStorage.getItem('roomcast.nick') || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
nickInput.addEventListener('change', () => {
  nickInput.value = nickInput.value.trim().slice(0, 24) || nickInput.value;
  localStorage.setItem('roomcast.nick', nickInput.value);
});

function hue(name) {
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function shortId(id) {
  return String(id || '').slice(0, 6);
}

function who(entry) {
  return entry.user || `guest·${shortId(entry.client_id)}`;
}

function chatLine(li) {
  const list = $('chat-messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.children.length > 200) list.firstChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function systemLine(text, kind = '') {
  const li = document.createElement('li');
  li.className = `system ${kind}`;
  const span = document.createElement('span');
  span.textContent = text;
  li.append(span);
  chatLine(li);
}

function chatMessage(m) {
  const data = m.data || {};
  const user = typeof data.user === 'string' && data.user ? data.user.slice(0, 24) : 'anonymous';
  const text = typeof data.text === 'string' ? data.text.slice(0, 500) : JSON.stringify(data);
  const li = document.createElement('li');
  if (user === nickInput.value) li.classList.add('mine');
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.style.background = `hsl(${hue(user)} 65% 45%)`;
  avatar.textContent = user.slice(0, 1).toUpperCase();
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  const name = document.createElement('span');
  name.className = 'who';
  name.style.color = `hsl(${hue(user)} 80% 72%)`;
  name.textContent = user;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' });
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  bubble.append(name, time, body);
  li.append(avatar, bubble);
  chatLine(li);
}

let presenceTimer = null;
let presenceAgain = null;
function refreshPresence() {
  clearTimeout(presenceTimer);
  clearTimeout(presenceAgain);
  // Joins and leaves come in bursts (a page reload is one of each): coalesce.
  // Ask once more a little later: a join can reach us before every node's
  // presence view has caught up with it.
  presenceTimer = setTimeout(() => loadPresence(), 150);
  presenceAgain = setTimeout(() => loadPresence(), 1500);
}
// And now and then, so the list heals after anything missed while offline.
setInterval(() => client.readyState === OPEN && loadPresence(), 15000);

async function loadPresence() {
  try {
    const clients = await client.presence('chat.lobby');
    const me = client.session && client.session.client_id;
    const list = $('presence-list');
    list.replaceChildren(
      ...clients.map((c) => {
        const li = document.createElement('li');
        li.textContent = who(c);
        li.dataset.clientId = c.client_id;
        if (c.client_id === me) {
          const you = document.createElement('span');
          you.className = 'you';
          you.textContent = '(you)';
          li.append(' ', you);
        }
        return li;
      }),
    );
    $('presence-count').textContent = String(clients.length);
  } catch (err) {
    $('presence-list').replaceChildren(Object.assign(document.createElement('li'), { textContent: `presence: ${err.code}` }));
  }
}

const chat = client.subscribe('chat.lobby');
chat.on('subscribed', (r) => {
  if (r.resubscribed && r.recovered) {
    const missed = Math.max(0, (r.offset || 0) - (chat.offset || 0));
    systemLine(missed ? `back online: ${missed} missed message${missed === 1 ? '' : 's'} recovered` : 'back online: nothing missed', 'replayed');
  } else if (!r.resubscribed) {
    systemLine('you joined #lobby');
  }
  refreshPresence();
});
chat.on('gap', () => systemLine('back online, but the history could not be recovered: some messages may be missing', 'warn'));
chat.on('message', chatMessage);
chat.on('join', (e) => {
  if (client.session && e.client_id === client.session.client_id) return;
  systemLine(`${who(e)} joined`);
  refreshPresence();
});
chat.on('leave', (e) => {
  systemLine(`${who(e)} left`);
  refreshPresence();
});
chat.on('error', (err) => systemLine(`chat unavailable: ${err.code}`, 'warn'));

$('chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  const user = nickInput.value.trim() || 'anonymous';
  localStorage.setItem('roomcast.nick', user);
  input.value = '';
  client.publish('chat.lobby', { user, text }).catch((err) => systemLine(`not sent (${err.code}): ${text}`, 'warn'));
});

// ---- ticker ------------------------------------------------------------------

const SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'AMZN', 'TSLA'];
const HISTORY = 60;
const quotes = new Map();
const SVG = 'http://www.w3.org/2000/svg';

for (const symbol of SYMBOLS) {
  const tr = document.createElement('tr');
  tr.className = 'waiting';
  tr.dataset.symbol = symbol;
  const sym = document.createElement('td');
  sym.className = 'sym';
  sym.textContent = symbol;
  const price = document.createElement('td');
  price.className = 'num price';
  price.textContent = '—';
  const chg = document.createElement('td');
  chg.className = 'num chg';
  chg.textContent = 'waiting';
  const spark = document.createElement('td');
  spark.className = 'spark';
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 120 30');
  svg.setAttribute('preserveAspectRatio', 'none');
  const area = document.createElementNS(SVG, 'polygon');
  area.setAttribute('class', 'area');
  const line = document.createElementNS(SVG, 'polyline');
  svg.append(area, line);
  spark.append(svg);
  tr.append(sym, price, chg, spark);
  $('quotes-body').append(tr);
  quotes.set(symbol, { tr, price, chg, line, area, history: [], last: null });
  client.subscribe(`quotes.${symbol}`).on('message', (m) => onQuote(symbol, m));
}

function onQuote(symbol, m) {
  const q = quotes.get(symbol);
  const data = m.data || {};
  const price = Number(data.price);
  const change = Number(data.change);
  if (!q || !Number.isFinite(price)) return;
  q.tr.classList.remove('waiting');
  q.price.textContent = price.toFixed(2);
  if (q.last !== null && price !== q.last) {
    const cls = price > q.last ? 'flash-up' : 'flash-down';
    q.price.classList.remove('flash-up', 'flash-down');
    void q.price.offsetWidth;
    q.price.classList.add(cls);
    setTimeout(() => q.price.classList.remove(cls), 120);
  }
  q.last = price;
  if (Number.isFinite(change)) {
    const base = price - change;
    const pct = base ? (change / base) * 100 : 0;
    q.chg.textContent = `${change >= 0 ? '▲ +' : '▼ '}${change.toFixed(2)} (${pct >= 0 ? '+' : ''}${pct.toFixed(2)}%)`;
    q.chg.className = `num chg ${change >= 0 ? 'up' : 'down'}`;
  }
  q.history.push(price);
  if (q.history.length > HISTORY) q.history.shift();
  drawSpark(q, change >= 0);
}

function drawSpark(q, up) {
  const h = q.history;
  if (h.length < 2) return;
  const min = Math.min(...h);
  const max = Math.max(...h);
  const span = max - min || 1;
  const step = 120 / (HISTORY - 1);
  const x0 = 120 - (h.length - 1) * step;
  const pts = h.map((p, i) => `${(x0 + i * step).toFixed(1)},${(28 - ((p - min) / span) * 26).toFixed(1)}`);
  const color = up ? 'var(--up)' : 'var(--down)';
  q.line.setAttribute('points', pts.join(' '));
  q.line.setAttribute('stroke', color);
  q.area.setAttribute('points', `${x0.toFixed(1)},30 ${pts.join(' ')} 120,30`);
  q.area.setAttribute('fill', color);
}

// ---- danmaku -------------------------------------------------------------------

const COLORS = ['#ffffff', '#fde047', '#4ade80', '#38bdf8', '#f472b6', '#fb923c'];
let color = COLORS[0];
const swatches = $('swatches');
for (const c of COLORS) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'swatch';
  b.style.background = c;
  b.setAttribute('role', 'radio');
  b.setAttribute('aria-label', c);
  b.setAttribute('aria-checked', String(c === color));
  b.addEventListener('click', () => {
    color = c;
    for (const s of swatches.children) s.setAttribute('aria-checked', String(s === b));
  });
  swatches.append(b);
}

const stage = $('stage');
const LANE = 34;
const laneFreeAt = [];
const sentByMe = new Set();

function spawnBullet(data) {
  const text = typeof data.text === 'string' ? data.text.trim().slice(0, 60) : '';
  if (!text) return;
  const c = typeof data.color === 'string' && /^#[0-9a-fA-F]{6}$/.test(data.color) ? data.color : '#ffffff';
  if (stage.querySelectorAll('.bullet').length > 80) return; // a flood would only be noise
  $('stage-empty').hidden = true;
  const el = document.createElement('div');
  el.className = 'bullet';
  el.style.color = c;
  el.textContent = text;
  if (typeof data.user === 'string' && data.user) {
    const by = document.createElement('span');
    by.className = 'by';
    by.textContent = `— ${data.user.slice(0, 24)}`;
    el.append(by);
  }
  if (typeof data.nonce === 'string' && sentByMe.delete(data.nonce)) el.classList.add('mine');
  const lanes = Math.max(1, Math.floor((stage.clientHeight - 10) / LANE));
  const now = performance.now();
  let lane = 0;
  for (let i = 1; i < lanes; i++) if ((laneFreeAt[i] || 0) < (laneFreeAt[lane] || 0)) lane = i;
  const wait = (laneFreeAt[lane] || 0) - now;
  if (wait > 4000) return; // every lane is booked for seconds: drop rather than pile up
  stage.append(el);
  const width = el.offsetWidth;
  const distance = stage.clientWidth + width + 20;
  const speed = 170; // px per second, the same for all so no bullet catches up with another
  const duration = (distance / speed) * 1000;
  // The lane is free again once this bullet's tail has cleared the right edge.
  laneFreeAt[lane] = Math.max(now, laneFreeAt[lane] || 0) + ((width + 40) / speed) * 1000;
  el.style.top = `${8 + lane * LANE}px`;
  const anim = el.animate([{ transform: 'translateX(0)' }, { transform: `translateX(-${distance}px)` }], {
    duration,
    easing: 'linear',
    delay: Math.max(0, wait),
  });
  anim.onfinish = () => el.remove();
}

client.subscribe('danmaku.main').on('message', (m) => spawnBullet(m.data || {}));

function fire(text, c = color) {
  const nonce = Math.random().toString(36).slice(2, 10);
  sentByMe.add(nonce);
  const user = nickInput.value.trim() || 'anonymous';
  return client.publish('danmaku.main', { text, color: c, user, nonce }).catch((err) => {
    sentByMe.delete(nonce);
    log(`danmaku not sent: ${err.code}`, 'bad');
  });
}

$('danmaku-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('danmaku-input');
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  fire(text);
});

const VOLLEY = ['Hello from Roomcast!', '666', 'so smooth', 'first!', 'WebSockets ftw', 'ping < 1 ms?', 'gg', 'wow', 'this is live', 'Roomcast!!'];
$('volley').addEventListener('click', () => {
  for (let i = 0; i < 8; i++) {
    setTimeout(() => fire(VOLLEY[Math.floor(Math.random() * VOLLEY.length)], COLORS[i % COLORS.length]), i * 140);
  }
});
