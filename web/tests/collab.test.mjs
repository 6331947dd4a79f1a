// The collaboration channel with real Yjs clients: `y-websocket`'s WebsocketProvider (unmodified,
// `yjs` 13 + `y-protocols` from npm) against `GET /collab/{room}`. Convergence under random
// concurrent edits, late joiners, awareness propagation and expiry, read-only tokens, a server
// killed mid-session losing nothing it broadcast, and hostile messages closing only the sender.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as Y from 'yjs';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { startServer, waitFor, sleep, startMoto, s3Env } from './helpers.mjs';

const ENV = { AULA_COLLAB__AWARENESS_TIMEOUT_S: '3', AULA_COLLAB__SNAPSHOT_EVERY: '200' };
let server;
const clients = [];
before(async () => { server = await startServer(ENV); });
after(async () => {
  if (process.env.AULA_TEST_LOGS) (await import('node:fs')).writeFileSync(`${process.env.AULA_TEST_LOGS}/collab-serve.log`, server.logs());
  for (const c of clients) c.destroy();
  await server?.stop();
});

function client(room, identity, { write = true, srv = server } = {}) {
  const doc = new Y.Doc();
  const token = srv.token(room, identity, write ? ['--publish-data'] : []);
  const provider = new WebsocketProvider(`${srv.base.replace('http', 'ws')}/collab`, room, doc, {
    WebSocketPolyfill: WebSocket, params: { token }, disableBc: true,
  });
  const c = { doc, provider, destroy: () => { provider.destroy(); doc.destroy(); } };
  clients.push(c);
  return c;
}

const synced = (c) => waitFor(() => c.provider.synced, 15_000, 'sync');
// Object keys sorted: key order is not part of the state (a Y.Map's iteration order, and
// yrs re-encoding JSON objects, may differ between replicas of the same state).
const canon = (x) => (Array.isArray(x) ? x.map(canon)
  : x && typeof x === 'object' ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, canon(x[k])])) : x);
const state = (doc) => JSON.stringify(canon({ t: doc.getText('code').toString(), a: doc.getArray('strokes').toJSON(), m: doc.getMap('meta').toJSON() }));

function randomEdit(doc, rnd, who) {
  const t = doc.getText('code');
  const r = rnd();
  if (r < 0.5) t.insert(Math.floor(rnd() * (t.length + 1)), `${who}${Math.floor(rnd() * 100)} `);
  else if (r < 0.65 && t.length > 3) t.delete(Math.floor(rnd() * (t.length - 2)), 2);
  else if (r < 0.85) doc.getArray('strokes').push([{ by: who, pts: [rnd(), rnd()] }]);
  else doc.getMap('meta').set(`k${Math.floor(rnd() * 5)}`, who);
}

function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32; };
}

test('five y-websocket clients editing at random converge; a late joiner gets everything', async () => {
  const room = 'converge';
  const five = ['ana', 'ben', 'caro', 'dev', 'eli'].map((n) => client(room, n));
  await Promise.all(five.map(synced));
  // 5 x 150 edits, interleaved, with small pauses so they race over the wire.
  const rnds = five.map((_, i) => rng(i + 1));
  for (let round = 0; round < 150; round++) {
    five.forEach((c, i) => randomEdit(c.doc, rnds[i], ['a', 'b', 'c', 'd', 'e'][i]));
    if (round % 10 === 0) await sleep(5);
  }
  await waitFor(() => new Set(five.map((c) => state(c.doc))).size === 1, 20_000, 'convergence');
  const final = state(five[0].doc);
  assert.ok(five[0].doc.getArray('strokes').length > 50, 'edits made it');
  const late = client(room, 'late');
  await synced(late);
  await waitFor(() => state(late.doc) === final, 10_000, 'late joiner state')
    .catch((e) => {
      const got = state(late.doc);
      let i = 0;
      while (i < final.length && final[i] === got[i]) i++;
      throw new Error(`${e.message}: differs at ${i} of ${final.length}/${got.length}\nwant ${final.slice(i - 50, i + 200)}\ngot  ${got.slice(i - 50, i + 200)}`);
    });
});

test('awareness propagates, goes at once on close, and expires without renewal', async () => {
  const room = 'presence';
  const a = client(room, 'ana');
  const b = client(room, 'ben');
  await Promise.all([synced(a), synced(b)]);
  a.provider.awareness.setLocalStateField('user', { name: 'ana', cursor: 3 });
  await waitFor(() => [...b.provider.awareness.getStates().values()].some((s) => s.user?.name === 'ana'), 10_000, 'ana seen by ben');
  a.destroy();
  await waitFor(() => ![...b.provider.awareness.getStates().values()].some((s) => s.user?.name === 'ana'), 5_000, 'ana gone on close');

  // A raw client announces itself once and then stays silent (but connected): the server drops
  // its presence after collab.awareness_timeout_s (3 s here).
  const token = server.token(room, 'ghost', ['--publish-data']);
  const ws = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}?token=${token}`);
  await new Promise((r) => ws.on('open', r));
  const enc = encoding.createEncoder();
  encoding.writeVarUint(enc, 1); // awareness message
  const inner = encoding.createEncoder();
  encoding.writeVarUint(inner, 1); // one client
  encoding.writeVarUint(inner, 424242); // its id
  encoding.writeVarUint(inner, 1); // clock
  encoding.writeVarString(inner, JSON.stringify({ user: { name: 'ghost' } }));
  encoding.writeVarUint8Array(enc, encoding.toUint8Array(inner));
  ws.send(encoding.toUint8Array(enc));
  const seen = () => b.provider.awareness.getStates().has(424242);
  await waitFor(seen, 5_000, 'ghost seen');
  const t0 = Date.now();
  await waitFor(() => !seen(), 15_000, 'ghost expired');
  assert.ok(Date.now() - t0 >= 1500, 'not removed before the timeout');
  ws.close();
});

test('a read-only token syncs but cannot edit', async () => {
  const room = 'readonly';
  const w = client(room, 'teacher');
  const r = client(room, 'viewer', { write: false });
  await Promise.all([synced(w), synced(r)]);
  w.doc.getText('code').insert(0, 'from the teacher');
  await waitFor(() => r.doc.getText('code').toString() === 'from the teacher', 10_000, 'reader receives');
  r.doc.getText('code').insert(0, 'vandal ');
  // A read-only client that edits is told once, with y-protocols' "permission denied".
  const raw = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}?token=${server.token(room, 'raw', [])}`);
  clients.push({ destroy: () => raw.close() });
  const denied = new Promise((resolve) => raw.on('message', (data) => {
    const d = decoding.createDecoder(new Uint8Array(data));
    if (decoding.readVarUint(d) === 2 && decoding.readVarUint(d) === 0) resolve(decoding.readVarString(d));
  }));
  await new Promise((resolve, reject) => { raw.on('open', resolve); raw.on('error', reject); });
  const mine = new Y.Doc();
  mine.getText('code').insert(0, 'raw vandal ');
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 0);
  encoding.writeVarUint(e, 2);
  encoding.writeVarUint8Array(e, Y.encodeStateAsUpdate(mine));
  raw.send(encoding.toUint8Array(e));
  assert.match(await denied, /permission denied: this token may read/);
  await sleep(1000);
  assert.equal(w.doc.getText('code').toString(), 'from the teacher');
  const late = client(room, 'late');
  await synced(late);
  assert.equal(late.doc.getText('code').toString(), 'from the teacher');
});

test('malformed, oversized and flooding clients are closed with a reason; the room goes on', async () => {
  const room = 'hostile';
  const good = client(room, 'good');
  const peer = client(room, 'peer');
  await Promise.all([synced(good), synced(peer)]);
  const token = server.token(room, 'bad', ['--publish-data']);
  const url = `${server.base.replace('http', 'ws')}/collab/${room}?token=${token}`;
  async function closeOf(send) {
    const ws = new WebSocket(url);
    await new Promise((r, j) => { ws.on('open', r); ws.on('error', j); });
    const closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    await send(ws);
    return closed;
  }
  const garbage = await closeOf((ws) => ws.send(Buffer.from([0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2])));
  assert.equal(garbage.code, 4400, JSON.stringify(garbage));
  assert.match(garbage.reason, /malformed/);
  const text = await closeOf((ws) => ws.send('hello'));
  assert.equal(text.code, 4400);
  const big = await closeOf((ws) => ws.send(Buffer.alloc(1.5 * 1024 * 1024, 7)));
  assert.equal(big.code, 1009, JSON.stringify(big));
  assert.match(big.reason, /limit/);
  const flood = await closeOf(async (ws) => {
    const q = Buffer.from([3]); // query awareness: cheap and valid
    for (let i = 0; i < 2000 && ws.readyState === WebSocket.OPEN; i++) ws.send(q);
  });
  assert.equal(flood.code, 4429, JSON.stringify(flood));
  // Bad tokens never get a socket.
  for (const t of ['', 'garbage', server.token('other-room', 'x', ['--publish-data'])]) {
    const status = await new Promise((r) => {
      const ws = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}?token=${t}`);
      ws.on('unexpected-response', (_req, res) => r(res.statusCode));
      ws.on('open', () => { ws.close(); r('open'); });
      ws.on('error', () => {});
    });
    assert.ok(status === 401 || status === 403, `token ${t.slice(0, 10)}: ${status}`);
  }
  // The honest clients still edit together.
  good.doc.getText('code').insert(0, 'still here');
  await waitFor(() => peer.doc.getText('code').toString() === 'still here', 10_000, 'peer gets the edit');
  const metrics = await (await fetch(`${server.base}/metrics`)).text();
  assert.ok(Number(metrics.match(/aula_collab_closed_bad_total (\d+)/)[1]) >= 3, metrics);
});

test('the server is killed mid-session and restarted: nothing it broadcast is lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aula-collab-'));
  let srv = await startServer(ENV, { dir });
  try {
    const room = 'durable';
    const a = client(room, 'ana', { srv });
    const b = client(room, 'ben', { srv });
    await Promise.all([synced(a), synced(b)]);
    const rnd = rng(7);
    // Enough updates to cross a snapshot (every 200) and leave a log after it.
    for (let i = 0; i < 450; i++) {
      randomEdit(a.doc, rnd, 'a');
      if (i % 25 === 0) await sleep(5);
    }
    // What ben received was broadcast, so it was in the log first.
    await waitFor(() => state(b.doc) === state(a.doc), 20_000, 'ben has every edit');
    const expected = state(b.doc);
    a.destroy();
    b.destroy();
    await srv.kill();
    srv = await startServer(ENV, { dir });
    const c = client(room, 'cleo', { srv });
    await synced(c);
    await waitFor(() => state(c.doc) === expected, 10_000, 'state after the restart');
    // The killed run's journal segment is replayed at start (a segment is only checkpointed
    // when a later commit finds it a second old).
    assert.match(srv.logs(), /journal replayed after an unclean stop/);
    // A clean stop (SIGINT) syncs the document logs and leaves the journal empty.
    const w = client(room, 'wes', { srv });
    await synced(w);
    c.doc.getText('code').insert(0, 'after the restart ');
    // Broadcast means durable.
    await waitFor(() => w.doc.getText('code').toString().startsWith('after the restart '), 10_000, 'edit broadcast');
    c.destroy();
    w.destroy();
    await srv.stop();
    assert.deepEqual(readdirSync(join(dir, 'collab', '.journal')), []);
    srv = await startServer(ENV, { dir });
    assert.doesNotMatch(srv.logs(), /journal replayed/);
    const d = client(room, 'dora', { srv });
    await synced(d);
    await waitFor(() => d.doc.getText('code').toString().startsWith('after the restart '), 10_000, 'edit made before the clean stop');
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the teacher view gets every student\'s work, merged and throttled', async (t) => {
  const room = 'exam';
  const names = ['ana', 'ben', 'caro'];
  const students = names.map((n) => {
    const doc = new Y.Doc();
    const provider = new WebsocketProvider(`${server.base.replace('http', 'ws')}/collab`, `${room}~${n}`, doc, {
      WebSocketPolyfill: WebSocket, params: { token: server.token(room, n, ['--publish-data']) }, disableBc: true,
    });
    const c = { doc, provider, destroy: () => { provider.destroy(); doc.destroy(); } };
    clients.push(c);
    return c;
  });
  await Promise.all(students.map(synced));
  // Someone else's work document is not theirs to open.
  const status = await new Promise((r) => {
    const ws = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}~ana?token=${server.token(room, 'ben', ['--publish-data'])}`);
    ws.on('unexpected-response', (_req, res) => r(res.statusCode));
    ws.on('open', () => { ws.close(); r('open'); });
    ws.on('error', () => {});
  });
  assert.equal(status, 403);

  const copies = new Map();
  let frames = 0;
  const teacher = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}/teacher?token=${server.token(room, 'teacher', ['--admin'])}`);
  teacher.on('message', (data) => {
    frames++;
    const dec = decoding.createDecoder(new Uint8Array(data));
    const name = decoding.readVarString(dec);
    const update = decoding.readVarUint8Array(dec);
    if (!copies.has(name)) copies.set(name, new Y.Doc());
    Y.applyUpdate(copies.get(name), update);
  });
  await new Promise((r) => teacher.on('open', r));
  await waitFor(() => copies.size === 3, 5_000, 'full states at connect');
  const start = Date.now();
  const framesBefore = frames;
  const rnds = names.map((_, i) => rng(100 + i));
  for (let round = 0; round < 300; round++) {
    students.forEach((s, i) => randomEdit(s.doc, rnds[i], names[i][0]));
    if (round % 20 === 0) await sleep(10);
  }
  await waitFor(() => students.every((s, i) => copies.get(`${room}~${names[i]}`) && state(copies.get(`${room}~${names[i]}`)) === state(s.doc)), 20_000, 'teacher copies match the students');
  const elapsed = Date.now() - start;
  const sent = frames - framesBefore;
  // At most one frame per document per flush (500 ms), however fast they type (900 edits).
  assert.ok(sent <= 3 * (Math.ceil(elapsed / 500) + 2), `${sent} frames in ${elapsed} ms`);
  t.diagnostic(`teacher view: 900 student edits arrived as ${sent} frames over ${elapsed} ms`);
  teacher.close();
});

test('with S3 storage a document outlives the node: a fresh node restores it from the bucket', async () => {
  const moto = await startMoto();
  const env = { ...ENV, ...s3Env(moto), AULA_COLLAB__UNLOAD_AFTER_S: '1' };
  const dirA = mkdtempSync(join(tmpdir(), 'aula-collab-a-'));
  const dirB = mkdtempSync(join(tmpdir(), 'aula-collab-b-'));
  let a = null;
  let b = null;
  try {
    a = await startServer(env, { dir: dirA });
    const room = 'portable';
    const w = client(room, 'ana', { srv: a });
    await synced(w);
    const rnd = rng(11);
    for (let i = 0; i < 120; i++) randomEdit(w.doc, rnd, 'a');
    const reader = client(room, 'ben', { srv: a });
    await synced(reader);
    await waitFor(() => state(reader.doc) === state(w.doc), 10_000, 'edits stored');
    const expected = state(w.doc);
    w.destroy();
    reader.destroy();
    // Without clients the document unloads (after 1 s) and its snapshot goes to the bucket.
    const stored = async () => Number((await (await fetch(`${a.base}/metrics`)).text()).match(/aula_collab_remote_snapshots_total (\d+)/)[1]);
    await waitFor(async () => (await stored()) >= 1, 15_000, 'snapshot in the bucket');
    await a.stop();
    a = null;
    // Another node with an empty disk and the same bucket.
    b = await startServer(env, { dir: dirB });
    const c = client(room, 'cleo', { srv: b });
    await synced(c);
    await waitFor(() => state(c.doc) === expected, 10_000, 'state restored on the new node');
  } finally {
    await a?.stop();
    await b?.stop();
    moto.stop();
    rmSync(dirA, { recursive: true, force: true });
    rmSync(dirB, { recursive: true, force: true });
  }
});

test('a document restore held by a frozen bucket does not block joins to documents in memory', async () => {
  const moto = await startMoto();
  const s = await startServer({ ...ENV, ...s3Env(moto) });
  try {
    // `warm` is in memory (its first load asked the bucket, which answered "none").
    const warm = client('warm', 'ana', { srv: s });
    await synced(warm);
    warm.doc.getText('code').insert(0, 'hello');
    moto.freeze();
    // `cold` must ask the bucket: its load hangs on the frozen server.
    const cold = client('cold', 'ben', { srv: s });
    await sleep(500);
    assert.equal(cold.provider.synced, false, 'the cold load is held by the frozen bucket');
    const late = client('warm', 'cleo', { srv: s });
    await waitFor(() => late.provider.synced && late.doc.getText('code').toString() === 'hello', 5_000, 'a join to the warm document while the cold one loads');
    const metrics = await (await fetch(`${s.base}/metrics`)).text();
    assert.match(metrics, /aula_collab_documents [1-9]/, 'metrics count the documents meanwhile');
    assert.match(metrics, /aula_collab_rooms [1-9]/, 'and under the old name, kept for one release');
    moto.thaw();
    await synced(cold);
  } finally {
    moto.thaw();
    await s.stop();
    moto.stop();
  }
});
