// Breakouts' media (issue 16) in real Chromium room pages: a moderator moves two of four
// students into a breakout and back; each page then decodes only its own group's cameras,
// hides the others' tiles, and never makes a second RTCPeerConnection. The five-page test
// publishes 320 px cameras without simulcast so five pages fit this machine's two cores; a
// three-page test does the same on the room page's defaults.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, tileFrames, roomSocket } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

async function join(room, name, flags = ['--publish', '--publish-data'], query = 'width=320&simulcast=0&') {
  const context = await browser.newContext();
  // Counts the page's peer connections: a move must not make a new one.
  await context.addInitScript(() => {
    const Real = window.RTCPeerConnection;
    window.peerConnections = 0;
    window.RTCPeerConnection = function (...a) { window.peerConnections += 1; return new Real(...a); };
    window.RTCPeerConnection.prototype = Real.prototype;
  });
  const page = await context.newPage();
  await page.goto(`${server.base}/room/${room}?${query}token=${server.token(room, name, flags)}`);
  await waitFor(() => page.evaluate(() => document.querySelector('#status').textContent.startsWith('joined')), 20_000, `${name} joined`);
  return page;
}

// Which participants' cameras `page` is decoding now: frames rising over `ms`.
async function decoding(page, ms = 2500) {
  const a = await tileFrames(page);
  await sleep(ms);
  const b = await tileFrames(page);
  return Object.keys(b).filter((pid) => b[pid].frames > (a[pid]?.frames ?? 0) + 3).sort();
}
const visible = (page) => page.evaluate(() => [...window.aulaRoom.tiles.entries()].filter(([k, t]) => !k.startsWith('self') && !t.el.hidden).map(([k]) => k).sort());

test('a moderator moves two of four students into a breakout and back; each decodes only its group', async () => {
  const room = 'breakouts';
  const teacher = await join(room, 'teacher', ['--publish', '--publish-data', '--admin']);
  const names = ['ana', 'ben', 'carl', 'dora'];
  const pages = {};
  for (const n of names) pages[n] = await join(room, n);
  const id = {};
  for (const n of names) id[n] = String(await pages[n].evaluate(() => window.aulaRoom.client.me.participant));
  id.teacher = String(await teacher.evaluate(() => window.aulaRoom.client.me.participant));
  const all = ['teacher', ...names];
  const others = (n, group) => group.filter((x) => x !== n).map((x) => id[x]).sort();
  for (const n of names) await waitFor(async () => JSON.stringify(await decoding(pages[n], 1500)) === JSON.stringify(others(n, all)), 40_000, `${n} decodes everyone`);

  // A student cannot move anyone.
  const kid = await roomSocket(server.base, room, server.token(room, 'kid'));
  kid.ws.send(JSON.stringify({ type: 'group', participant: Number(id.ana), group: 'b1' }));
  await kid.next((m) => m.type === 'error' && /for moderators/.test(m.message), 5000, 'a student\'s move refused');
  kid.close();

  await teacher.evaluate((ids) => { for (const p of ids) window.aulaRoom.client.moveTo(Number(p), 'b1'); }, [id.ana, id.ben]);
  const b1 = ['ana', 'ben'];
  const main = ['teacher', 'carl', 'dora'];
  for (const n of all) {
    const page = n === 'teacher' ? teacher : pages[n];
    const group = b1.includes(n) ? b1 : main;
    await waitFor(async () => JSON.stringify(await decoding(page)) === JSON.stringify(others(n, group)), 20_000, `${n} decodes only its group`);
    assert.deepEqual(await visible(page), others(n, group), `${n} shows only its group's tiles`);
  }
  assert.equal(await pages.ana.evaluate(() => window.aulaRoom.client.group), 'b1');

  // Everyone back to the main room.
  await teacher.evaluate((ids) => { for (const p of ids) window.aulaRoom.client.moveTo(Number(p), null); }, [id.ana, id.ben]);
  for (const n of names) await waitFor(async () => JSON.stringify(await decoding(pages[n])) === JSON.stringify(others(n, all)), 20_000, `${n} decodes everyone again`);
  for (const n of all) {
    const page = n === 'teacher' ? teacher : pages[n];
    assert.equal(await page.evaluate(() => window.peerConnections), 1, `${n} made one RTCPeerConnection`);
  }
  for (const p of [teacher, ...Object.values(pages)]) await p.context().close();
});

test('on the room page\'s defaults (640 px, simulcast) a student moved into a breakout and back decodes only its group', async () => {
  const room = 'breakouts-default';
  const teacher = await join(room, 'teacher', ['--publish', '--publish-data', '--admin'], '');
  const ana = await join(room, 'ana', undefined, '');
  const ben = await join(room, 'ben', undefined, '');
  const id = {};
  for (const [n, p] of [['teacher', teacher], ['ana', ana], ['ben', ben]]) id[n] = String(await p.evaluate(() => window.aulaRoom.client.me.participant));
  const pages = { teacher, ana, ben };
  const expect = async (groups, what) => {
    for (const [n, page] of Object.entries(pages)) {
      const mine = groups.find((g) => g.includes(n)).filter((x) => x !== n).map((x) => id[x]).sort();
      await waitFor(async () => JSON.stringify(await decoding(page)) === JSON.stringify(mine), 30_000, `${n} ${what}`);
    }
  };
  await expect([['teacher', 'ana', 'ben']], 'decodes everyone');
  await teacher.evaluate((p) => window.aulaRoom.client.moveTo(Number(p), 'b1'), id.ben);
  await expect([['teacher', 'ana'], ['ben']], 'decodes only its group');
  await teacher.evaluate((p) => window.aulaRoom.client.moveTo(Number(p), null), id.ben);
  await expect([['teacher', 'ana', 'ben']], 'decodes everyone again');
  for (const [n, page] of Object.entries(pages)) assert.equal(await page.evaluate(() => window.peerConnections), 1, `${n} made one RTCPeerConnection`);
  for (const p of Object.values(pages)) await p.context().close();
});

test('the room service API moves a participant into a breakout and back (admin only)', async () => {
  const room = 'breakouts-api';
  const admin = server.token(room, 'backend', ['--admin']);
  const watcher = await roomSocket(server.base, room, server.token(room, 'watcher'));
  const kid = await roomSocket(server.base, room, server.token(room, 'kid'));
  const kidId = kid.msgs.find((m) => m.type === 'joined').participant;
  const post = (token, body, id = kidId) => fetch(`${server.base}/api/rooms/${room}/participants/${id}/group`, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal((await post(server.token(room, 'kid2'), { group: 'b1' })).status, 403, 'a student token cannot');
  assert.equal((await post(admin, { group: 'b1' })).status, 204);
  const m = await watcher.next((x) => x.type === 'grouped' && x.participant === kidId, 5000, 'grouped');
  assert.deepEqual([m.group, m.by], ['b1', 'the room service API']);
  const list = await (await fetch(`${server.base}/api/rooms/${room}`, { headers: { Authorization: `Bearer ${admin}` } })).json();
  assert.equal(list.participants.find((p) => p.id === kidId)?.group, 'b1', 'the room lists its group');
  assert.equal((await post(admin, { group: 'no spaces' })).status, 400);
  assert.equal((await post(admin, { grop: 'b1' })).status, 400, 'unknown fields refused');
  assert.equal((await post(admin, { group: 'b1' }, 999999)).status, 404);
  assert.equal((await post(admin, { group: null })).status, 204);
  await watcher.next((x) => x.type === 'grouped' && x.participant === kidId && x.group === null, 5000, 'back in the main room');
  watcher.close(); kid.close();
});
