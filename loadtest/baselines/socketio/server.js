// Baseline: socket.io 4 with @socket.io/redis-adapter, the classic chat and
// broadcast server, speaking the socket.io flavour of the harness's baseline
// contract (see ../README.md). REDIS_URL points the adapter at a Redis server.
'use strict';

const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const port = Number(process.env.PORT || process.argv[2] || 8091);
const host = process.env.HOST || '127.0.0.1';
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

async function main() {
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    res.writeHead(404);
    res.end();
  });

  const io = new Server(server, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pubClient, subClient),
  });

  io.on('connection', (socket) => {
    socket.on('subscribe', (room, ack) => {
      socket.join(room);
      if (typeof ack === 'function') ack({ room });
    });
    socket.on('publish', (msg, ack) => {
      io.to(msg.room).emit('message', { room: msg.room, data: msg.data });
      if (typeof ack === 'function') ack({ room: msg.room });
    });
    socket.on('echo', (data) => {
      socket.emit('echo', data);
    });
  });

  server.listen(port, host, () => {
    console.log(`socket.io baseline listening on ${host}:${port}, adapter ${redisUrl}`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
