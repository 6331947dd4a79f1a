// Mute, camera off and removal (issue 16) in real Chromium room pages: a student mutes and the
// others see it and receive no more of its audio; a moderator mutes a student (who cannot be
// unmuted by anyone else) and removes another; students cannot use moderator actions.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, tileFrames, roomSocket } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

async function join(room, name, flags = ['--publish', '--publish-data']) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/room/${room}?token=${server.token(room, name, flags)}`);
  await waitFor(() => page.evaluate(() => document.querySelector('#status').textContent.startsWith('joined')), 20_000, `${name} joined`);
  return page;
}

// Audio packets `page` has received from `pid` (its tile's stream's inbound-rtp).
const audioFrom = (page, pid) => page.evaluate(async (pid) => {
  const t = window.aulaRoom.tiles.get(String(pid));
  const track = t?.stream.getAudioTracks()[0];
  if (!track) return -1;
  let packets = 0;
  (await window.aulaRoom.pc.getStats(track)).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') packets += s.packetsReceived; });
  return packets;
}, pid);

test('a student mutes: everyone sees it and its audio stops; a moderator mutes and removes students', async () => {
  const room = 'moderated';
  const teacher = await join(room, 'teacher', ['--publish', '--publish-data', '--admin']);
  const ana = await join(room, 'ana');
  const ben = await join(room, 'ben');
  // Everyone decodes everyone, audio included.
  for (const page of [teacher, ana, ben]) {
    await waitFor(async () => { const v = Object.values(await tileFrames(page)); return v.length === 2 && v.every((x) => x.frames > 10 && x.audio === 1); }, 40_000, 'decoding the two others');
  }
  const ids = await teacher.evaluate(() => Object.fromEntries([...window.aulaRoom.tiles.entries()].filter(([k]) => k !== 'self').map(([k, t]) => [t.name, k])));
  await waitFor(async () => (await audioFrom(teacher, ids.ana)) > 50, 20_000, 'audio from ana');

  // Ana mutes her microphone: the teacher and ben are told, and ana's audio stops arriving.
  await ana.click('#mic');
  await waitFor(() => teacher.evaluate(() => window.aulaRoom.muted.some((m) => m.kind === 'audio' && m.muted && m.by === 'ana')), 10_000, 'the teacher sees ana muted');
  await waitFor(() => ben.evaluate(() => /mic off/.test([...window.aulaRoom.tiles.values()].map((t) => t.label.textContent).join())), 10_000, 'ben sees "mic off" on ana\'s tile');
  // Ana's page changes its button when the server's echo reaches it, which may be after the others.
  await waitFor(async () => (await ana.textContent('#mic')) === 'Unmute mic', 10_000, 'ana\'s page shows her mic muted');
  await sleep(500); // packets already in flight
  const a0 = await audioFrom(teacher, ids.ana);
  await sleep(3000);
  const a1 = await audioFrom(teacher, ids.ana);
  assert.equal(a1, a0, `no audio from a muted microphone (${a0} -> ${a1})`);
  // Ben's audio still flows to the teacher meanwhile.
  const b0 = await audioFrom(teacher, ids.ben);
  await waitFor(async () => (await audioFrom(teacher, ids.ben)) > b0 + 20, 10_000, 'ben\'s audio keeps flowing');
  // Unmuted by herself: it flows again.
  await ana.click('#mic');
  await waitFor(async () => (await audioFrom(teacher, ids.ana)) > a1 + 20, 15_000, 'ana\'s audio is back');

  // Camera off: the video stops too, and it is shown.
  await ben.click('#camera');
  await waitFor(() => ana.evaluate(() => /camera off/.test([...window.aulaRoom.tiles.values()].map((t) => t.label.textContent).join())), 10_000, 'ana sees ben\'s camera off');
  await ben.click('#camera');

  // A student cannot mute another or remove anyone.
  const cam = await roomSocket(server.base, room, server.token(room, 'cam'));
  const anaAudio = cam.msgs.find((m) => m.type === 'joined').tracks.find((t) => String(t.participant) === ids.ana && t.kind === 'audio');
  cam.ws.send(JSON.stringify({ type: 'mute', track: anaAudio.id, muted: true }));
  await cam.next((m) => m.type === 'error' && /only a moderator may mute another/.test(m.message), 5000, 'student mute refused');
  cam.ws.send(JSON.stringify({ type: 'remove', participant: Number(ids.ben) }));
  await cam.next((m) => m.type === 'error' && /for moderators/.test(m.message), 5000, 'student remove refused');
  cam.close();
  // The moderator can do both; nobody but ana may unmute her.
  await teacher.click(`.tile[data-participant="${ids.ana}"] .mod-mute`);
  await waitFor(() => ana.evaluate(() => window.aulaRoom.muted.some((m) => m.muted && m.by === 'teacher')), 10_000, 'ana is told the teacher muted her');
  assert.equal(await ana.textContent('#mic'), 'Unmute mic', 'the page shows it and stops sending');
  const t0 = await audioFrom(teacher, ids.ana);
  await sleep(2000);
  assert.ok((await audioFrom(teacher, ids.ana)) - t0 <= 5, 'no audio after the moderator muted her');
  await teacher.click(`.tile[data-participant="${ids.ben}"] .mod-remove`);
  await waitFor(() => ben.evaluate(() => /closed: removed by a moderator/.test(document.querySelector('#status').textContent)), 10_000, 'ben is told he was removed');
  await waitFor(() => ana.evaluate((pid) => window.aulaRoom.left.map(String).includes(pid), ids.ben), 10_000, 'ana sees ben leave');
  for (const p of [teacher, ana, ben]) await p.context().close();
});

test('the room service API (admin tokens): list rooms, remove, mute, post to chat', async () => {
  const room = 'service';
  const admin = server.token('*', 'ops', ['--admin']);
  const roomAdmin = server.token(room, 'backend', ['--admin']);
  const watcher = await roomSocket(server.base, room, server.token(room, 'watcher'));
  const kid = await roomSocket(server.base, room, server.token(room, 'kid'));
  // A Chromium room page gives the room its tracks.
  const cam = await join(room, 'cam');
  const published = await watcher.next((m) => m.type === 'track_published' && m.track.kind === 'audio', 20_000, 'the page\'s audio track');
  const call = (method, path, token, body) => fetch(`${server.base}${path}`, { method, headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });

  const list = await call('GET', '/api/rooms', admin);
  assert.equal(list.status, 200);
  const entry = (await list.json()).rooms.find((r) => r.room === room);
  assert.deepEqual([entry.participants, entry.tracks], [3, 2]);
  assert.equal((await call('GET', '/api/rooms', roomAdmin)).status, 403, 'a room admin cannot list every room');
  assert.equal((await call('GET', '/api/egress', admin)).status, 200, 'server-wide admin calls take a * token');

  assert.equal((await call('POST', `/api/rooms/${room}/tracks/${published.track.id}/mute`, server.token(room, 'kid'))).status, 403);
  assert.equal((await call('POST', `/api/rooms/${room}/tracks/${published.track.id}/mute`, roomAdmin)).status, 204);
  const muted = await watcher.next((m) => m.type === 'track_muted', 5000, 'track_muted');
  assert.deepEqual([muted.track, muted.muted, muted.by], [published.track.id, true, 'the room service API']);
  assert.equal((await call('POST', `/api/rooms/${room}/tracks/999999/mute`, roomAdmin)).status, 404);

  const kidId = kid.msgs.find((m) => m.type === 'joined').participant;
  assert.equal((await call('DELETE', `/api/rooms/${room}/participants/${kidId}`, roomAdmin)).status, 204);
  await kid.next((m) => m.type === 'closed' && m.reason === 'removed by a moderator', 5000, 'kid told');
  await watcher.next((m) => m.type === 'participant_left' && m.participant === kidId, 5000, 'the room told');
  assert.equal((await call('DELETE', `/api/rooms/other/participants/${kidId}`, server.token('other', 'x', ['--admin']))).status, 404);

  const posted = await call('POST', `/api/rooms/${room}/chat`, roomAdmin, { text: 'class ends in 5 minutes' });
  assert.equal(posted.status, 201);
  const { seq } = await posted.json();
  const m = await watcher.next((x) => x.type === 'chat' && x.seq === seq, 5000, 'the posted message');
  assert.deepEqual([m.identity, m.text], ['backend', 'class ends in 5 minutes']);
  assert.equal((await call('POST', `/api/rooms/${room}/chat`, roomAdmin, { txt: 'typo' })).status, 400);
  watcher.close();
  await cam.context().close();
});

test('the room service API sends data to every room client, or to named identities only', async () => {
  const room = 'data';
  const roomAdmin = server.token(room, 'backend', ['--admin']);
  const ana = await roomSocket(server.base, room, server.token(room, 'ana'));
  const ben = await roomSocket(server.base, room, server.token(room, 'ben'));
  const send = (body, token = roomAdmin, to = room) => fetch(`${server.base}/api/rooms/${to}/data`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  try {
    const all = await send({ payload: '{"quiz":3}', topic: 'quiz' });
    assert.equal(all.status, 200);
    assert.deepEqual(await all.json(), { delivered: 2 });
    for (const c of [ana, ben]) {
      const m = await c.next((x) => x.type === 'data', 5000, 'the data message');
      assert.deepEqual([m.from, m.topic, m.payload], ['backend', 'quiz', '{"quiz":3}']);
    }
    const one = await send({ payload: 'just you', identities: ['ben'] });
    assert.deepEqual(await one.json(), { delivered: 1 });
    await ben.next((x) => x.type === 'data' && x.payload === 'just you', 5000, 'ben\'s message');
    // Ana got only the first one (and a message with no topic has no `topic` field).
    await sleep(300);
    assert.equal(ana.msgs.filter((x) => x.type === 'data').length, 1);
    assert.ok(!('topic' in ben.msgs.filter((x) => x.type === 'data')[1]));
    // Refusals: not an admin, no room, bad JSON, too large.
    assert.equal((await send({ payload: 'x' }, server.token(room, 'ana'))).status, 403);
    assert.equal((await send({ payload: 'x' }, server.token('nobody', 'b', ['--admin']), 'nobody')).status, 404);
    assert.equal((await send('{"payload":')).status, 400);
    assert.equal((await send({ payload: 'x', to: ['ana'] })).status, 400, 'unknown fields are refused');
    assert.equal((await send({ payload: 'x'.repeat(20_000) })).status, 400);
  } finally {
    ana.close(); ben.close();
  }
});

test('room webhooks: started, joined, published, unpublished, left, finished, each signed', async () => {
  const http = await import('node:http');
  const { createHmac } = await import('node:crypto');
  const got = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => { got.push({ headers: req.headers, body }); res.end('ok'); });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
  const secret = 'room-hook-secret';
  const s = await startServer({
    AULA_HLS__AUTO_EGRESS: 'false',
    AULA_ROOMS__WEBHOOKS: `["http://127.0.0.1:${receiver.address().port}/hook"]`,
    AULA_ROOMS__WEBHOOK_SECRET: secret,
  });
  try {
    const room = 'hooked';
    // Delivered side by side: `seq` gives the order they happened in.
    const events = () => got.map((g) => JSON.parse(g.body)).sort((a, b) => a.seq - b.seq);
    const watcher = await roomSocket(s.base, room, s.token(room, 'watcher'));
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${s.base}/room/${room}?token=${s.token(room, 'cam')}`);
    await waitFor(() => events().filter((e) => e.event === 'track_published').length === 2, 30_000, 'two tracks published');
    await page.context().close();
    await waitFor(() => events().some((e) => e.event === 'participant_left' && e.participant.identity === 'cam'), 30_000, 'cam left');
    watcher.close();
    await waitFor(() => events().some((e) => e.event === 'room_finished'), 30_000, 'room finished');
    assert.deepEqual(events().map((e) => e.seq), events().map((_, i) => i + 1), 'numbered from 1, none missing');
    const order = events().map((e) => e.event);
    assert.equal(order[0], 'room_started');
    assert.equal(order.at(-1), 'room_finished');
    for (const want of ['participant_joined', 'track_published', 'track_unpublished', 'participant_left']) assert.ok(order.includes(want), `${want} in ${order}`);
    assert.ok(order.indexOf('track_unpublished') > order.indexOf('track_published'));
    for (const e of events()) assert.equal(e.room, room);
    const pub = events().find((e) => e.event === 'track_published');
    assert.equal(pub.track.identity, 'cam');
    for (const g of got) {
      assert.equal(g.headers['x-aula-event'], JSON.parse(g.body).event);
      assert.equal(g.headers['x-aula-signature'], `sha256=${createHmac('sha256', secret).update(g.body).digest('hex')}`);
    }
  } finally {
    await s.stop();
    receiver.close();
  }
});
