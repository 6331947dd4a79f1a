// Hostile clients with ordinary tokens (issue 13): each attack is refused or made harmless, and
// the room goes on for honest clients. No browser: raw HTTP, WebSocket and y-protocols bytes.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { AULA, OPUS_OFFER, startServer, waitFor, sleep, upgradeStatus } from './helpers.mjs';

let server;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); });
after(async () => {
  if (process.env.AULA_TEST_LOGS) (await import('node:fs')).writeFileSync(`${process.env.AULA_TEST_LOGS}/hostile-serve.log`, server.logs());
  await server?.stop();
});


async function post(path, token, body = OPUS_OFFER) {
  const r = await fetch(`${server.base}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` }, body });
  return { status: r.status, location: r.headers.get('location'), text: await r.text() };
}
const del = async (path, token) => (await fetch(`${server.base}${path}`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } })).status;

// An honest y-websocket client (the real provider) of `room` on `srv`. Destroy its doc too:
// the awareness holds an interval timer that keeps the process alive.
function editor(srv, room, token) {
  const doc = new Y.Doc();
  const p = new WebsocketProvider(`${srv.base.replace('http', 'ws')}/collab`, room, doc, {
    WebSocketPolyfill: WebSocket, params: { token }, disableBc: true,
  });
  return { doc, p };
}

test('item 6: a WHIP session ends only by its own identity or an admin', async () => {
  const room = 'own';
  const creator = server.token(room, 'creator', ['--publish']);
  const s = await post(`/whip/${room}`, creator);
  assert.equal(s.status, 201, s.text);
  assert.doesNotMatch(s.text, /ice-options:trickle/, 'no trickle offered where PATCH is 405');
  const id = s.location.split('/').pop();
  const viewer = server.token(room, 'viewer', []);
  assert.equal(await del(`/whip/${room}/${id}`, viewer), 403, 'a viewer cannot end the broadcast');
  assert.equal(await del(`/whep/${room}/${id}`, viewer), 404, 'nor through the WHEP path');
  assert.equal(await del(`/whep/${room}/${id}`, creator), 404, 'a WHIP session is not a WHEP one');
  assert.equal(await del(`/whip/${room}/${id}`, creator), 200, 'its own bearer ends it');
  const again = await post(`/whip/${room}`, creator);
  const id2 = again.location.split('/').pop();
  assert.equal(await del(`/whip/${room}/${id2}`, server.token(room, 'ops', ['--admin'])), 200, 'an admin may');
});

test('item 8: request bytes and identities cannot forge log lines', async () => {
  await fetch(`${server.base}/assets/x%0AINFO%20forged-asset-line%1B%5B2J`);
  const odd = 'eve\nINFO forged-identity-line';
  const token = execFileSync(AULA, ['token', '--room', 'logs', '--identity', odd, '--publish', '--ttl', '1h'], { env: server.env }).toString().trim();
  const s = await post('/whip/logs', token);
  assert.equal(s.status, 201, s.text);
  await sleep(300);
  const lines = server.logs().split('\n');
  assert.ok(!lines.some((l) => /^\s*INFO forged/.test(l) || l.startsWith('forged')), 'no line begins with forged text');
  assert.ok(!server.logs().includes('\u001b'), 'no raw ESC in the log');
  assert.ok(lines.some((l) => l.includes('eve\\nINFO forged-identity-line')), 'the identity is logged, escaped');
});

test('item 1: an awareness clock of 2^32-1 is refused and the document keeps working', async () => {
  const room = 'awclock';
  const url = `${server.base.replace('http', 'ws')}/collab/${room}?token=${server.token(room, 'ro', [])}`;
  const evil = new WebSocket(url);
  await new Promise((r, j) => { evil.on('open', r); evil.on('error', j); });
  const closed = new Promise((r) => evil.on('close', (code) => r(code)));
  // messageAwareness, a 10-byte payload: one client (7), clock 0xffffffff, state "{}".
  evil.send(Buffer.from([1, 10, 1, 7, 0xff, 0xff, 0xff, 0xff, 0x0f, 2, 0x7b, 0x7d]));
  assert.equal(await closed, 4400, 'closed as malformed');
  // Honest editors still sync, edit and see each other's presence.
  const mk = (who) => {
    const e = editor(server, room, server.token(room, who, ['--publish-data']));
    e.p.awareness.setLocalStateField('user', who);
    return e;
  };
  const a = mk('ana'); const b = mk('ben');
  try {
    await waitFor(() => a.p.synced && b.p.synced, 15_000, 'both synced');
    a.doc.getText('code').insert(0, 'hello');
    await waitFor(() => b.doc.getText('code').toString() === 'hello', 10_000, 'the edit arrives');
    await waitFor(() => [...b.p.awareness.getStates().values()].some((s) => s.user === 'ana'), 10_000, 'presence arrives');
  } finally {
    for (const c of [a, b]) { c.p.destroy(); c.doc.destroy(); }
  }
});

test('item 7: one connection cannot erase another client\'s presence', async () => {
  const room = 'awown';
  const { doc, p: ana } = editor(server, room, server.token(room, 'ana', ['--publish-data']));
  ana.awareness.setLocalStateField('user', 'ana');
  const { doc: obs, p: watcher } = editor(server, room, server.token(room, 'obs', []));
  try {
    await waitFor(() => [...watcher.awareness.getStates().values()].some((s) => s.user === 'ana'), 10_000, 'ana present');
    const evil = new WebSocket(`${server.base.replace('http', 'ws')}/collab/${room}?token=${server.token(room, 'mal', [])}`);
    await new Promise((r, j) => { evil.on('open', r); evil.on('error', j); });
    // Ana's client id, a higher clock, state null: "ana left".
    const varint = (out, n) => { while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80); } out.push(n); };
    const body = [];
    varint(body, 1); varint(body, doc.clientID); varint(body, 1000); varint(body, 4); body.push(...Buffer.from('null'));
    const msg = [1];
    varint(msg, body.length);
    evil.send(Buffer.from([...msg, ...body]));
    await sleep(1000);
    assert.ok([...watcher.awareness.getStates().values()].some((s) => s.user === 'ana'), 'ana is still present');
    evil.close();
  } finally { ana.destroy(); watcher.destroy(); doc.destroy(); obs.destroy(); }
});

test('issue 15: mDNS ICE candidates are accepted quietly, never counted as bad messages', async () => {
  const room = 'mdns';
  const ws = new WebSocket(`${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'student', [])}`);
  const msgs = [];
  let closeCode = null;
  ws.on('message', (d) => msgs.push(JSON.parse(d.toString())));
  ws.on('close', (c) => { closeCode = c; });
  await waitFor(() => msgs.some((m) => m.type === 'joined'), 10_000, 'joined');
  for (let i = 0; i < 40; i++) {
    ws.send(JSON.stringify({ type: 'candidate', candidate: `candidate:${i} 1 udp 2122260223 ${crypto.randomUUID()}.local ${50000 + i} typ host generation 0` }));
  }
  ws.send(JSON.stringify({ type: 'ping' }));
  await waitFor(() => msgs.some((m) => m.type === 'pong'), 10_000, 'pong');
  assert.equal(closeCode, null, 'still open');
  assert.deepEqual(msgs.filter((m) => m.type === 'error'), [], 'no error for an mDNS candidate');
  ws.close();
});

test('item 3: slowloris connections are capped per address and closed at the header deadline', async () => {
  const net = await import('node:net');
  const s = await startServer({ AULA_HTTP__HEADER_TIMEOUT_S: '2' });
  try {
    const { port } = new URL(s.base);
    const socks = [];
    let closed = 0;
    for (let i = 0; i < 200; i++) {
      const c = net.connect({ port: Number(port), host: '127.0.0.1' });
      c.on('error', () => {});
      c.on('close', () => { closed++; });
      c.on('connect', () => c.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: '));
      socks.push(c);
    }
    // Over the per-address cap (64 unfinished requests) the rest are closed at once.
    await waitFor(() => closed >= 200 - 64, 5_000, `refused over the cap (${closed} closed)`);
    // An honest client from another address is served meanwhile.
    const http = await import('node:http');
    const status = await new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: Number(port), path: '/healthz', localAddress: '127.0.0.2' }, (r) => { r.resume(); resolve(r.statusCode); }).on('error', reject);
    });
    assert.equal(status, 200);
    // The held ones go at the 2 s header deadline.
    await waitFor(() => closed === 200, 10_000, `all closed (${closed})`);
    const metrics = await (await fetch(`${s.base}/metrics`)).text();
    assert.match(metrics, /aula_http_refused_total\{cap="max_pending_per_ip"\} [1-9]/);
  } finally { await s.stop(); }
});

test('item 9: WebSocket ping floods and re-offer floods are rate limited', async () => {
  // Room signaling: offers beyond 2/s (burst 10) are refused with a reason, and the flood
  // then closes the socket as bad messages.
  const room = 'floods';
  const ws = new WebSocket(`${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'flooder', [])}`);
  const msgs = [];
  const closed = new Promise((r) => ws.on('close', (code) => r(code)));
  ws.on('message', (d) => msgs.push(JSON.parse(d.toString())));
  await waitFor(() => msgs.some((m) => m.type === 'joined'), 10_000, 'joined');
  for (let i = 0; i < 60; i++) ws.send(JSON.stringify({ type: 'offer', sdp: OPUS_OFFER }));
  assert.equal(await closed, 4400);
  assert.ok(msgs.some((m) => m.type === 'error' && /offers per second/.test(m.message)), JSON.stringify(msgs.slice(-3)));
  // Pings: a flood closes with 4429, on the room socket and on the collab socket.
  for (const url of [
    `${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'pinger', [])}`,
    `${server.base.replace('http', 'ws')}/collab/${room}?token=${server.token(room, 'pinger2', [])}`,
  ]) {
    const p = new WebSocket(url);
    await new Promise((r, j) => { p.on('open', r); p.on('error', j); });
    const c = new Promise((r) => p.on('close', (code) => r(code)));
    for (let i = 0; i < 3000 && p.readyState === WebSocket.OPEN; i++) p.ping();
    assert.equal(await c, 4429, url);
  }
  // The server still serves a newcomer at once.
  const ok = new WebSocket(`${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'honest', [])}`);
  const got = [];
  ok.on('message', (d) => got.push(JSON.parse(d.toString())));
  await waitFor(() => got.some((m) => m.type === 'joined'), 10_000, 'honest client joined');
  ok.close();
});

test('item 5: one identity holds one WHIP session and one room seat; a new one replaces the old', async () => {
  const room = 'seats';
  const token = server.token(room, 'cam', ['--publish']);
  for (let i = 0; i < 30; i++) assert.equal((await post(`/whip/${room}`, token)).status, 201);
  const info = await (await fetch(`${server.base}/api/rooms/${room}`, { headers: { Authorization: `Bearer ${token}` } })).json();
  assert.equal(info.participants.length, 1, JSON.stringify(info.participants));
  // Room joins: the first socket is told it was replaced, the second stays.
  const url = `${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'ana', [])}`;
  const first = new WebSocket(url);
  const firstMsgs = [];
  first.on('message', (d) => firstMsgs.push(JSON.parse(d.toString())));
  await waitFor(() => firstMsgs.some((m) => m.type === 'joined'), 10_000, 'first joined');
  const second = new WebSocket(url);
  const secondMsgs = [];
  second.on('message', (d) => secondMsgs.push(JSON.parse(d.toString())));
  await waitFor(() => secondMsgs.some((m) => m.type === 'joined'), 10_000, 'second joined');
  await waitFor(() => firstMsgs.some((m) => m.type === 'closed' && /replaced/.test(m.reason)), 10_000, 'first replaced');
  const after = await (await fetch(`${server.base}/api/rooms/${room}`, { headers: { Authorization: `Bearer ${token}` } })).json();
  assert.equal(after.participants.filter((p) => p.identity === 'ana').length, 1);
  second.close();
});

test('item 4: /collab connections are capped per identity; readers cannot send large frames; unfinished frames time out', async () => {
  const room = 'caps';
  const ws = (t) => `${server.base.replace('http', 'ws')}/collab/${room}?token=${t}`;
  const plain = (t) => `${server.base}/collab/${room}?token=${t}`;
  const reader = server.token(room, 'lurker', []);
  // On the defaults: 16 connections per identity to one document, the 17th is 429.
  const open = [];
  for (let i = 0; i < 16; i++) {
    const c = new WebSocket(ws(reader));
    await new Promise((res, rej) => { c.on('open', res); c.on('error', rej); });
    open.push(c);
  }
  assert.equal(await upgradeStatus(plain(reader)), 429);
  // Another identity still gets in; a closed connection gives its seat back.
  const other = new WebSocket(ws(server.token(room, 'someone', [])));
  await new Promise((res, rej) => { other.on('open', res); other.on('error', rej); });
  open.pop().close();
  await waitFor(async () => (await upgradeStatus(plain(reader))) === 101, 10_000, 'the seat is given back');
  // A reader's message is at most 80 KiB: a bigger one closes it with 1009 and a reason.
  const big = open[0];
  const closed = new Promise((res) => big.on('close', (code, reason) => res([code, reason.toString()])));
  big.send(Buffer.alloc(100_000, 1));
  const [code, reason] = await closed;
  assert.equal(code, 1009, reason);
  assert.match(reason, /read-only/);
  for (const c of [...open, other]) c.close();

  // An unfinished frame (or a half-open connection) is closed at the idle deadline.
  const s = await startServer({ AULA_COLLAB__IDLE_TIMEOUT_S: '3', AULA_HLS__AUTO_EGRESS: 'false' });
  try {
    const net = await import('node:net');
    const { port } = new URL(s.base);
    const sock = net.connect(Number(port), '127.0.0.1');
    sock.on('error', () => {});
    let got = Buffer.alloc(0);
    let ended = false;
    sock.on('data', (d) => { got = Buffer.concat([got, d]); });
    sock.on('close', () => { ended = true; });
    await new Promise((r) => sock.on('connect', r));
    sock.write(`GET /collab/${room}?token=${s.token(room, 'writer', ['--publish-data'])} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await waitFor(() => got.toString('latin1').includes('101 Switching Protocols'), 5000, 'upgraded');
    // A masked binary frame announcing 60,000 bytes, of which 1,000 are sent.
    const head = Buffer.from([0x82, 0xfe, 60_000 >> 8, 60_000 & 0xff, 1, 2, 3, 4]);
    sock.write(Buffer.concat([head, Buffer.alloc(1000)]));
    const t0 = Date.now();
    await waitFor(() => ended, 15_000, 'the half-sent frame is dropped at the idle deadline');
    assert.ok(Date.now() - t0 >= 2000, `not before the deadline (${Date.now() - t0} ms)`);
    sock.destroy();
  } finally { await s.stop(); }
});

// The server's resident memory, in bytes.
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const MiB = (b) => (b / 1048576).toFixed(1);
const open = (url) => new Promise((res, rej) => { const c = new WebSocket(url); c.on('open', () => res(c)); c.on('error', rej); });
const closedOf = (c) => new Promise((res) => { if (c.readyState === WebSocket.CLOSED) res(); else c.on('close', res); });
const fds = (pid) => readdirSync(`/proc/${pid}/fd`).length;

test('item 4: a client that stops reading is disconnected at the idle deadline, its queue freed', async () => {
  // Found by bench/soak: such a client was dropped from the document but its session waited
  // on the full socket forever, holding its descriptor and what was queued for it.
  const s = await startServer({ AULA_HLS__AUTO_EGRESS: 'false', AULA_COLLAB__IDLE_TIMEOUT_S: '3' });
  try {
    const room = 'unread';
    const wsBase = s.base.replace('http', 'ws');
    const { doc, p } = editor(s, room, s.token(room, 'writer', ['--publish-data']));
    await waitFor(() => p.synced, 10_000, 'the writer synced');
    const base = fds(s.proc.pid);
    const readers = [];
    for (let i = 0; i < 3; i++) {
      const c = await open(`${wsBase}/collab/${room}?token=${s.token(room, `r${i}`, [])}`);
      c._socket.pause(); // never reads again
      readers.push(c);
    }
    await waitFor(() => fds(s.proc.pid) >= base + 3, 5000, 'the readers connected');
    for (let i = 0; i < 12; i++) { doc.getText('t').insert(0, String(i % 10).repeat(900_000)); await sleep(50); }
    // The server gives up on them (3 s without taking data, or too slow) and closes them,
    // although they never read and never close.
    await waitFor(() => fds(s.proc.pid) <= base, 20_000, `the readers' sockets closed by the server (${base} before)`)
      .catch(() => assert.fail(`server still holds ${fds(s.proc.pid) - base} more descriptors than before the readers`));
    // The writer is unaffected.
    doc.getText('t').insert(0, 'still here');
    const check = editor(s, room, s.token(room, 'checker', []));
    await waitFor(() => check.doc.getText('t').toString().startsWith('still here'), 10_000, 'the writer\'s edit arrives');
    for (const c of [check, { doc, p }]) { c.p.destroy(); c.doc.destroy(); }
    for (const c of readers) c.terminate();
  } finally { await s.stop(); }
});

test('memory returns to its baseline after rounds of attacks, and honest editors get every update meanwhile', async (t) => {
  // Short deadlines so a round ends in seconds; the defaults' paths are the same code.
  const s = await startServer({
    AULA_HLS__AUTO_EGRESS: 'false', AULA_HTTP__HEADER_TIMEOUT_S: '2',
    AULA_COLLAB__IDLE_TIMEOUT_S: '3', AULA_COLLAB__UNLOAD_AFTER_S: '1',
  });
  const net = await import('node:net');
  const { port } = new URL(s.base);
  const wsBase = s.base.replace('http', 'ws');
  // Tokens are minted once: each is a run of `aula token`.
  const writers = Array.from({ length: 40 }, (_, i) => s.token('attacked', `w${i}`, ['--publish-data']));
  const joiners = Array.from({ length: 30 }, (_, i) => s.token('seats', `p${i}`, []));
  const cams = Array.from({ length: 10 }, (_, i) => s.token('seats', `cam${i}`, ['--publish']));

  // Honest editors in another room, editing all along.
  const ana = editor(s, 'steady', s.token('steady', 'ana', ['--publish-data']));
  const ben = editor(s, 'steady', s.token('steady', 'ben', ['--publish-data']));
  let typed = 0;
  const typing = setInterval(() => { ana.doc.getText('t').insert(ana.doc.getText('t').length, 'x'); typed++; }, 100);

  // Each round floods a new document (one that grew round after round would make every round
  // costlier); the readers and the flooder get tokens for it.
  let n = 0;
  const heap = async () => Number(/^aula_heap_in_use_bytes (\d+)/m.exec(await (await fetch(`${s.base}/metrics`)).text())[1]);
  async function round() {
    const room = `flood${n++}`;
    const readers = Array.from({ length: 3 }, (_, i) => s.token(room, `r${i}`, []));
    const flooder = s.token(room, 'flooder', ['--publish-data']);
    const held = [];
    // Slowloris: 50 requests with 8 KB of an unfinished header each (the per-address cap is 64).
    const sockets = [];
    for (let i = 0; i < 50; i++) {
      const c = net.connect({ port: Number(port), host: '127.0.0.1' });
      c.on('error', () => {});
      c.on('connect', () => c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fat: ${'a'.repeat(8000)}`));
      sockets.push(c);
    }
    // 40 writers each hold half of a 1,000,000-byte frame.
    for (const tok of writers) {
      const c = await open(`${wsBase}/collab/attacked?token=${tok}`);
      c._socket.write(Buffer.concat([Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40, 1, 2, 3, 4]), Buffer.alloc(500_000)]));
      held.push(c);
    }
    // Three readers that never read while a writer sends 900 KB updates: their queues fill.
    const slow = [];
    for (const tok of readers) { const c = await open(`${wsBase}/collab/${room}?token=${tok}`); c._socket.pause(); slow.push(c); }
    const { doc: big, p: bigP } = editor(s, room, flooder);
    await waitFor(() => bigP.synced, 10_000, 'the flooder synced');
    for (let i = 0; i < 12; i++) { big.getText('t').insert(0, String(i).repeat(900_000)); await sleep(50); }
    // Updates that can never be integrated (their origin is missing) until the document's cap.
    const pend = await open(`${wsBase}/collab/${room}?token=${flooder}`);
    for (let i = 0; i < 30 && pend.readyState === WebSocket.OPEN; i++) {
      const d = new Y.Doc();
      d.getText('t').insert(0, 'a');
      const sv = Y.encodeStateVector(d);
      d.getText('t').insert(1, 'b'.repeat(60_000));
      const u = Y.encodeStateAsUpdate(d, sv);
      const e = encoding.createEncoder();
      encoding.writeVarUint(e, 0); encoding.writeVarUint(e, 2); encoding.writeVarUint8Array(e, u);
      pend.send(encoding.toUint8Array(e));
      await sleep(10);
    }
    // Room seats and WHIP sessions, then gone.
    for (const tok of joiners) held.push(await open(`${wsBase}/rtc/seats?token=${tok}`));
    const whips = [];
    for (const tok of cams) {
      const r = await fetch(`${s.base}/whip/seats`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${tok}` }, body: OPUS_OFFER });
      assert.equal(r.status, 201, await r.text());
      whips.push([r.headers.get('location'), tok]);
    }
    const peak = rss(s.proc.pid);
    for (const [loc, tok] of whips) await fetch(new URL(loc, s.base), { method: 'DELETE', headers: { Authorization: `Bearer ${tok}` } });
    bigP.destroy(); big.destroy();
    for (const c of [...held, pend]) c.close();
    // The held frames and the unread queues go at the deadlines; the slow readers are dropped.
    await Promise.all([...held, pend].map(closedOf));
    for (const c of slow) { c._socket.resume(); c.terminate(); }
    for (const c of sockets) c.destroy();
    await sleep(6000); // unload_after_s, the header deadline and the server's 5 s heap trim
    return peak;
  }

  try {
    await waitFor(() => ana.p.synced && ben.p.synced, 15_000, 'honest editors synced');
    await round(); // warm-up: thread pools, allocator arenas, caches
    const base = rss(s.proc.pid);
    const baseHeap = await heap();
    assert.ok(baseHeap > 0, 'aula_heap_in_use_bytes is measured');
    const seen = [];
    for (let i = 0; i < Number(process.env.AULA_TEST_MEM_ROUNDS || 3); i++) {
      const peak = await round();
      seen.push([peak, rss(s.proc.pid), await heap()]);
      if (process.env.AULA_TEST_MEM_DEBUG) t.diagnostic(readFileSync(`/proc/${s.proc.pid}/status`, 'utf8').split('\n').filter((l) => /^(RssAnon|RssFile|Threads|VmData)/.test(l)).join(' '));
    }
    let [, end, endHeap] = seen[seen.length - 1];
    t.diagnostic(`after warm-up: RSS ${MiB(base)} MiB, heap ${MiB(baseHeap)} MiB; rounds (RSS peak -> after, heap after): ${seen.map(([p, a, h]) => `${MiB(p)} -> ${MiB(a)}, ${MiB(h)}`).join('; ')} MiB`);
    // A round holds 20 MB of frames, up to 48 MB of queues and an 11 MB document; leaking any
    // of it for three rounds shows. (The heap has ~9 MiB more in use after one of the first
    // rounds and then stays: a buffer keeping its capacity.) RSS: glibc's many arenas had it at
    // 100-125 MiB after these rounds from ~50; one arena per core and the trim bring it back.
    // Both are read again for a while: a trim or an unload may still be due.
    const heapOk = () => endHeap <= baseHeap + 12 * 1048576;
    await waitFor(async () => heapOk() || ((endHeap = await heap()) && heapOk()), 15_000, `the heap back near ${MiB(baseHeap)} MiB`)
      .catch(() => assert.fail(`the heap grew from ${MiB(baseHeap)} to ${MiB(endHeap)} MiB over the rounds`));
    const rssOk = () => end <= base * 1.1 + 24 * 1048576;
    await waitFor(() => rssOk() || ((end = rss(s.proc.pid)) && rssOk()), 15_000, `RSS back near ${MiB(base)} MiB`)
      .catch(() => assert.fail(`RSS grew from ${MiB(base)} to ${MiB(end)} MiB over the rounds`));
    clearInterval(typing);
    await waitFor(() => ben.doc.getText('t').length === typed, 10_000, `every honest edit arrived (${typed} typed)`);
    const m = await (await fetch(`${s.base}/metrics`)).text();
    assert.doesNotMatch(s.logs(), /panicked/);
    t.diagnostic(m.split('\n').filter((l) => /^aula_(http_refused|collab_(closed|pending_dropped))/.test(l)).join('; '));
  } finally {
    clearInterval(typing);
    for (const c of [ana, ben]) { c.p.destroy(); c.doc.destroy(); }
    await s.stop();
  }
});
