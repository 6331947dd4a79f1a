// Issue 12: a creator's first broadcast on the defaults (no profile, no settings, the page's own
// 1280x720 camera) plays in hls.js on its top and bottom levels, and the master lists no rung
// above the source.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, watchState, api } from './helpers.mjs';

let browser, server;
before(async () => { browser = await launchBrowser(); server = await startServer(); });
after(async () => {
  if (process.env.AULA_TEST_LOGS) (await import('node:fs')).writeFileSync(`${process.env.AULA_TEST_LOGS}/default-broadcast-serve.log`, server.logs());
  await browser?.close(); await server?.stop();
});

test('the default broadcast plays: never above its 720p source, top and bottom levels decode', async (t) => {
  const room = 'first';
  const viewer = server.token(room, 'viewer', []);
  const admin = server.token('*', 'ops', ['--admin']);
  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  assert.equal(await pub.evaluate(() => document.querySelector('#preview').videoHeight), 720, 'the page captures 720p');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');

  const b = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'live' && r; }, 40_000, 'broadcast live');
  assert.equal(b.profile, 'global', 'the default profile');
  const job = (await api(server, 'GET', `/api/egress/${b.broadcast}`, admin)).json;
  t.diagnostic(`job: source ${job.source_size}, rungs ${job.rungs.join(',')}; skipped ${job.skipped_rungs.join('; ')}`);
  assert.equal(job.source_size, '1280x720');
  // 1080p is above the source; a rung may also be left out for this machine's encode capacity
  // (measured at its first start: `aula ladder calibrate`), never for anything else.
  assert.ok(job.skipped_rungs.some((s) => /^1080p: above the 1280x720 source/.test(s)), JSON.stringify(job.skipped_rungs));
  assert.ok(job.skipped_rungs.every((s) => /above the 1280x720 source|over the node's encode capacity/.test(s)), JSON.stringify(job.skipped_rungs));
  const master = await (await fetch(`${server.base}${b.hls}`)).text();
  const heights = [...master.matchAll(/RESOLUTION=\d+x(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(heights.length > 0 && Math.max(...heights) <= 720, `the master lists nothing above 720p: ${heights}`);

  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
  const first = await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 60_000, 'live playback');
  const levels = first.levels;
  for (const level of [0, levels.length - 1]) {
    await page.evaluate((l) => { window.aulaWatch.hls.currentLevel = l; }, level);
    let seen;
    const s = await waitFor(async () => { seen = await watchState(page); return seen.height === levels[level] && seen; }, 40_000, `level ${level} at ${levels[level]}p`)
      .catch((e) => { throw new Error(`${e.message}; player: ${JSON.stringify(seen)}`); });
    await waitFor(async () => (await watchState(page)).frames > s.frames + 10, 30_000, `level ${level} keeps decoding after ${s.frames} frames`);
  }
  const s = await watchState(page);
  assert.deepEqual(s.errors, []);
  const after = (await api(server, 'GET', `/api/egress/${b.broadcast}`, admin)).json;
  t.diagnostic(`encoder speed ${after.encoder_speed}, lag ${after.lag_ms} ms; renditions ${JSON.stringify(after.renditions)}; shed ${after.shed_rungs.join(',') || 'none'}; hls.js latency ${s.latency?.toFixed(2)} s`);
  // A machine short of CPU sheds rungs (shed.test.mjs); those have no figures meanwhile.
  assert.equal(after.renditions.length, after.rungs.length - after.shed_rungs.length + 1, 'a speed and a lag for each encoded rung and the audio');
  await pub.evaluate(() => window.aulaBroadcast.stop());
});
