// Glass-to-glass latency (issue 18): a Chromium publisher goes live on /broadcast/{room} with a
// 1280x720 canvas in place of its camera, drawing the wall clock into every frame as a row of
// black and white blocks; a second Chromium decodes the clock from each frame it displays
// (requestVideoFrameCallback), once through hls.js on /watch (LL-HLS) and once over WHEP on
// /live. Same machine, same clock. Prints capture-to-display p50/p95 per profile, and the first
// and last 10 s apart (steady or growing).
//
//   node bench/glass_to_glass.mjs [--seconds 40] [--profiles default,latam-mobile,...]
//
// AULA_BIN picks the server binary (default target/debug/aula; a release build measures what
// users run: `cargo build --release -p aula` and AULA_BIN=target/release/aula).
import { startServer, launchBrowser, waitFor } from '../web/tests/helpers.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const SECONDS = Number(arg('seconds', '40'));
const PROFILES = arg('profiles', 'default,global,na-eu-broadband,latam-mobile,south-asia-3g,africa-3g').split(',');

// The clock code: 32 bits of (ms since the run started), most significant first, as blocks of
// 40x40 px across the top of a 1280x720 frame; a white block is 1. 40 px at 1280 survives
// scaling to 234p (13 px) and the encoders.
const BITS = 32;
const BLOCK = 40;

// Replaces getUserMedia in the publisher page with a canvas that carries the clock.
function publisherInit({ bits, block, t0 }) {
  navigator.mediaDevices.getUserMedia = async () => {
    const c = document.createElement('canvas');
    c.width = 1280; c.height = 720;
    const g = c.getContext('2d');
    const draw = () => {
      const v = Date.now() - t0;
      g.fillStyle = '#2a5d8f'; g.fillRect(0, 0, 1280, 720);
      // Something that moves, so the encoders have work as with a camera.
      const x = (v / 5) % 1280;
      g.fillStyle = '#e0c030'; g.fillRect(x, 200, 160, 400);
      for (let i = 0; i < bits; i++) {
        g.fillStyle = (v >>> (bits - 1 - i)) & 1 ? '#fff' : '#000';
        g.fillRect(i * block, 0, block, block);
      }
      requestAnimationFrame(draw);
    };
    draw();
    const stream = c.captureStream(30);
    // The page asks for audio too: a silent tone keeps the broadcast's audio track.
    const ac = new AudioContext();
    const osc = ac.createOscillator();
    const dst = ac.createMediaStreamDestination();
    osc.connect(dst); osc.start();
    stream.addTrack(dst.stream.getAudioTracks()[0]);
    return stream;
  };
}

// In the viewer: reads the clock from each displayed frame of `video` into window.glass.
function viewerInit({ bits, block, t0 }) {
  window.glass = [];
  const start = () => {
    const v = document.querySelector('#video');
    if (!v || !v.requestVideoFrameCallback) { setTimeout(start, 100); return; }
    const c = document.createElement('canvas');
    const g = c.getContext('2d', { willReadFrequently: true });
    const onFrame = (now, meta) => {
      if (v.videoWidth) {
        c.width = v.videoWidth; c.height = v.videoHeight;
        g.drawImage(v, 0, 0);
        const s = v.videoWidth / 1280;
        let code = 0;
        for (let i = 0; i < bits; i++) {
          const px = g.getImageData(Math.floor((i + 0.5) * block * s), Math.floor(block * s / 2), 1, 1).data;
          code = code * 2 + (px[0] + px[1] + px[2] > 384 ? 1 : 0);
        }
        const shown = Date.now() - t0 + (meta.expectedDisplayTime - now);
        const lat = shown - code;
        // A misread code (a block caught mid-transition) lands far outside any latency.
        if (lat > 0 && lat < 120_000) window.glass.push([Date.now(), lat, v.videoHeight]);
      }
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  };
  start();
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};
const fmt = (ms) => (Number.isFinite(ms) ? (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`) : '-');

async function measure(browser, url, init, seconds) {
  const page = await (await browser.newContext()).newPage();
  await page.addInitScript(viewerInit, init);
  await page.goto(url);
  await waitFor(() => page.evaluate(() => window.glass.length > 30), 90_000, `frames at ${url}`);
  await page.waitForTimeout(seconds * 1000);
  const samples = await page.evaluate(() => window.glass);
  await page.close();
  const t1 = samples[0][0];
  const tn = samples[samples.length - 1][0];
  const lat = samples.map((s) => s[1]);
  const first = samples.filter((s) => s[0] - t1 < 10_000).map((s) => s[1]);
  const last = samples.filter((s) => tn - s[0] < 10_000).map((s) => s[1]);
  return { n: samples.length, p50: pct(lat, 0.5), p95: pct(lat, 0.95), first: pct(first, 0.5), last: pct(last, 0.5), heights: [...new Set(samples.map((s) => s[2]))] };
}

const server = await startServer();
const browser = await launchBrowser(['--autoplay-policy=no-user-gesture-required']);
const t0 = Date.now();
const init = { bits: BITS, block: BLOCK, t0 };
const rows = [];
try {
  for (const profile of PROFILES) {
    const room = `glass-${profile}`;
    const pub = await (await browser.newContext()).newPage();
    await pub.addInitScript(publisherInit, init);
    const q = profile === 'default' ? '' : `&profile=${profile}`;
    await pub.goto(`${server.base}/broadcast/${room}?token=${server.token(room, 'creator', ['--publish'])}${q}`);
    await pub.click('#golive');
    await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live'), 30_000, 'publisher live');
    const viewer = server.token(room, 'viewer', []);
    const hls = await measure(browser, `${server.base}/watch/${room}?token=${viewer}`, init, SECONDS);
    const whep = await measure(browser, `${server.base}/live/${room}?token=${viewer}`, init, Math.min(SECONDS, 20));
    rows.push({ profile, hls, whep });
    console.log(`${profile.padEnd(16)} LL-HLS p50 ${fmt(hls.p50)} p95 ${fmt(hls.p95)} (first 10 s ${fmt(hls.first)}, last 10 s ${fmt(hls.last)}, ${hls.n} frames at ${hls.heights.join('/')}p) | WHEP p50 ${fmt(whep.p50)} p95 ${fmt(whep.p95)}`);
    await pub.evaluate(() => window.aulaBroadcast.stop());
    await pub.close();
  }
} finally {
  await browser.close();
  await server.stop();
}
console.log('\n| profile | LL-HLS p50 / p95 | first / last 10 s (p50) | WHEP p50 / p95 |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.profile} | ${fmt(r.hls.p50)} / ${fmt(r.hls.p95)} | ${fmt(r.hls.first)} / ${fmt(r.hls.last)} | ${fmt(r.whep.p50)} / ${fmt(r.whep.p95)} |`);
