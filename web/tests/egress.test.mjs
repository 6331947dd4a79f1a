// The product's main job end to end: a creator goes live from /broadcast/{room} (headless
// Chromium, fake camera + mic, WHIP with simulcast); the egress job starts by itself, and a
// viewer plays /watch/{room} with hls.js: two forced quality levels decode, audio decodes, audio
// and video sit on the same timeline; after Stop the recording plays from the start. Once on
// the filesystem with the small test ladder, once on S3 (moto) with the africa-3g profile.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, launchFreezableBrowser, waitFor, sleep, startMoto, watchState, api, s3Env, avSkew } from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const cases = [
  { backend: 'fs', profile: 'test', heights: [144, 240, 360] },
  { backend: 's3', profile: 'africa-3g', heights: [144, 216, 288, 360] },
];

for (const c of cases) {
  test(`WHIP broadcast -> egress -> /watch (${c.backend}, ${c.profile})`, async (t) => {
    const moto = c.backend === 's3' ? await startMoto() : null;
    const server = await startServer(moto ? s3Env(moto) : {});
    t.after(async () => { await server.stop(); moto?.stop(); });
    const room = `live-${c.backend}`;
    const viewer = server.token(room, 'viewer', []);
    const admin = server.token('*', 'ops', ['--admin']);

    const pub = await (await browser.newContext()).newPage();
    await pub.goto(`${server.base}/broadcast/${room}?width=640&profile=${c.profile}&token=${server.token(room, 'creator', ['--publish'])}`);
    await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
    await pub.click('#golive');
    await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');
    const liveAt = Date.now();

    const b = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'live' && r; }, 30_000, 'broadcast live');
    assert.equal(b.profile, c.profile);
    const master = await (await fetch(`${server.base}${b.hls}`)).text();
    const listed = [...master.matchAll(/RESOLUTION=\d+x(\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(listed, c.heights, `the master lists the ${c.profile} rungs`);

    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
    const first = await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 40_000, 'live playback');
    assert.deepEqual(first.levels, c.heights);
    const top = c.heights.length - 1;
    for (const [level, height] of [[0, c.heights[0]], [top, c.heights[top]]]) {
      await page.evaluate((l) => { window.aulaWatch.hls.currentLevel = l; }, level);
      let seen;
      const s = await waitFor(async () => { seen = await watchState(page); return seen.height === height && seen; }, 30_000, `level ${level} at ${height}p`)
        .catch((e) => { throw new Error(`${e.message}; player: ${JSON.stringify(seen)}`); });
      // Progress, not a rate: the machine may be slow.
      await waitFor(async () => (await watchState(page)).frames > s.frames + 10, 20_000, `level ${level} keeps decoding after ${s.frames} frames`);
    }
    const s = await watchState(page);
    assert.ok(s.audioBytes > 0, 'audio decoded');
    const av = avSkew(s);
    assert.ok(av.segments >= 2, `audio and video segments compared: ${JSON.stringify(s.fragStarts)}`);
    assert.ok(av.skew < 0.1, `audio and video segments start ${av.skew.toFixed(3)} s apart: ${JSON.stringify(s.fragStarts)}`);
    assert.deepEqual(s.errors, []);
    t.diagnostic(`A/V segment skew ${(av.skew * 1000).toFixed(1)} ms over ${av.segments} segments; hls.js latency ${s.latency?.toFixed(2)} s`);

    // Keep the broadcast going to 30 s, then Stop: the job ends and the recording is VOD.
    await sleep(Math.max(0, 30_000 - (Date.now() - liveAt)));
    await pub.evaluate(() => window.aulaBroadcast.stop());
    const ended = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'ended' && r; }, 30_000, 'broadcast ended');
    const job = (await api(server, 'GET', `/api/egress/${ended.broadcast}`, admin)).json;
    assert.equal(job.state, 'ended', JSON.stringify(job));
    assert.ok(job.segments >= 10, `segments ${job.segments}`);
    // Figures, not a rate threshold (the machine is shared): the job's speed is its slowest
    // video rendition's, and each rendition has its own speed and lag.
    assert.ok(job.encoder_speed > 0, `encoder speed ${job.encoder_speed}`);
    const names = job.renditions.map((r) => r.rendition);
    assert.ok(names.includes('v0') && names.includes('audio'), JSON.stringify(job.renditions));
    const slowestVideo = Math.min(...job.renditions.filter((r) => r.rendition.startsWith('v')).map((r) => r.speed));
    assert.equal(job.encoder_speed, slowestVideo, JSON.stringify(job.renditions));
    t.diagnostic(`job: ${job.segments} segments, encoder speed ${job.encoder_speed.toFixed(3)}, lag ${job.lag_ms} ms, renditions ${JSON.stringify(job.renditions)}, ${job.bytes_stored} bytes stored`);

    const vod = await (await browser.newContext()).newPage();
    await vod.goto(`${server.base}/watch/${room}?token=${viewer}`);
    const v = await waitFor(async () => { const s = await watchState(vod); return s.mode === 'vod' && s.frames > 30 && s; }, 30_000, 'VOD playback');
    assert.ok(v.duration > 20, `VOD duration ${v.duration}`);
    assert.ok(v.time < 8, `VOD plays from the start (at ${v.time})`);
    assert.ok(v.audioBytes > 0, 'VOD audio');
  });
}

test('the publisher network drops for 5 s: the job survives and viewers keep playing', async (t) => {
  const server = await startServer();
  const frozen = await launchFreezableBrowser();
  t.after(async () => { await frozen.close(); await server.stop(); });
  const room = 'flaky';
  const viewer = server.token(room, 'viewer', []);
  const admin = server.token('*', 'ops', ['--admin']);
  const pub = await (await frozen.browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?width=640&profile=test&token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
  await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 40_000, 'live playback');
  const id = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json.broadcast;
  const before = (await api(server, 'GET', `/api/egress/${id}`, admin)).json;

  // Every process of the publisher's browser stops for 5 s: no packet leaves it.
  frozen.freeze();
  await sleep(5000);
  frozen.thaw();

  // The same job goes on: segments keep coming and the viewer keeps decoding.
  const after1 = await waitFor(async () => { const j = (await api(server, 'GET', `/api/egress/${id}`, admin)).json; return j.segments >= before.segments + 6 && j; }, 40_000, 'segments after the drop');
  assert.equal(after1.state, 'live', JSON.stringify(after1));
  const f0 = (await watchState(page)).frames;
  const s = await waitFor(async () => { const s = await watchState(page); return s.frames > f0 + 30 && s; }, 30_000, `viewer decoding after the drop (${f0} frames)`);
  assert.deepEqual(s.errors, []);
  t.diagnostic(`segments before the drop ${before.segments}, after ${after1.segments}; keyframe requests ${after1.keyframe_requests}`);
  await pub.evaluate(() => window.aulaBroadcast.stop());
  const done = await waitFor(async () => { const j = (await api(server, 'GET', `/api/egress/${id}`, admin)).json; return j.state !== 'live' && j; }, 30_000, 'job end');
  assert.equal(done.state, 'ended', JSON.stringify(done));
});
