// Presence in a large room, on the defaults: past 50 room clients the server batches joins and
// leaves (`presence`, at most two a second) and a room page built on the client library still
// knows exactly who is there, as 70 classmates join and 35 leave.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, roomSocket } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('a room page keeps an exact roster while 70 classmates join and 35 leave in batches', async () => {
  const room = 'assembly';
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/room/${room}?token=${server.token(room, 'teacher')}`);
  await waitFor(() => page.evaluate(() => document.querySelector('#status').textContent.startsWith('joined')), 20_000, 'the teacher joined');
  // Node clients on signaling only (no media), as the chat bench's.
  // All within the 15 s the server keeps a participant that never starts media: ten at a
  // time, in order, so the first 49 arrive before batching starts.
  const kids = [];
  for (let i = 0; i < 70; i += 10) {
    kids.push(...await Promise.all(Array.from({ length: 10 }, (_, j) => roomSocket(server.base, room, server.token(room, `kid${i + j}`)))));
  }
  const roster = () => page.evaluate(() => [...window.aulaRoom.client.participants.values()].map((p) => p.identity).sort());
  const want = Array.from({ length: 70 }, (_, i) => `kid${i}`).sort();
  await waitFor(async () => JSON.stringify(await roster()) === JSON.stringify(want), 10_000, 'the page knows all 70').catch(async (e) => { throw new Error(`${e.message}: ${JSON.stringify(await roster())}`); });
  // Past 50 room clients, joins go out in batches, never one message each (their timing is
  // tested in virtual time: sfu/tests/presence.rs).
  const late = kids[60];
  assert.equal(late.msgs.filter((m) => m.type === 'participant_joined').length, 0, 'kid60 joined a room of 60 or more: no single join messages after it');
  const batches = late.msgs.filter((m) => m.type === 'presence');
  assert.ok(batches.length > 0, 'kid60 was told of later joins in batches');
  for (const b of batches) assert.ok(!b.joined.some((p) => p.identity === 'kid60'), 'nobody is told of its own join');
  // kid0 knows each other kid exactly once: from its `joined` list or from one later message.
  const first = kids[0];
  const told = [
    ...first.msgs.find((m) => m.type === 'joined').participants.map((p) => p.identity),
    ...first.msgs.filter((m) => m.type === 'participant_joined').map((m) => m.participant.identity),
    ...first.msgs.filter((m) => m.type === 'presence').flatMap((b) => b.joined.map((p) => p.identity)),
  ].filter((id) => id !== 'teacher');
  assert.equal(told.length, 69, 'each other kid once');
  assert.equal(new Set(told).size, 69, 'each other kid, nobody twice');

  for (const k of kids.slice(0, 35)) k.close();
  const rest = want.filter((id) => !kids.slice(0, 35).some((_, i) => id === `kid${i}`));
  await waitFor(async () => JSON.stringify(await roster()) === JSON.stringify(rest), 10_000, 'the page saw 35 leave');
  // The page's tiles follow the roster (one per room client, plus its own).
  assert.equal(await page.evaluate(() => [...window.aulaRoom.tiles.keys()].filter((k) => !k.startsWith('self')).length), 35);
  for (const k of kids.slice(35)) k.close();
  await page.context().close();
});
