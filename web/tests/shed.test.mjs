// Issue 12, shed, don't stall: the default broadcast (Chromium's 1280x720 camera, the `global`
// ladder) on a server that has one core, and a CPU-heavy neighbour on that core from the middle
// of the broadcast. The job sheds its most expensive rungs (status, metrics, the master stops
// listing them), an hls.js viewer keeps decoding with no stall longer than a segment, and the
// recording is valid: ffprobe reads every rendition the VOD master lists.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { startServer, launchBrowser, waitFor, sleep, watchState, api } from './helpers.mjs';

// The browsers on core 0; the server, and later the neighbour, on core 1. Pinning both to one
// core makes the squeeze the same on every machine (unpinned, a machine whose scheduler gave the
// server the other core shed nothing: CI failed so).
const SERVER_CORE = '1';
let browser, server, hog;
before(async () => {
  browser = await launchBrowser([], { cpus: '0' });
  server = await startServer({}, { cpus: SERVER_CORE });
});
after(async () => {
  hog?.kill();
  if (process.env.AULA_TEST_LOGS) (await import('node:fs')).writeFileSync(`${process.env.AULA_TEST_LOGS}/shed-serve.log`, server.logs());
  await browser?.close(); await server?.stop();
});

// Eight: since each ladder size is scaled from the next size within 3x (issue 12) the default
// job needs less of the core, and four busy threads no longer squeezed it (no shed in 90 s,
// speed 1.00, twice); eight shed v3, v2, v1 within 10-30 s.
const HOG_THREADS = Number(process.env.AULA_TEST_HOG_THREADS || 8);

test('a job short of CPU sheds its top rungs and the viewer plays on without a stall', async (t) => {
  const room = 'crowded';
  const viewer = server.token(room, 'viewer', []);
  const admin = server.token('*', 'ops', ['--admin']);
  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');
  const b = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'live' && r; }, 40_000, 'broadcast live');
  const job = async () => (await api(server, 'GET', `/api/egress/${b.broadcast}`, admin)).json;

  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/watch/${room}?token=${viewer}`);
  await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 60_000, 'live playback');

  const before = await job();
  t.diagnostic(`admitted ${before.rungs.join(',')} on ${before.estimated_cores} cores; encoder speed ${before.encoder_speed}`);
  // The neighbour: busy threads on the server's core for the rest of the broadcast (the
  // scheduler shares a core by runnable thread, and the server runs several).
  hog = spawn('taskset', ['-c', SERVER_CORE, process.execPath, '-e', `const { Worker } = require('node:worker_threads'); for (let i = 1; i < ${HOG_THREADS}; i++) new Worker('for (;;) {}', { eval: true }); for (;;) {}`], { stdio: 'ignore' });
  const samples = [];
  const started = Date.now();
  let shed;
  while (Date.now() - started < 90_000) {
    const s = await watchState(page);
    const j = await job();
    samples.push({ at: Date.now(), frames: s.frames, level: s.level, latency: s.latency, lags: j.renditions.map((r) => `${r.rendition}:${r.lag_ms}`).join(' '), shed: j.shed_rungs.join(',') });
    if (!shed && j.shed_rungs.length > 0) shed = { at: Date.now(), job: j };
    // Watch a while after the first shed: the player must ride it out.
    if (shed && Date.now() - shed.at > 25_000) break;
    await sleep(250);
  }
  hog.kill();
  hog = null;
  const timeline = samples.filter((_, i) => i % 4 === 0).map((s) => `${((s.at - samples[0].at) / 1000).toFixed(1)}s f=${s.frames} L${s.level} lat=${s.latency?.toFixed(1)} shed=${s.shed} [${s.lags}]`);
  assert.ok(shed, `no rung shed in 90 s with the neighbour: ${JSON.stringify(await job())}\n${timeline.join('\n')}`);
  const j = await job();
  t.diagnostic(`shed ${j.shed_rungs.join(',')} of ${j.rungs.join(',')}; changes ${JSON.stringify(j.rung_changes)}; encoder speed ${j.encoder_speed}, lag ${j.lag_ms} ms`);
  assert.ok(j.rung_changes.length >= 1 && j.rung_changes[0].change === 'shed' && /encoder behind live/.test(j.rung_changes[0].reason), JSON.stringify(j.rung_changes));
  assert.ok(!j.shed_rungs.includes('v0'), 'the lowest rung stays');

  // The master offers only what is encoded.
  const master = await (await fetch(`${server.base}${b.hls}`)).text();
  for (const r of j.shed_rungs) assert.ok(!master.includes(`${r}.m3u8`), `${r} still in the master:\n${master}`);
  assert.ok(master.includes('v0.m3u8'), master);
  // Its playlist goes on with gaps, so players that loaded it earlier move down. The rung shed
  // first (25 s ago): one shed a moment ago may not have reached its gaps yet.
  const first = j.rung_changes[0].rendition;
  const shedList = await (await fetch(`${server.base}${b.hls.replace('master.m3u8', `${first}.m3u8`)}`)).text();
  assert.ok(shedList.includes('#EXT-X-GAP'), `${first}, shed at ${j.rung_changes[0].at_s} s:\n${shedList}`);

  // The viewer never stalled longer than a segment (2 s) once it played.
  let longest = 0;
  let last = samples[0];
  for (const s of samples.slice(1)) {
    if (s.frames > last.frames) { longest = Math.max(longest, s.at - last.at); last = s; }
  }
  longest = Math.max(longest, samples[samples.length - 1].at - last.at);
  t.diagnostic(`viewer: ${samples[samples.length - 1].frames - samples[0].frames} frames over ${((samples[samples.length - 1].at - samples[0].at) / 1000).toFixed(1)} s, longest without a new frame ${longest} ms, levels ${[...new Set(samples.map((s) => s.level))].join(',')}`);
  assert.ok(longest <= 2000, `the viewer stalled ${longest} ms:\n${timeline.join('\n')}`);
  assert.deepEqual((await watchState(page)).errors, []);
  const metrics = await (await fetch(`${server.base}/metrics`)).text();
  assert.match(metrics, /aula_egress_rung_changes_total\{change="shed"\} [1-9]/);

  // The recording: ffprobe reads every rendition the VOD master lists.
  await pub.evaluate(() => window.aulaBroadcast.stop());
  await waitFor(async () => ['ended', 'failed'].includes((await job()).state), 60_000, 'job ended');
  const ended = await job();
  assert.equal(ended.state, 'ended', ended.error);
  const dir = join(server.dir, 'hls', room, b.broadcast);
  const vod = (await import('node:fs')).readFileSync(join(dir, 'vod.m3u8'), 'utf8');
  const listed = [...vod.matchAll(/^(v\d+|audio)-vod\.m3u8$/gm)].map((m) => m[1]);
  assert.ok(listed.includes('v0'), vod);
  for (const r of listed) {
    const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,width,height', '-of', 'json', join(dir, `${r}-vod.m3u8`)]).toString();
    const streams = JSON.parse(out).streams;
    assert.ok(streams.length >= 1 && streams[0].codec_name, `${r}: ${out}`);
  }
  t.diagnostic(`VOD master lists ${listed.join(',')}; ffprobe read each`);
});
