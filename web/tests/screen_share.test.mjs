// Screen share (issue 16) in real Chromium room pages on the defaults: a tutor shares its screen
// (Chromium's fake capture), two students decode it in its own tile beside the tutor's camera,
// every page knows the track by its source, and stopping the share ends the tile while the
// camera plays on. A declared source the server does not know is refused with a reason.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, roomSocket } from './helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser(['--auto-select-desktop-capture-source=Entire screen']);
});
after(async () => { await browser?.close(); await server?.stop(); });

async function join(room, name, flags = ['--publish', '--publish-data']) {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => { if (process.env.DEBUG) console.log(`[${name}]`, m.text()); });
  await page.goto(`${server.base}/room/${room}?token=${server.token(room, name, flags)}`);
  await waitFor(() => page.evaluate(() => document.querySelector('#status').textContent.startsWith('joined')), 20_000, `${name} joined`);
  return page;
}

// The screen tile of participant `pid` on `page`: frames decoded and picture size.
const screenTile = (page, pid) => page.evaluate((pid) => {
  const t = window.aulaRoom.tiles.get(`${pid}:screen`);
  if (!t) return null;
  return { frames: t.video.getVideoPlaybackQuality().totalVideoFrames, width: t.video.videoWidth, height: t.video.videoHeight, label: t.label.textContent };
}, pid);
const cameraFrames = (page, pid) => page.evaluate((pid) => window.aulaRoom.tiles.get(String(pid))?.video.getVideoPlaybackQuality().totalVideoFrames ?? -1, pid);

test('a tutor shares a screen: two students decode it in its own tile, and it ends when the tutor stops', async () => {
  const room = 'screens';
  const tutor = await join(room, 'tutor', ['--publish', '--publish-data', '--admin']);
  const ana = await join(room, 'ana');
  const ben = await join(room, 'ben');
  const tutorId = await waitFor(() => ana.evaluate(() => {
    for (const [k, t] of window.aulaRoom.tiles) if (t.name === 'tutor') return k;
    return null;
  }), 10_000, 'ana\'s tile for the tutor');
  assert.ok(tutorId, 'ana has a tile for the tutor');
  for (const page of [ana, ben]) await waitFor(async () => (await cameraFrames(page, tutorId)) > 10, 30_000, 'the tutor\'s camera decoding');

  await tutor.click('#screen');
  await waitFor(() => tutor.evaluate(() => window.aulaRoom.sharing === true), 15_000, 'the tutor sharing');
  assert.equal(await tutor.textContent('#screen'), 'Stop sharing');
  for (const [name, page] of [['ana', ana], ['ben', ben]]) {
    // Announced by source to everyone.
    await waitFor(() => page.evaluate((pid) => [...window.aulaRoom.tracks.values()].some((t) => String(t.participant) === pid && t.source === 'screen' && t.kind === 'video'), tutorId), 15_000, `${name} told of the tutor's screen track`);
    const first = await waitFor(async () => { const s = await screenTile(page, tutorId); return s && s.frames > 5 && s.width > 0 && s; }, 30_000, `${name} decoding the screen`);
    // Full resolution for text (the fake capture is larger than the camera's 640x360).
    assert.ok(first.width >= 1024, `${name} gets the screen at ${first.width}x${first.height}`);
    assert.match(first.label, /tutor \(screen\)/);
    await waitFor(async () => (await screenTile(page, tutorId)).frames > first.frames + 10, 20_000, `${name} keeps decoding the screen`);
    // The camera goes on in its own tile.
    const cam = await cameraFrames(page, tutorId);
    await waitFor(async () => (await cameraFrames(page, tutorId)) > cam + 10, 20_000, `${name} still decodes the tutor's camera`);
  }
  // No new RTCPeerConnection: the share is a renegotiation of the page's one connection.
  assert.equal(await tutor.evaluate(() => window.aulaRoom.pc.getTransceivers().filter((t) => t.sender.track?.kind === 'video').length), 2);

  await tutor.click('#screen');
  await waitFor(() => tutor.evaluate(() => window.aulaRoom.sharing === false), 10_000, 'the tutor stopped sharing');
  for (const [name, page] of [['ana', ana], ['ben', ben]]) {
    await waitFor(async () => (await screenTile(page, tutorId)) === null, 15_000, `${name}'s screen tile gone`);
    assert.ok(await page.evaluate((pid) => ![...window.aulaRoom.tracks.values()].some((t) => String(t.participant) === pid && t.source === 'screen'), tutorId), `${name} told the screen track ended`);
    const cam = await cameraFrames(page, tutorId);
    await waitFor(async () => (await cameraFrames(page, tutorId)) > cam + 10, 20_000, `${name} decodes the tutor's camera after the share`);
  }
  // A second share works on the same connection.
  await tutor.click('#screen');
  await waitFor(async () => { const s = await screenTile(ana, tutorId); return s && s.frames > 5; }, 30_000, 'ana decoding a second share');
  for (const p of [tutor, ana, ben]) await p.context().close();
});

test('an unknown track source in an offer is refused with a reason', async () => {
  const c = await roomSocket(server.base, 'screens-bad', server.token('screens-bad', 'eve'));
  c.ws.send(JSON.stringify({ type: 'offer', sdp: 'v=0', sources: { 0: 'hologram' } }));
  const e = await c.next((m) => m.type === 'error', 5000, 'an error');
  assert.match(e.message, /hologram|unknown variant/);
  c.ws.send(JSON.stringify({ type: 'mute', source: 'screen', kind: 'audio', muted: true }));
  await c.next((m) => m.type === 'error' && /mute names one of/.test(m.message), 5000, 'ambiguous mute refused');
  c.close();
});
