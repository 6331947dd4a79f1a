// A 30 s live egress job (test pattern -> transcoder -> LL-HLS -> storage) watched with hls.js
// in headless Chromium through the signed origin: the live master plays on two forced quality
// levels with audio, and after the end the VOD plays from the start. Once on the filesystem,
// once on a real S3 server (moto) on loopback.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, startMoto, watchState, api, s3Env } from './helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

for (const backend of ['fs', 's3']) {
  test(`live LL-HLS then VOD in hls.js (${backend} storage)`, async (t) => {
    let moto = null;
    let env = {};
    if (backend === 's3') {
      moto = await startMoto();
      env = s3Env(moto);
    }
    const server = await startServer(env);
    t.after(async () => { await server.stop(); moto?.stop(); });
    const room = `hls-${backend}`;
    const admin = server.token('*', 'ops', ['--admin']);
    const viewer = server.token(room, 'viewer', []);

    // Before anything is broadcast the room is idle; a viewer token is needed.
    assert.equal((await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json.state, 'idle');
    assert.equal((await api(server, 'GET', `/api/broadcasts/${room}`, 'nope')).status, 401);
    // Only admins start jobs; bad requests say what is wrong.
    assert.equal((await api(server, 'POST', '/api/egress', viewer, { room, source: 'test' })).status, 403);
    const bad = await api(server, 'POST', '/api/egress', admin, { room, source: 'test', profile: 'nope' });
    assert.equal(bad.status, 400);
    assert.match(bad.json, /unknown ladder profile "nope"/);

    const started = await api(server, 'POST', '/api/egress', admin, { room, source: 'test', profile: 'test', seconds: 30 });
    assert.equal(started.status, 201, JSON.stringify(started.json));
    const job = started.json.id;
    assert.equal((await api(server, 'POST', '/api/egress', admin, { room, source: 'test', profile: 'test' })).status, 409);

    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
    const live = await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 30_000, 'live playback');
    assert.deepEqual(live.levels, [144, 240, 360], 'the ladder, audio-only aside');

    // Force the lowest and the highest rung: each decodes at its own size.
    for (const [level, height] of [[0, 144], [2, 360]]) {
      await page.evaluate((l) => { window.aulaWatch.hls.currentLevel = l; }, level);
      let seen;
      const s = await waitFor(async () => { seen = await watchState(page); return seen.height === height && seen; }, 30_000, `level ${level} at ${height}p`)
        .catch((e) => { throw new Error(`${e.message}; player: ${JSON.stringify(seen)}`); });
      // Progress, not a rate: the machine may be slow.
      await waitFor(async () => (await watchState(page)).frames > s.frames + 10, 20_000, `level ${level} keeps decoding after ${s.frames} frames`);
    }
    const s = await watchState(page);
    assert.ok(s.audioBytes > 0, 'audio decoded');
    assert.ok(Number.isFinite(s.latency) && s.latency > 0 && s.latency < 10, `live latency ${s.latency}`);
    assert.deepEqual(s.errors, []);

    // Geography: a viewer in Nigeria (?geo= or the CDN's country header) gets the africa-3g
    // variant set of this ladder (rungs a 3G network sustains); Germany gets every rung.
    const heights = async (path) => [...(await (await fetch(`${server.base}${path}`)).text()).matchAll(/RESOLUTION=\d+x(\d+)/g)].map((m) => Number(m[1]));
    const ng = (await api(server, 'GET', `/api/broadcasts/${room}?geo=NG`, viewer)).json;
    assert.equal(ng.geo_profile, 'africa-3g');
    assert.match(ng.hls, /master-africa-3g\.m3u8$/);
    assert.deepEqual(await heights(ng.hls), [144, 240]);
    const byHeader = await fetch(`${server.base}/api/broadcasts/${room}`, { headers: { Authorization: `Bearer ${viewer}`, 'CF-IPCountry': 'ng' } });
    assert.match((await byHeader.json()).hls, /master-africa-3g\.m3u8$/);
    const de = (await api(server, 'GET', `/api/broadcasts/${room}?geo=DE`, viewer)).json;
    assert.equal(de.geo_profile, 'na-eu-broadband');
    assert.deepEqual(await heights(de.hls), [144, 240, 360]);

    // The origin refuses a missing or tampered token and serves byte ranges.
    const b = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json;
    assert.equal((await fetch(`${server.base}${b.hls.replace(/\/s\/[^/]+\//, '/s/x.1.a.b/')}`)).status, 403);
    const ranged = await fetch(`${server.base}${b.hls}`, { headers: { Range: 'bytes=0-6' } });
    assert.equal(ranged.status, 206);
    assert.equal(await ranged.text(), '#EXTM3U');

    // (30 s leaves room for the level switches above on a loaded machine: a level switched to
    // after the broadcast ended has nothing left to load.)
    // The job ends by itself after 30 s; the recording becomes VOD.
    const done = await waitFor(async () => { const j = (await api(server, 'GET', `/api/egress/${job}`, admin)).json; return j.state !== 'live' && j.state !== 'starting' && j; }, 40_000, 'job end');
    assert.equal(done.state, 'ended', JSON.stringify(done));
    assert.ok(done.segments >= 8, `segments ${done.segments}`);
    const metrics = await (await fetch(`${server.base}/metrics`)).text();
    assert.match(metrics, /aula_egress_jobs\{state="ended"\} 1/);

    const vod = await (await browser.newContext()).newPage();
    await vod.goto(`${server.base}/watch/${room}?token=${viewer}`);
    const v = await waitFor(async () => { const s = await watchState(vod); return s.mode === 'vod' && s.frames > 30 && s; }, 30_000, 'VOD playback');
    assert.ok(v.duration > 26 && v.duration < 34, `VOD duration ${v.duration}`);
    assert.ok(v.time < 8, `VOD plays from the start (at ${v.time})`);
    assert.equal(v.state, 'ended');
  });
}
