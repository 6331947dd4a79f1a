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
  assert.equal(await ana.textContent('#mic'), 'Unmute mic');
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
