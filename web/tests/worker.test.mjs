// Out-of-process egress: `aula serve` queues the broadcast on a real redis-server and sends the
// publisher's RTP over UDP to whichever `aula egress worker` holds the job. The worker running
// it is SIGKILLed mid-broadcast: the other takes the job over, the playlists continue after a
// discontinuity, the viewer keeps playing, and the recording plays after Stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startRedis, startWorker, launchBrowser, waitFor, watchState, api } from './helpers.mjs';

test('a killed egress worker: another takes the job over and the broadcast continues', async (t) => {
  const redis = await startRedis();
  const server = await startServer({ AULA_EGRESS__REDIS: redis.url, AULA_EGRESS__LEASE_MS: '3000' });
  const workers = [await startWorker(server, 'w1'), await startWorker(server, 'w2')];
  const browser = await launchBrowser();
  t.after(async () => {
    if (process.env.AULA_TEST_LOGS) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(`${process.env.AULA_TEST_LOGS}/serve.log`, server.logs());
      for (const w of workers) writeFileSync(`${process.env.AULA_TEST_LOGS}/${w.name}.log`, w.logs());
      const { cpSync } = await import('node:fs');
      cpSync(server.dir, `${process.env.AULA_TEST_LOGS}/storage`, { recursive: true });
    }
    await browser.close();
    for (const w of workers) await w.stop();
    await server.stop();
    redis.stop();
  });
  const room = 'queued';
  const viewer = server.token(room, 'viewer', []);
  const admin = server.token('*', 'ops', ['--admin']);

  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?width=640&profile=test&token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');

  const b = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'live' && r; }, 40_000, 'broadcast live');
  const job = async () => (await api(server, 'GET', `/api/egress/${b.broadcast}`, admin)).json;
  const first = await job();
  assert.ok(['w1', 'w2'].includes(first.worker), `a worker runs the job: ${JSON.stringify(first)}`);
  const page = await (await browser.newContext()).newPage();
  const consoleLines = [];
  if (process.env.AULA_TEST_LOGS) page.on('console', (m) => consoleLines.push(`${Date.now()} ${m.text()}`));
  await page.goto(`${server.base}/watch/${room}?token=${viewer}${process.env.AULA_TEST_LOGS ? '&debug=1' : ''}`);
  await waitFor(async () => { const s = await watchState(page); return s.mode === 'live' && s.frames > 20 && s; }, 40_000, 'live playback');

  // The worker holding the job dies without a word.
  const victim = workers.find((w) => w.name === first.worker);
  const other = workers.find((w) => w.name !== first.worker);
  await waitFor(async () => (await job()).segments >= 3, 30_000, 'a few segments from the first worker');
  const killedAt = Date.now();
  victim.kill('SIGKILL');
  const taken = await waitFor(async () => {
    const j = await job();
    return j.worker === other.name && j.state === 'live' && j.segments >= 2 && j;
  }, 60_000, `${other.name} continuing the job`);
  t.diagnostic(`takeover: ${other.name} produced 2 segments ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill (lease 3 s); ${taken.resumed_segments} segments taken over`);
  assert.ok(taken.resumed_segments >= 3, `the new run continues the stored playlists: ${JSON.stringify(taken)}`);

  // The viewer keeps going across the discontinuity.
  const f0 = (await watchState(page)).frames;
  let seen;
  await waitFor(async () => { seen = await watchState(page); return seen.frames > f0 + 30; }, 40_000, `viewer decoding after the takeover (${f0} frames)`)
    .catch(async (e) => {
      if (process.env.AULA_TEST_LOGS) {
        const { cpSync } = await import('node:fs');
        cpSync(server.dir, `${process.env.AULA_TEST_LOGS}/at-failure`, { recursive: true });
        const { writeFileSync } = await import('node:fs');
        writeFileSync(`${process.env.AULA_TEST_LOGS}/console.log`, consoleLines.join('\n'));
      }
      throw new Error(`${e.message}; player: ${JSON.stringify(seen)}`);
    });

  await pub.evaluate(() => window.aulaBroadcast.stop());
  const ended = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'ended' && r; }, 60_000, 'broadcast ended');
  const done = await job();
  assert.equal(done.state, 'ended', JSON.stringify(done));
  assert.equal(done.worker, other.name);

  // The recording: one discontinuity where the first worker died, and it plays from the start.
  const vodMaster = await (await fetch(`${server.base}${ended.vod}`)).text();
  const media = vodMaster.split('\n').find((l) => l && !l.startsWith('#'));
  const base = `${server.base}${ended.vod.slice(0, ended.vod.lastIndexOf('/') + 1)}`;
  const playlist = await (await fetch(base + media)).text();
  assert.equal(playlist.split('#EXT-X-DISCONTINUITY\n').length - 1, 1, playlist);
  assert.match(playlist, /#EXT-X-ENDLIST/);
  const vod = await (await browser.newContext()).newPage();
  await vod.goto(`${server.base}/watch/${room}?token=${viewer}`);
  const v = await waitFor(async () => { const s = await watchState(vod); return s.mode === 'vod' && s.frames > 30 && s; }, 30_000, 'VOD playback');
  assert.ok(v.time < 8, `VOD plays from the start (at ${v.time})`);
});

// Issue 12: a worker takes a queued job only when it can encode at least the cheapest form of
// one (`egress.capacity_cores` against the calibrated cost); another worker with room takes it.
test('a worker without room for a job leaves it to one that has', async (t) => {
  const redis = await startRedis();
  const server = await startServer({ AULA_EGRESS__REDIS: redis.url, AULA_EGRESS__LEASE_MS: '3000' });
  const workers = [await startWorker(server, 'small', { AULA_EGRESS__CAPACITY_CORES: '0.1' })];
  const browser = await launchBrowser();
  t.after(async () => {
    await browser.close();
    for (const w of workers) await w.stop();
    await server.stop();
    redis.stop();
  });
  const room = 'crowdedworker';
  const viewer = server.token(room, 'viewer', []);
  const admin = server.token('*', 'ops', ['--admin']);
  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?width=640&profile=test&token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');
  // The node says so after 10 s without a taker; the small worker says why it took none.
  await waitFor(() => /no egress worker has taken the job yet/.test(server.logs()), 30_000, 'the job left in the queue');
  assert.match(workers[0].logs(), /no room for another job/);
  const b = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json;
  assert.notEqual(b.state, 'live', JSON.stringify(b));
  workers.push(await startWorker(server, 'big'));
  const live = await waitFor(async () => { const r = (await api(server, 'GET', `/api/broadcasts/${room}`, viewer)).json; return r.state === 'live' && r; }, 40_000, 'broadcast live with the big worker');
  const job = (await api(server, 'GET', `/api/egress/${live.broadcast}`, admin)).json;
  assert.equal(job.worker, 'big', JSON.stringify(job));
  assert.ok(job.estimated_cores > 0, JSON.stringify(job));
  await pub.evaluate(() => window.aulaBroadcast.stop());
});
