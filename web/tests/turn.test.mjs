// Issue 15: clients that can only reach a TURN relay. A real coturn (Debian's `turnserver`,
// started here with use-auth-secret, over UDP and over TLS with a certificate from a throwaway
// CA that Chromium trusts by its SPKI) relays for Chromium room pages forced to relay-only ICE;
// aula mints the credentials and hands them out in `joined`. Forged and expired credentials are
// refused by coturn itself, over UDP and over TLS.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { OPUS_OFFER, startServer, launchBrowser, waitFor, tileFrames, makeCert, selectedLocalCandidate } from './helpers.mjs';

const SECRET = 'turn-test-secret-0123456789';
let server, browser, turn, port, tlsPort, cert, dir;

async function freeUdpPort() {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  s.close();
  return p;
}

async function freeTcpPort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise((r) => s.close(r));
  return p;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aula-turn-'));
  port = await freeUdpPort();
  tlsPort = await freeTcpPort();
  cert = makeCert(dir, 'turn');
  let log = '';
  turn = spawn('turnserver', [
    '-n', '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', `--listening-port=${port}`,
    `--tls-listening-port=${tlsPort}`, `--cert=${cert.cert}`, `--pkey=${cert.key}`,
    '--use-auth-secret', `--static-auth-secret=${SECRET}`, '--realm=aula.test',
    // The SFU is on loopback here; in production allow only the SFU's own address (README).
    '--allow-loopback-peers', '--no-cli', '--no-dtls', '--no-multicast-peers',
    '--min-port=49160', '--max-port=49200', `--pidfile=${join(dir, 'turn.pid')}`, '--log-file=stdout', '--simple-log',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  turn.stdout.on('data', (d) => { log += d; });
  turn.stderr.on('data', (d) => { log += d; });
  turn.logs = () => log;
  await waitFor(() => /listener opened on|IPv4\. UDP listener|relay 127\.0\.0\.1/i.test(log), 15_000, 'coturn listening').catch((e) => { throw new Error(`${e.message}\n${log}`); });
  server = await startServer({ AULA_TURN__URLS: `["turn:127.0.0.1:${port}?transport=udp"]`, AULA_TURN__SECRET: SECRET, AULA_TURN__TTL_S: '600' });
  // Chromium checks a turns: server's certificate like a web page's: trust the test CA's leaf.
  browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${cert.spki}`]);
});
after(async () => {
  await browser?.close(); await server?.stop(); turn?.kill();
  rmSync(dir, { recursive: true, force: true });
});

test('two relay-only room pages meet through coturn with credentials aula minted', async () => {
  const pages = [];
  for (const n of ['ana', 'ben']) {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/room/relayed?ice=relay&token=${server.token('relayed', n)}`);
    pages.push(page);
  }
  for (const page of pages) {
    await waitFor(async () => { const v = Object.values(await tileFrames(page)); return v.length === 1 && v[0].frames > 20; }, 40_000, 'decoding through the relay');
    // Every candidate pair that carried media was a relayed one.
    assert.equal((await selectedLocalCandidate(page, 'aulaRoom'))?.candidateType, 'relay');
  }
  const joined = await pages[0].evaluate(() => window.aulaRoom.pc.getConfiguration().iceServers);
  assert.match(joined[0].username, /^\d+:ana$/);
});

// What coturn says to a credential: gather relay candidates with it in a fresh page.
async function relayCandidates(username, credential, url = `turn:127.0.0.1:${port}?transport=udp`) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/healthz`);
  const r = await page.evaluate(async ({ url, username, credential }) => {
    const pc = new RTCPeerConnection({ iceServers: [{ urls: url, username, credential }], iceTransportPolicy: 'relay' });
    const found = []; const errors = [];
    pc.onicecandidate = (e) => { if (e.candidate) found.push(e.candidate.type); };
    pc.onicecandidateerror = (e) => errors.push(e.errorCode);
    pc.createDataChannel('x');
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => { const t = setTimeout(res, 8000); pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') { clearTimeout(t); res(); } }; });
    pc.close();
    return { found, errors };
  }, { url, username, credential });
  await page.close();
  return r;
}

test('coturn refuses forged and expired credentials, and takes a valid one', async () => {
  const sign = (u) => createHmac('sha1', SECRET).update(u).digest('base64');
  const fresh = `${Math.floor(Date.now() / 1000) + 600}:probe`;
  const ok = await relayCandidates(fresh, sign(fresh));
  assert.ok(ok.found.includes('relay'), JSON.stringify(ok));
  const forged = await relayCandidates(fresh, createHmac('sha1', 'not-the-secret').update(fresh).digest('base64'));
  assert.ok(!forged.found.includes('relay'), `forged: ${JSON.stringify(forged)}`);
  const old = `${Math.floor(Date.now() / 1000) - 60}:probe`;
  const expired = await relayCandidates(old, sign(old));
  assert.ok(!expired.found.includes('relay'), `expired: ${JSON.stringify(expired)}`);
});

test('WHIP and WHEP answers name the TURN servers in Link headers (RFC 9725)', async () => {
  const r = await fetch(`${server.base}/whip/linked`, { method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${server.token('linked', 'cam', ['--publish'])}` }, body: OPUS_OFFER });
  assert.equal(r.status, 201);
  const link = r.headers.get('link');
  assert.match(link, new RegExp(`<turn:127\\.0\\.0\\.1:${port}\\?transport=udp>; rel="ice-server"; username="\\d+:cam"; credential="[A-Za-z0-9+/=]+"; credential-type="password"`));
  await fetch(`${server.base}${r.headers.get('location')}`, { method: 'DELETE', headers: { Authorization: `Bearer ${server.token('linked', 'cam', ['--publish'])}` } });
});

test('a relay-only /broadcast page and a relay-only /live viewer meet through coturn', async () => {
  const room = 'relayed-live';
  const pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?ice=relay&token=${server.token(room, 'creator', ['--publish'])}`);
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live'), 30_000, 'live through the relay');
  const viewer = await (await browser.newContext()).newPage();
  await viewer.goto(`${server.base}/live/${room}?ice=relay&token=${server.token(room, 'viewer', [])}`);
  await waitFor(() => viewer.evaluate(() => { const v = window.aulaLive.video; return v && v.getVideoPlaybackQuality().totalVideoFrames > 20; }), 40_000, 'the viewer decodes through the relay');
  for (const [page, pc] of [[pub, 'aulaBroadcast'], [viewer, 'aulaLive']]) {
    assert.equal((await selectedLocalCandidate(page, pc))?.candidateType, 'relay', `${pc} media goes through the relay`);
  }
  // The endpoint the pages ask, with credentials for the token's identity.
  const r = await fetch(`${server.base}/api/rooms/${room}/ice-servers`, { headers: { Authorization: `Bearer ${server.token(room, 'viewer', [])}` } });
  assert.match((await r.json()).ice_servers[0].username, /^\d+:viewer$/);
  assert.equal((await fetch(`${server.base}/api/rooms/${room}/ice-servers`)).status, 401);
  await pub.evaluate(() => window.aulaBroadcast.stop());
});

test('turns: only (TURN over TLS, as on networks that allow nothing but 443): relay-only room pages decode', async () => {
  const turns = `turns:127.0.0.1:${tlsPort}?transport=tcp`;
  const tls = await startServer({ AULA_TURN__URLS: `["${turns}"]`, AULA_TURN__SECRET: SECRET, AULA_TURN__TTL_S: '600', AULA_MEDIA__TCP: 'false' });
  const pages = [];
  try {
    for (const n of ['ana', 'ben']) {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${tls.base}/room/tls?ice=relay&token=${tls.token('tls', n)}`);
      pages.push(page);
    }
    for (const page of pages) {
      await waitFor(async () => { const v = Object.values(await tileFrames(page)); return v.length === 1 && v[0].frames > 20; }, 40_000, 'decoding through the TLS relay');
      const c = await selectedLocalCandidate(page, 'aulaRoom');
      assert.equal(c && `${c.candidateType}/${c.relayProtocol}`, 'relay/tls', 'media goes through the relay over TLS');
      assert.deepEqual((await page.evaluate(() => window.aulaRoom.pc.getConfiguration().iceServers)).map((s) => s.urls).flat(), [turns]);
    }
    // coturn checks the credential on the TLS listener too.
    const sign = (u) => createHmac('sha1', SECRET).update(u).digest('base64');
    const fresh = `${Math.floor(Date.now() / 1000) + 600}:probe`;
    assert.ok((await relayCandidates(fresh, sign(fresh), turns)).found.includes('relay'), 'a valid credential over TLS');
    const forged = await relayCandidates(fresh, createHmac('sha1', 'not-the-secret').update(fresh).digest('base64'), turns);
    assert.ok(!forged.found.includes('relay'), `forged over TLS: ${JSON.stringify(forged)}`);
    const old = `${Math.floor(Date.now() / 1000) - 60}:probe`;
    const expired = await relayCandidates(old, sign(old), turns);
    assert.ok(!expired.found.includes('relay'), `expired over TLS: ${JSON.stringify(expired)}`);
  } finally {
    for (const p of pages) await p.context().close();
    await tls.stop();
  }
});

