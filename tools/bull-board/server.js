// bull-board on the lab's Redis, without Docker.
//
// Python and Node bullmq share one Redis format, so the Node UI sees the jobs the lab's
// Python workers run: queue `bookings` (the BullMQ lane) and `bookings-dlq` (its dead letters).
//
//   cd tools/bull-board && npm install && node server.js
//   LABKIT_REDIS_URL=redis://127.0.0.1:6391/0 node server.js   # e.g. the test brokers
//
// Then open http://127.0.0.1:3000/ (BULL_BOARD_PORT / BULL_BOARD_HOST change where it listens).
'use strict';

const express = require('express');
const { Queue } = require('bullmq');
const { createBullBoard } = require('@bull-board/api');
const { BullMQAdapter } = require('@bull-board/api/bullMQAdapter');
const { ExpressAdapter } = require('@bull-board/express');

const QUEUES = ['bookings', 'bookings-dlq']; // DESIGN.md "names on the wire"
const redisUrl = process.env.LABKIT_REDIS_URL || 'redis://127.0.0.1:6379/0';
const host = process.env.BULL_BOARD_HOST || '127.0.0.1';
const port = Number(process.env.BULL_BOARD_PORT || 3000);
const basePath = process.env.BULL_BOARD_BASE_PATH || '/';

function connectionFromUrl(text) {
  // bullmq hands this to ioredis; a URL keeps TLS (rediss://), user and password working.
  const url = new URL(text);
  const db = Number((url.pathname || '/0').slice(1) || 0);
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    db,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    tls: url.protocol === 'rediss:' ? {} : undefined,
    // The board only reads and retries jobs; it must not hang on a busy Redis.
    maxRetriesPerRequest: null,
  };
}

const connection = connectionFromUrl(redisUrl);
const queues = QUEUES.map((name) => new Queue(name, { connection }));

const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath(basePath);
createBullBoard({
  queues: queues.map((q) => new BullMQAdapter(q)),
  serverAdapter,
  options: { uiConfig: { boardTitle: 'Booking Queue Lab' } },
});

const app = express();
app.use(basePath, serverAdapter.getRouter());

const server = app.listen(port, host, () => {
  console.log(`bull-board on http://${host}:${port}${basePath} (Redis ${url_without_password(redisUrl)})`);
});

function url_without_password(text) {
  const url = new URL(text);
  if (url.password) url.password = '***';
  return url.toString();
}

async function shutdown() {
  server.close();
  await Promise.all(queues.map((q) => q.close()));
  process.exit(0);
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
