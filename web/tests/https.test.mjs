// Issue 15: `aula serve` over HTTPS/WSS with a certificate from a throwaway CA made here (openssl),
// trusted by Chromium through its SPKI hash: the room page (camera, WSS signaling, media) and
// WHIP/WHEP work on https://, plain HTTP is refused on the TLS port, and a renewed certificate
// is picked up on SIGHUP without a restart.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import https from 'node:https';
import { startServer, launchBrowser, waitFor, tileFrames, makeCert as makeCertIn } from './helpers.mjs';

const dir = mkdtempSync(join(tmpdir(), 'aula-tls-'));
const makeCert = (name) => makeCertIn(dir, name);

// The certificate the server presents on a new connection: its issuer's CN.
function presentedIssuer(base, ca) {
  return new Promise((resolve, reject) => {
    const req = https.get(`${base}/healthz`, { ca, agent: false }, (res) => {
      const issuer = res.socket.getPeerCertificate().issuer?.CN;
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, issuer }));
    });
    req.on('error', reject);
  });
}

let server, browser, first;
before(async () => {
  first = makeCert('one');
  // The live files the server watches; a renewal replaces them.
  execFileSync('cp', [first.cert, join(dir, 'live.pem')]);
  execFileSync('cp', [first.key, join(dir, 'live.key')]);
  server = await startServer({ AULA_HTTP__TLS_CERT: join(dir, 'live.pem'), AULA_HTTP__TLS_KEY: join(dir, 'live.key') });
  browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${first.spki}`]);
});
after(async () => { await browser?.close(); await server?.stop(); rmSync(dir, { recursive: true, force: true }); });

test('the listener speaks TLS only, with the configured certificate', async () => {
  assert.match(server.base, /^https:\/\//);
  const r = await presentedIssuer(server.base, first.ca);
  assert.deepEqual(r, { status: 200, issuer: 'aula test CA one' });
  // Plain HTTP on the TLS port gets no HTTP answer.
  const plain = await fetch(server.base.replace('https', 'http') + '/healthz').then((x) => x.status, () => 'refused');
  assert.equal(plain, 'refused');
});

test('two room pages over https:// and wss:// decode each other, camera on', async () => {
  const pages = [];
  for (const n of ['ana', 'ben']) {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/room/secure?token=${server.token('secure', n)}`);
    pages.push(page);
  }
  for (const page of pages) {
    assert.equal(await page.evaluate(() => window.isSecureContext && location.protocol), 'https:');
    // Browsers negotiate HTTP/2 over TLS (ALPN h2); the room's WebSocket goes over it by
    // RFC 8441 extended CONNECT, or over HTTP/1.1 where a browser does not do that.
    assert.equal(await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol), 'h2');
    await waitFor(async () => { const v = Object.values(await tileFrames(page)); return v.length === 1 && v[0].frames > 20; }, 30_000, 'decoding the other over https');
  }
});

test('HTTP/2 and HTTP/1.1 are both served over TLS', async () => {
  const http2 = await import('node:http2');
  const h2 = http2.connect(server.base, { ca: first.ca });
  const status = await new Promise((resolve, reject) => {
    const req = h2.request({ ':path': '/healthz' });
    req.on('response', (h) => resolve(h[':status']));
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 200);
  assert.equal(h2.alpnProtocol, 'h2');
  // An extended CONNECT WebSocket (RFC 8441) is accepted: the server advertised it, and a
  // document socket opens over the HTTP/2 connection (200, then y-sync step 1 arrives).
  assert.equal(h2.remoteSettings.enableConnectProtocol, true);
  const ws = h2.request({
    ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https',
    ':path': `/collab/secure?token=${server.token('secure', 'h2')}`,
    'sec-websocket-version': '13',
  });
  const [wsStatus, firstBytes] = await new Promise((resolve, reject) => {
    let st;
    ws.on('response', (h) => { st = h[':status']; });
    ws.on('data', (d) => resolve([st, d.length]));
    ws.on('error', reject);
    setTimeout(() => resolve([st, 0]), 5000);
  });
  assert.equal(wsStatus, 200);
  assert.ok(firstBytes > 0, 'the server greets over the HTTP/2 WebSocket');
  ws.close();
  h2.close();
  // A client that offers only HTTP/1.1 still gets it.
  const r = await presentedIssuer(server.base, first.ca);
  assert.equal(r.status, 200);
});

test('WHIP and WHEP over https://', async () => {
  const room = 'securecast';
  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?width=640&token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'camera preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live' || window.aulaBroadcast.error), 20_000, 'publisher live');
  const viewer = await (await browser.newContext()).newPage();
  await viewer.goto(`${server.base}/live/${room}?token=${server.token(room, 'viewer', [])}`);
  await waitFor(() => viewer.evaluate(() => window.aulaLive.video?.getVideoPlaybackQuality().totalVideoFrames > 20), 30_000, 'WHEP viewer decoding');
  await pub.evaluate(() => window.aulaBroadcast.stop());
});

test('a renewed certificate is served after SIGHUP, without a restart', async () => {
  const second = makeCert('two');
  // Written aside and renamed, as certbot and friends do.
  execFileSync('cp', [second.cert, join(dir, 'live.pem.new')]);
  execFileSync('cp', [second.key, join(dir, 'live.key.new')]);
  renameSync(join(dir, 'live.key.new'), join(dir, 'live.key'));
  renameSync(join(dir, 'live.pem.new'), join(dir, 'live.pem'));
  server.proc.kill('SIGHUP');
  await waitFor(async () => (await presentedIssuer(server.base, second.ca).catch(() => ({}))).issuer === 'aula test CA two', 15_000, 'the new certificate');
  assert.match(server.logs(), /TLS certificate reloaded/);
});
