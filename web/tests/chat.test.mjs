// Room chat (issue 16): numbered by the server, durable before it is acknowledged, resumed
// exactly (what was missed, in order, nothing twice), bounded against hostile senders.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, tcpProxy, roomSocket, upgradeStatus } from './helpers.mjs';

let server, browser, proxy;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { proxy?.close(); await browser?.close(); await server?.stop(); });

async function page(base, room, name) {
  const p = await (await browser.newContext()).newPage();
  await p.goto(`${base}/room/${room}?token=${server.token(room, name)}`);
  await waitFor(() => p.evaluate(() => window.aulaRoom?.chat !== undefined && document.querySelector('#status').textContent.startsWith('joined')), 20_000, `${name} joined`);
  return p;
}

const seqs = (msgs) => msgs.filter((m) => m.type === 'chat').map((m) => m.seq);

test('a student whose signaling drops for 5 s while 200 messages are sent gets each once, in order', async () => {
  const room = 'chat-drop';
  proxy = await tcpProxy(server.base);
  const tutor = await page(server.base, room, 'tutor');
  const student = await page(proxy.base, room, 'student');
  await tutor.fill('#chat-input', 'welcome');
  await tutor.click('#chat-form button');
  await waitFor(() => student.evaluate(() => window.aulaRoom.chat.length === 1), 10_000, 'the first message');

  proxy.cut();
  await waitFor(() => student.evaluate(() => document.querySelector('#status').textContent === 'reconnecting'), 10_000, 'reconnecting');
  // Typed while offline: sent again after the resume, stored once.
  await student.fill('#chat-input', 'sorry, my wifi');
  await student.click('#chat-form button');
  // Ten classmates (no media) send 20 each, at once: 200 messages while the student is away.
  const mates = await Promise.all([...Array(10).keys()].map((i) => roomSocket(server.base, room, server.token(room, `mate${i}`))));
  for (const [i, m] of mates.entries()) for (let k = 0; k < 20; k++) m.chat(`m${i}-${k}`, `${i}-${k}`);
  await waitFor(() => mates.every((m) => m.msgs.filter((x) => x.type === 'chat_ack').length === 20), 20_000, '200 acknowledged');
  await sleep(5000 - 1000);
  proxy.restore();
  await waitFor(() => student.evaluate(() => window.aulaRoom.resumed > 0), 15_000, 'resumed');
  await waitFor(() => student.evaluate(() => window.aulaRoom.chat.some((m) => m.text === 'sorry, my wifi')), 10_000, 'the offline message is delivered');

  const got = await student.evaluate(() => ({ shown: window.aulaRoom.chat.map((m) => [m.seq, m.text]), frames: window.aulaRoom.chatFrames }));
  const expected = [...Array(got.shown.length).keys()].map((i) => i + 1);
  assert.deepEqual(got.shown.map(([s]) => s), expected, 'every number from 1, in order, no gap');
  assert.equal(got.shown.length, 202, 'welcome + 200 + the offline message');
  assert.deepEqual(got.frames, expected, 'the server sent each message once');
  for (const [i] of mates.entries()) {
    const mine = got.shown.filter(([, t]) => t.startsWith(`m${i}-`)).map(([, t]) => t);
    assert.deepEqual(mine, [...Array(20).keys()].map((k) => `m${i}-${k}`), `mate ${i}'s messages in the order sent`);
  }
  // The tutor, never disconnected, saw the same sequence.
  const tutorSeqs = await tutor.evaluate(() => window.aulaRoom.chat.map((m) => m.seq));
  assert.deepEqual(tutorSeqs, expected);
  assert.equal((await tutor.evaluate(() => window.aulaRoom.chat.filter((m) => m.text === 'sorry, my wifi').length)), 1, 'stored once');
  for (const m of mates) m.close();
  await tutor.context().close();
  await student.context().close();
  proxy.close();
});

test('chat history survives a clean restart and a crash; newcomers get the backlog', async () => {
  const room = 'chat-durable';
  const s = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' });
  const dir = s.dir;
  let again;
  try {
    const a = await roomSocket(s.base, room, s.token(room, 'ana'));
    const b = await roomSocket(s.base, room, s.token(room, 'ben'));
    for (let k = 0; k < 15; k++) { a.chat(`a${k}`, `a${k}`); b.chat(`b${k}`, `b${k}`); }
    await waitFor(() => a.msgs.filter((m) => m.type === 'chat_ack').length === 15 && b.msgs.filter((m) => m.type === 'chat_ack').length === 15, 15_000, '30 acknowledged');
    // Acknowledged means on disk: a crash right after loses none.
    await s.kill();
    again = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }, { dir });
    const late = await roomSocket(again.base, room, again.token(room, 'cam'));
    const history = late.msgs.filter((m) => m.type === 'chat');
    assert.deepEqual(history.map((m) => m.seq), [...Array(30).keys()].map((i) => i + 1));
    assert.deepEqual(history.filter((m) => m.identity === 'ana').map((m) => m.text), [...Array(15).keys()].map((k) => `a${k}`));
    const synced = late.msgs.find((m) => m.type === 'chat_synced');
    assert.deepEqual([synced.last, synced.truncated], [30, false]);
    // Numbers go on after the restart; a client that has up to 28 gets 29 and 30 and then the new one.
    late.chat('after the crash', 'x1');
    await late.next((m) => m.type === 'chat_ack', 10_000, 'ack');
    assert.equal(late.msgs.find((m) => m.type === 'chat_ack').seq, 31);
    const resumed = await roomSocket(again.base, room, again.token(room, 'dan'), 'chat_after=28');
    await resumed.next((m) => m.type === 'chat' && m.seq === 31, 10_000, 'the live message');
    assert.deepEqual(seqs(resumed.msgs), [29, 30, 31]);
    late.close(); resumed.close();
    // A clean stop keeps it too.
    await again.stop();
    again = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }, { dir });
    const third = await roomSocket(again.base, room, again.token(room, 'eve'), 'chat_after=30');
    assert.deepEqual(seqs(third.msgs), [31]);
    third.close();
  } finally {
    await again?.stop();
    const { rmSync } = await import('node:fs');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hostile chat: oversized, malformed, read-only and flooding senders are refused; the room goes on', async () => {
  const room = 'chat-hostile';
  const honest = await roomSocket(server.base, room, server.token(room, 'honest'));
  const mal = await roomSocket(server.base, room, server.token(room, 'mal'));
  const errors = () => mal.msgs.filter((m) => m.type === 'error');
  mal.chat('x'.repeat(5000), 'big');
  await waitFor(() => errors().some((e) => e.id === 'big' && /1 to 4096 bytes/.test(e.message)), 5000, 'oversized refused');
  mal.ws.send(JSON.stringify({ type: 'chat', text: 5 }));
  await waitFor(() => errors().some((e) => /malformed message/.test(e.message)), 5000, 'malformed refused');
  mal.ws.send(JSON.stringify({ type: 'chat', text: 'hi', id: { evil: true } }));
  await waitFor(() => errors().some((e) => /id is a string/.test(e.message)), 5000, 'bad id refused');
  const reader = await roomSocket(server.base, room, server.token(room, 'reader', []));
  reader.chat('let me write', 'r1');
  await reader.next((m) => m.type === 'error' && m.id === 'r1' && /may read the chat but not write/.test(m.message), 5000, 'read-only refused');
  // A flood: the burst (20) is taken, the rest refused, and the sender is closed for it.
  const flood = await roomSocket(server.base, room, server.token(room, 'flood'));
  for (let k = 0; k < 60; k++) flood.chat(`spam ${k}`, `s${k}`);
  await waitFor(() => flood.closed, 10_000, 'the flooder is closed');
  const acked = flood.msgs.filter((m) => m.type === 'chat_ack').length;
  assert.ok(acked >= 20 && acked < 30, `the burst is taken, not the flood (${acked})`);
  assert.ok(flood.msgs.some((m) => m.type === 'error' && /over 5 messages per second/.test(m.message)));
  assert.equal(flood.closed.code, 4400);
  // Nothing refused was stored or sent; honest clients go on.
  honest.chat('still here', 'h1');
  await honest.next((m) => m.type === 'chat' && m.text === 'still here', 10_000, 'honest message');
  const texts = honest.msgs.filter((m) => m.type === 'chat').map((m) => m.text);
  assert.equal(texts.filter((t) => t.startsWith('spam')).length, acked);
  assert.ok(!texts.some((t) => t.length > 4096 || t === 'let me write'));
  // A bad resume point is a plain 400 before the upgrade.
  assert.equal(await upgradeStatus(`${server.base}/rtc/${room}?token=${server.token(room, 'x')}&chat_after=-1`), 400);
  // A room name that could leave the storage directory is refused (`..` is refused the same
  // way: signaling/src/token.rs; a URL client folds it away before it is sent).
  assert.equal(await upgradeStatus(`${server.base}/rtc/a%2Fb?token=${server.token('a/b', 'x')}`), 400);
  for (const c of [honest, mal, reader]) c.close();
});
