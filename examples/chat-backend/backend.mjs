// An example roomcast.v1.Backend: the classic socket.io chat, with the logic
// a socket.io server would hold. Roomcast calls it over gRPC:
//
//   Connect       a socket connects with io(url, {auth: {name}}): the name is
//                 checked and becomes the user; the socket joins chat.lobby.
//   Rpc           socket.emit('chat message', text, ack): the text is checked,
//                 stored, and published to chat.lobby through the node's
//                 Control service; the ack gets {ok, id} or an error.
//                 socket.emit('history', ack): the ack gets the last messages.
//   Disconnected  a socket left: everyone is told.
//
// Run: node backend.mjs --listen 127.0.0.1:50052 --control 127.0.0.1:50051
// with the node configured as in docs/backend.md.
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const here = dirname(fileURLToPath(import.meta.url));
const PROTO_DIR = resolve(here, '../../proto');
const ROOM = 'chat.lobby';
const HISTORY = 50;
const MAX_TEXT = 500;
const NAME = /^[A-Za-z0-9_-]{1,20}$/;

/** The chat's state: the last messages, oldest first. */
export class Chat {
  constructor() {
    this.messages = [];
    this.nextId = 1;
  }

  /** Stores a message and returns it. */
  add(user, text) {
    const m = { id: this.nextId++, user, text, at: Date.now() };
    this.messages.push(m);
    if (this.messages.length > HISTORY) this.messages.shift();
    return m;
  }
}

/** Why a text is refused, or null. */
export function invalidText(text) {
  if (typeof text !== 'string') return 'a message is a string';
  const t = text.trim();
  if (t.length === 0) return 'a message is not empty';
  if (t.length > MAX_TEXT) return `a message has at most ${MAX_TEXT} characters`;
  return null;
}

function load(file) {
  const def = protoLoader.loadSync(file, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).roomcast.v1;
}

const error = (code, message) => ({ error: { code, message } });
const json = (value) => Buffer.from(JSON.stringify(value));

/**
 * Starts the backend on `listen` (host:port; port 0 picks one), publishing
 * through the node's Control service at `control`. Resolves with
 * `{port, chat, stop}`.
 */
export async function start({ listen = '127.0.0.1:50052', control = '127.0.0.1:50051', controlToken } = {}) {
  const { Backend } = load('roomcast/v1/backend.proto');
  const { Control } = load('roomcast/v1/control.proto');
  const roomcast = new Control(control, grpc.credentials.createInsecure());
  const meta = new grpc.Metadata();
  if (controlToken) meta.set('authorization', `Bearer ${controlToken}`);
  const publish = (event, data) =>
    new Promise((ok, fail) =>
      roomcast.Publish({ room: ROOM, event, data: json(data) }, meta, (err, r) => (err ? fail(err) : ok(r))),
    );
  const chat = new Chat();

  const service = {
    Connect(call, done) {
      const r = call.request;
      let auth = {};
      try {
        auth = r.auth.length ? JSON.parse(r.auth.toString()) : {};
      } catch {
        // not JSON: no name
      }
      const name = typeof auth.name === 'string' ? auth.name : '';
      if (!NAME.test(name)) {
        return done(null, { deny: { code: 4001, reason: 'pick a name of 1 to 20 letters, digits, _ or -' } });
      }
      done(null, { user: name, rooms: [ROOM] });
    },

    async Rpc(call, done) {
      const { method, data, caller } = call.request;
      const arg = data.length ? JSON.parse(data.toString()) : null;
      if (method === 'history') return done(null, { data: json(chat.messages) });
      if (method !== 'chat message') return done(null, error('not_found', `no method ${method}`));
      const why = invalidText(arg);
      if (why) return done(null, error('bad_request', why));
      const m = chat.add(caller.user, arg.trim());
      try {
        await publish('chat message', m);
      } catch (err) {
        return done(null, error('internal', `not published: ${err.message}`));
      }
      done(null, { data: json({ ok: true, id: m.id }) });
    },

    // The chat's room is published to by this backend only; these hooks
    // are not switched on for it, and allow whatever else asks.
    Subscribe(_call, done) {
      done(null, {});
    },
    Publish(_call, done) {
      done(null, {});
    },

    Disconnected(call, done) {
      done(null, {});
      const { user } = call.request.caller;
      if (user) publish('user left', { user }).catch(() => {});
    },
  };

  const server = new grpc.Server();
  server.addService(Backend.service, service);
  const port = await new Promise((ok, fail) =>
    server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(err) : ok(p))),
  );
  return {
    port,
    chat,
    stop: () => {
      server.forceShutdown();
      roomcast.close();
    },
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: '127.0.0.1:50052' },
      control: { type: 'string', default: '127.0.0.1:50051' },
    },
  });
  const b = await start({ ...values, controlToken: process.env.ROOMCAST_GRPC_TOKEN });
  console.log(`chat backend listening on port ${b.port}; publishing through ${values.control}`);
  const stop = () => {
    b.stop();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
