// A student who refuses the camera joins the room page as a viewer: Chromium then hides its
// host addresses behind mDNS (`….local`) candidates. The viewer keeps decoding the tutor through
// five ICE restarts on the same signaling connection (issue 15).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, tileFrames } from './helpers.mjs';

let server, browser, refusing;
before(async () => { server = await startServer(); browser = await launchBrowser(); refusing = await launchBrowser([], { refuseCamera: true }); });
after(async () => { await refusing?.close(); await browser?.close(); await server?.stop(); });

const ufrag = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp || '')?.[1];

test('a viewer without camera permission survives five ICE restarts with mDNS candidates', async () => {
  const room = 'restarts';
  const tutor = await (await browser.newContext()).newPage();
  await tutor.goto(`${server.base}/room/${room}?token=${server.token(room, 'tutor')}`);
  // The camera prompt refused, as a student may (this browser accepts no prompt).
  const viewer = await (await refusing.newContext()).newPage();
  await viewer.goto(`${server.base}/room/${room}?token=${server.token(room, 'sam')}`);
  const frames = async () => Object.values(await tileFrames(viewer)).reduce((n, t) => n + t.frames, 0);
  await waitFor(async () => (await frames()) > 0, 30_000, 'the viewer decodes the tutor');
  assert.equal(await viewer.evaluate(() => window.aulaRoom.viewer), true, 'joined as a viewer');
  assert.equal(await viewer.evaluate(() => document.querySelector('#camera').hidden), true, 'no camera button');

  for (let i = 1; i <= 5; i++) {
    const before = await viewer.evaluate(() => ({ local: window.aulaRoom.pc.localDescription.sdp, remote: window.aulaRoom.pc.remoteDescription.sdp }));
    const f0 = await frames();
    await viewer.evaluate(() => window.aulaRoom.restartIce());
    // New credentials on both sides, connected again, and frames still coming.
    await waitFor(() => viewer.evaluate(([l, r]) => {
      const pc = window.aulaRoom.pc;
      const u = (sdp) => /a=ice-ufrag:(\S+)/.exec(sdp || '')?.[1];
      return pc.signalingState === 'stable' && u(pc.localDescription.sdp) !== l && u(pc.remoteDescription.sdp) !== r
        && ['connected', 'completed'].includes(pc.iceConnectionState);
    }, [ufrag(before.local), ufrag(before.remote)]), 20_000, `restart ${i} completes`);
    await waitFor(async () => (await frames()) > f0 + 30, 20_000, `the viewer decodes after restart ${i}`);
  }

  const seen = await viewer.evaluate(() => ({ candidates: window.aulaRoom.candidates, errors: window.aulaRoom.errors, states: window.aulaRoom.iceStates }));
  const hosts = seen.candidates.filter((c) => / typ host/.test(c));
  assert.ok(hosts.length > 0, `host candidates were trickled: ${JSON.stringify(seen.candidates)}`);
  assert.ok(hosts.every((c) => /\.local /.test(c)), `every host candidate is an mDNS name: ${JSON.stringify(hosts)}`);
  assert.deepEqual(seen.errors, [], 'no signaling errors');
  assert.ok(!seen.states.includes('failed'), `ICE never failed: ${seen.states.join(' ')}`);
  // Still one seat each: the restarts did not add participants.
  const r = await fetch(`${server.base}/api/rooms/${room}`, { headers: { Authorization: `Bearer ${server.token(room, 'sam')}` } });
  const info = await r.json();
  assert.deepEqual(info.participants.map((p) => p.identity).sort(), ['sam', 'tutor']);
  // The same signaling connection carries the room service API's data to the page.
  const sent = await fetch(`${server.base}/api/rooms/${room}/data`, {
    method: 'POST', headers: { Authorization: `Bearer ${server.token(room, 'backend', ['--admin'])}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ payload: 'quiz starts', topic: 'class', identities: ['sam'] }),
  });
  assert.deepEqual(await sent.json(), { delivered: 1 });
  await waitFor(() => viewer.evaluate(() => window.aulaRoom.data.some((d) => d.payload === 'quiz starts' && d.from === 'backend')), 5000, 'the page got the data message');
  assert.doesNotMatch(server.logs(), /panicked/);
});
