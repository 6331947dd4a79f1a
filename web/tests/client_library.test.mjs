// The client library (/assets/aula.js) used by an application of its own, without the room
// page: two pages import it, join, decode each other's camera from `track` events, chat with
// acknowledgements, raise a hand and see each other's screen share by source.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor } from './helpers.mjs';

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launchBrowser(['--auto-select-desktop-capture-source=Entire screen']);
});
after(async () => { await browser?.close(); await server?.stop(); });

// A blank page of the server's origin that runs its own client: every `track` gets a <video>
// (frames counted), every event is recorded.
async function app(room, name) {
  const page = await (await browser.newContext()).newPage();
  page.on('console', (m) => { if (process.env.DEBUG) console.log(`[${name}]`, m.text()); });
  await page.goto(`${server.base}/healthz`);
  await page.evaluate(async ({ room, token }) => {
    const { Room } = await import('/assets/aula.js');
    const client = new Room({ room, token });
    const app = window.app = { client, events: [], videos: {} };
    for (const type of ['joined', 'participant_joined', 'track_published', 'track_unpublished', 'chat', 'chat_ack', 'hands', 'error']) {
      client.addEventListener(type, (e) => app.events.push({ type, detail: e.detail }));
    }
    client.addEventListener('track', (e) => {
      const { track, participant, source } = e.detail;
      if (track.kind !== 'video') return;
      const key = `${participant}:${source}`;
      let v = app.videos[key];
      if (!v) { v = document.createElement('video'); v.muted = true; v.autoplay = true; v.srcObject = new MediaStream(); document.body.append(v); app.videos[key] = v; }
      if (!v.srcObject.getTracks().includes(track)) v.srcObject.addTrack(track);
    });
    await client.join({ camera: { width: 640 }, microphone: true });
  }, { room, token: server.token(room, name) });
  await waitFor(() => page.evaluate(() => window.app.events.some((e) => e.type === 'joined')), 20_000, `${name} joined`);
  return page;
}

// Frames decoded per received video, keyed `${participant}:${source}`.
const frames = (page) => page.evaluate(() => Object.fromEntries(Object.entries(window.app.videos).map(([k, v]) => [k, v.getVideoPlaybackQuality().totalVideoFrames])));

test('an application built on /assets/aula.js joins, decodes, chats, raises a hand and sees a screen share', async () => {
  const a = await app('lib', 'ana');
  const b = await app('lib', 'ben');
  const ids = {};
  for (const [name, page] of [['ana', a], ['ben', b]]) ids[name] = await page.evaluate(() => window.app.client.me.participant);
  await waitFor(async () => (await frames(a))[`${ids.ben}:camera`] > 10, 30_000, 'ana decodes ben\'s camera');
  await waitFor(async () => (await frames(b))[`${ids.ana}:camera`] > 10, 30_000, 'ben decodes ana\'s camera');

  const id = await a.evaluate(() => window.app.client.chat('hello from an app'));
  await waitFor(() => a.evaluate((id) => window.app.events.some((e) => e.type === 'chat_ack' && e.detail.id === id), id), 10_000, 'the chat acknowledged');
  await waitFor(() => b.evaluate(() => window.app.client.chatLog.some((m) => m.text === 'hello from an app' && m.identity === 'ana')), 10_000, 'ben gets the chat');

  await b.evaluate(() => window.app.client.raiseHand(true));
  await waitFor(() => a.evaluate((pid) => window.app.client.hands.some((h) => h.participant === pid), ids.ben), 10_000, 'ana sees ben\'s hand');

  // A screen share needs a user gesture: a click runs it.
  await a.evaluate(() => { const b = document.createElement('button'); b.id = 'share'; b.textContent = 'share'; b.onclick = () => window.app.client.shareScreen(); document.body.append(b); });
  await a.click('#share');
  await waitFor(async () => (await frames(b))[`${ids.ana}:screen`] > 5, 30_000, 'ben decodes ana\'s screen by its source');
  assert.ok([...(await b.evaluate(() => [...window.app.client.tracks.values()].map((t) => t.source)))].includes('screen'));
  await a.evaluate(() => window.app.client.stopScreen());
  await waitFor(() => b.evaluate(() => window.app.events.some((e) => e.type === 'track_unpublished' && e.detail.info?.source === 'screen')), 10_000, 'ben told the share ended');
  assert.deepEqual(await a.evaluate(() => window.app.events.filter((e) => e.type === 'error')), []);
  for (const p of [a, b]) await p.context().close();
});
