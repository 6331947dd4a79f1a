// A server behind 1:1 NAT, as `deploy/aula.toml` sets it up: media bound to 0.0.0.0 and
// `media.public_ip` announced. str0m takes STUN only on an address a candidate names; the SFU
// core once passed it the socket's own address (0.0.0.0), so every binding request was dropped
// and no browser ever connected. The server runs in a network namespace this test creates,
// with one address (so replies from the 0.0.0.0 socket leave from it, as on a single-homed
// host behind NAT), and Chromium outside it.
import { test, after, before } from 'node:test';
import { startServer, launchBrowser, waitFor, tileFrames, netnsPair } from './helpers.mjs';

let ns, server, browser;
before(async () => {
  ns = netnsPair(`aulanat${process.pid % 10000}`);
  server = await startServer({
    AULA_HTTP__BIND: `${ns.inside}:0`,
    AULA_MEDIA__BIND: '0.0.0.0:0',
    AULA_MEDIA__PUBLIC_IP: ns.inside,
    AULA_MEDIA__TCP: 'false',
    AULA_HLS__AUTO_EGRESS: 'false',
  }, { netns: ns.name });
  // Not localhost: the camera needs the origin treated as secure.
  browser = await launchBrowser([`--unsafely-treat-insecure-origin-as-secure=${server.base}`]);
});
after(async () => { await browser?.close(); await server?.stop(); ns?.remove(); });

test('media bound to 0.0.0.0 with media.public_ip set: two room pages decode each other', async () => {
  const pages = [];
  try {
    for (const n of ['ana', 'ben']) {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${server.base}/room/nat?token=${server.token('nat', n)}`);
      pages.push(page);
    }
    for (const [i, page] of pages.entries()) {
      await waitFor(async () => Object.values(await tileFrames(page)).some((t) => t.frames > 30), 30_000, `page ${i} decoding through the 0.0.0.0 socket`);
    }
  } finally {
    for (const p of pages) await p.context().close();
  }
});
