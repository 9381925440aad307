// Baseline: the classic Node `ws` broadcast loop, speaking the harness's
// baseline contract (see ../README.md). One process, rooms kept in a Map of
// Sets, each publication serialised once and sent to every subscriber in a loop.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT || process.argv[2] || 8090);
const host = process.env.HOST || '127.0.0.1';

const rooms = new Map();

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const echo = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (path === '/ws') {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws));
  } else if (path === '/echo') {
    echo.handleUpgrade(req, socket, head, (ws) => echo.emit('connection', ws));
  } else {
    socket.destroy();
  }
});

echo.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

wss.on('connection', (ws) => {
  const joined = new Set();
  ws.on('message', (raw) => {
    let cmd;
    try {
      cmd = JSON.parse(raw);
    } catch (e) {
      ws.send(JSON.stringify({ op: 'error', code: 'bad_request', message: 'invalid JSON' }));
      return;
    }
    switch (cmd.op) {
      case 'subscribe': {
        let set = rooms.get(cmd.room);
        if (!set) {
          set = new Set();
          rooms.set(cmd.room, set);
        }
        set.add(ws);
        joined.add(cmd.room);
        ws.send(JSON.stringify({ op: 'subscribed', id: cmd.id, room: cmd.room }));
        break;
      }
      case 'publish': {
        const msg = JSON.stringify({ op: 'message', room: cmd.room, data: cmd.data });
        const set = rooms.get(cmd.room);
        if (set) {
          for (const client of set) {
            client.send(msg);
          }
        }
        if (cmd.id !== undefined) {
          ws.send(JSON.stringify({ op: 'published', id: cmd.id, room: cmd.room }));
        }
        break;
      }
      case 'echo':
        ws.send(JSON.stringify({ op: 'echo', id: cmd.id, data: cmd.data }));
        break;
      case 'ping':
        ws.send(JSON.stringify({ op: 'pong', id: cmd.id }));
        break;
      default:
        ws.send(JSON.stringify({ op: 'error', id: cmd.id, code: 'bad_request', message: 'unknown op' }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) {
      const set = rooms.get(room);
      if (set) {
        set.delete(ws);
        if (set.size === 0) rooms.delete(room);
      }
    }
  });
});

server.listen(port, host, () => {
  console.log(`ws baseline listening on ${host}:${port}`);
});
