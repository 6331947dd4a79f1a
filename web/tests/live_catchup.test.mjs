// Issue 18, the live edge: a /watch viewer that fell behind (here: paused for 6 s, as a stall
// or a backgrounded tab does) drifts back to hls.js's latency target instead of staying behind
// by the stall. On the defaults: the default profile, no settings.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, watchState, api } from './helpers.mjs';

let browser, server;
before(async () => { browser = await launchBrowser(); server = await startServer(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('a live viewer that fell behind catches up with the live edge', async (t) => {
  const room = 'catchup';
  const admin = server.token('*', 'ops', ['--admin']);
  const viewer = server.token(room, 'viewer', []);
  const started = await api(server, 'POST', '/api/egress', admin, { room, source: 'test', seconds: 120 });
  assert.equal(started.status, 201, JSON.stringify(started.json));
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
  await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 60 && s.latency > 0 && s; }, 60_000, 'live playback');
  await sleep(5000); // settle at the target
  const settled = (await watchState(page)).latency;
  await page.evaluate(() => document.querySelector('video').pause());
  await sleep(6000);
  await page.evaluate(() => document.querySelector('video').play());
  const behind = await waitFor(async () => { const s = await watchState(page); return s.latency > settled + 4 && s.latency; }, 10_000, 'the viewer behind after the pause');
  let last;
  await waitFor(async () => { last = (await watchState(page)).latency; return last <= settled + 1; }, 90_000, `back near ${settled?.toFixed(2)} s`)
    .catch((e) => { throw new Error(`${e.message}: still ${last?.toFixed(2)} s behind (was ${behind.toFixed(2)} after the pause)`); });
  const [rate, jumps] = await page.evaluate(() => [document.querySelector('video').playbackRate, window.aulaWatch.catchUps || 0]);
  t.diagnostic(`latency: settled ${settled.toFixed(2)} s, after a 6 s pause ${behind.toFixed(2)} s, caught up to ${last.toFixed(2)} s (${jumps} jump); playback rate now ${rate}`);
  // The page keeps playing at the edge afterwards.
  const f0 = (await watchState(page)).frames;
  await waitFor(async () => (await watchState(page)).frames > f0 + 30, 20_000, 'decoding on after catching up');
  assert.deepEqual((await watchState(page)).errors.filter((e) => / fatal$/.test(e)), []);
});
