// A room client whose signaling WebSocket drops resumes the same participant; media goes on.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, tileFrames, tcpProxy, upgradeStatus } from './helpers.mjs';

let server, browser, proxy;
before(async () => { server = await startServer(); browser = await launchBrowser(); });
// The proxy is closed here too: a failed test must not leave a listening socket keeping node alive.
after(async () => { proxy?.close(); await browser?.close(); await server?.stop(); });

async function join(name, base = server.base) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${base}/room/drop?token=${server.token('drop', name)}`);
  return page;
}

const decodingOne = (page) => waitFor(async () => {
  const v = Object.values(await tileFrames(page));
  return v.length === 1 && v[0].frames > 0;
}, 30_000, 'decoding the other participant');

test('a dropped signaling socket resumes; a long drop removes the participant', async () => {
  proxy = await tcpProxy(server.base);
  const ana = await join('ana');
  const ben = await join('ben', proxy.base);
  await decodingOne(ana);
  await decodingOne(ben);

  // Ben's signaling path drops for 3 s (connections reset, no close handshake).
  proxy.cut();
  await waitFor(() => ben.evaluate(() => document.querySelector('#status').textContent === 'reconnecting'), 10_000, 'reconnecting');
  await sleep(2000);
  proxy.restore();
  await waitFor(() => ben.evaluate(() => window.aulaRoom.resumed > 0), 15_000, 'resumed');
  assert.deepEqual(await ana.evaluate(() => window.aulaRoom.left), [], 'ana never saw ben leave');
  // Both still decode each other after the resume and its ICE restart (polled, not timed: the
  // machine is shared and the restart needs a keyframe).
  const a1 = await tileFrames(ana);
  const b1 = await tileFrames(ben);
  for (const [page, before, who] of [[ana, a1, 'ana'], [ben, b1, 'ben']]) {
    const k = Object.keys(before)[0];
    await waitFor(async () => {
      const now = await tileFrames(page);
      return now[k] && now[k].frames > before[k].frames + 30;
    }, 20_000, `${who} keeps decoding after the resume`);
  }

  // A resume key only works for its own identity and room.
  const key = await ben.evaluate(() => window.aulaRoom.resumeKey || null);
  const status = await upgradeStatus(`${server.base}/rtc/drop?token=${server.token('drop', 'mallory')}&resume=${key || 'x'}`);
  assert.equal(status, 404);

  // Signaling gone past the grace period (media still flowing): ben is removed, ana is told.
  const t0 = Date.now();
  proxy.cut();
  await waitFor(() => ana.evaluate(() => window.aulaRoom.left.length === 1), 30_000, 'ben removed');
  assert.ok(Date.now() - t0 >= 9000, `removed after the grace period, not before (${Date.now() - t0} ms)`);
  proxy.close();
});
