// Hostile input gets a clear 4xx and nothing breaks for others in the room.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import dgram from 'node:dgram';
import { startServer, launchBrowser, waitFor, sleep, upgradeStatus } from './helpers.mjs';

let server, browser, pub, viewer;
const room = 'hostile';

before(async () => {
  server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' });
  browser = await launchBrowser();
  // A live broadcast and a viewer that must keep playing through everything below.
  pub = await (await browser.newContext()).newPage();
  await pub.goto(`${server.base}/broadcast/${room}?width=640&token=${server.token(room, 'creator', ['--publish'])}`);
  await waitFor(() => pub.evaluate(() => !!document.querySelector('#preview').videoWidth), 15_000, 'preview');
  await pub.click('#golive');
  await waitFor(() => pub.evaluate(() => window.aulaBroadcast.status === 'live'), 20_000, 'live');
  viewer = await (await browser.newContext()).newPage();
  await viewer.goto(`${server.base}/live/${room}?token=${server.token(room, 'viewer', [])}`);
  await waitFor(() => viewerFrames().then((f) => f > 10), 20_000, 'viewer decoding');
});
after(async () => { await browser?.close(); await server?.stop(); });

const viewerFrames = () => viewer.evaluate(() => window.aulaLive.video?.getVideoPlaybackQuality().totalVideoFrames ?? 0);

function jwt(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const OFFER_NO_CODEC = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0',
  'a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF',
  'm=audio 9 UDP/TLS/RTP/SAVPF 18', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly', 'a=ice-ufrag:abcd', 'a=ice-pwd:abcdefghijklmnopqrstuvwx',
  'a=setup:actpass', 'a=rtcp-mux', 'a=rtpmap:18 G729/8000', '',
].join('\r\n');

async function whip(body, token, ctype = 'application/sdp', path = `/whip/${room}`) {
  const headers = { 'Content-Type': ctype };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(`${server.base}${path}`, { method: 'POST', headers, body });
  return { status: r.status, text: (await r.text()).trim() };
}

test('bad SDP, bad tokens and missing grants get clear 4xx answers', async () => {
  const ok = server.token(room, 'creator2', ['--publish']);
  let r = await whip('this is not sdp', ok);
  assert.equal(r.status, 400); assert.match(r.text, /malformed SDP/);
  r = await whip('v=0\r\nm=video garbage\r\n\u0000\u0001', ok);
  assert.equal(r.status, 400);
  r = await whip(OFFER_NO_CODEC, ok);
  assert.equal(r.status, 400); assert.match(r.text, /no usable codec/);
  r = await whip('v=0', ok, 'text/plain');
  assert.equal(r.status, 415);
  r = await whip(OFFER_NO_CODEC, undefined);
  assert.equal(r.status, 401); assert.match(r.text, /missing access token/);
  r = await whip(OFFER_NO_CODEC, 'garbage.token.here');
  assert.equal(r.status, 401); assert.match(r.text, /malformed/);
  const [h, b, s] = ok.split('.');
  const claims = JSON.parse(Buffer.from(b, 'base64url').toString());
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')}.${s}`;
  r = await whip(OFFER_NO_CODEC, tampered);
  assert.equal(r.status, 401); assert.match(r.text, /signature/);
  const secret = readFileSync(join(server.dir, 'dev-secret'), 'utf8').trim();
  const expired = jwt({ ...claims, exp: Math.floor(Date.now() / 1000) - 60 }, secret);
  r = await whip(OFFER_NO_CODEC, expired);
  assert.equal(r.status, 401); assert.match(r.text, /expired/);
  r = await whip(OFFER_NO_CODEC, server.token('another-room', 'creator', ['--publish']));
  assert.equal(r.status, 403); assert.match(r.text, /another room/);
  r = await whip(OFFER_NO_CODEC, server.token(room, 'student', []));
  assert.equal(r.status, 403); assert.match(r.text, /publish grant/);
  r = await whip('x'.repeat(200_000), ok);
  assert.equal(r.status, 413);
  r = await whip('v=0', server.token(room, 'v', ['--no-subscribe']), 'application/sdp', `/whep/${room}`);
  assert.equal(r.status, 403); assert.match(r.text, /subscribe grant/);
  r = await whip(OFFER_NO_CODEC, server.token(room, 'v', []), 'application/sdp', `/whep/${room}?quality=ultra`);
  assert.equal(r.status, 400); assert.match(r.text, /unknown quality/);
  // Unknown WHIP resource.
  const del = await fetch(`${server.base}/whip/${room}/nope`, { method: 'DELETE', headers: { Authorization: `Bearer ${ok}` } });
  assert.equal(del.status, 404);
});

test('the room signaling socket refuses bad tokens and survives malformed messages', async () => {
  const status = await upgradeStatus(`${server.base}/rtc/${room}?token=nope`);
  assert.equal(status, 401);
  // Node 20 has no WebSocket client: speak from the viewer's page.
  const url = `${server.base.replace('http', 'ws')}/rtc/${room}?token=${server.token(room, 'prober', [])}`;
  const result = await viewer.evaluate(async (url) => {
    const ws = new WebSocket(url);
    const msgs = [];
    ws.onmessage = (e) => msgs.push(JSON.parse(e.data));
    const until = async (f) => { for (let i = 0; i < 100 && !f(); i++) await new Promise((r) => setTimeout(r, 100)); };
    await until(() => msgs.some((m) => m.type === 'joined'));
    for (const m of ['{', '[]', '{"type":"nope"}', '{"type":"offer","sdp":"junk"}', '{"type":"answer","sdp":"v=0"}',
      '{"type":"candidate","candidate":"candidate:garbage"}', '{"type":"layer","quality":"max"}']) ws.send(m);
    await until(() => msgs.filter((m) => m.type === 'error').length >= 7);
    ws.send('{"type":"ping"}');
    await until(() => msgs.some((m) => m.type === 'pong'));
    ws.close();
    return msgs;
  }, url);
  assert.ok(result.some((m) => m.type === 'joined'), 'joined');
  const errors = result.filter((m) => m.type === 'error');
  assert.equal(errors.length, 7, JSON.stringify(errors));
  assert.ok(errors.every((e) => typeof e.message === 'string' && e.message.length > 0));
  assert.ok(result.some((m) => m.type === 'pong'), 'still answering after bad input');
});

test('garbage UDP datagrams on the media port do not disturb the room', async () => {
  const [host, port] = server.media.split(':');
  const sock = dgram.createSocket('udp4');
  const before = await viewerFrames();
  const shapes = [
    () => Buffer.alloc(0),
    () => Buffer.from([0x00, 0x01, 0x00, 0x00]), // truncated STUN
    () => Buffer.concat([Buffer.from([0x80, 0x60]), randomBytes(200)]), // fake RTP
    () => Buffer.concat([Buffer.from([0x81, 0xc9]), randomBytes(60)]), // fake RTCP
    () => Buffer.concat([Buffer.from([0x16, 0xfe, 0xfd]), randomBytes(100)]), // fake DTLS
    () => randomBytes(1 + Math.floor(Math.random() * 1400)),
  ];
  for (let i = 0; i < 3000; i++) {
    const b = shapes[i % shapes.length]();
    await new Promise((r) => sock.send(b, Number(port), host, r));
    if (i % 200 === 0) await sleep(20);
  }
  sock.close();
  const now = await viewerFrames();
  await waitFor(async () => (await viewerFrames()) > now + 40, 30_000, `viewer decoding after the garbage (${before} before, ${now} at its end)`);
  const metrics = await (await fetch(`${server.base}/metrics`)).text();
  const bad = Number(metrics.match(/aula_sfu_datagrams_bad_total (\d+)/)[1]) + Number(metrics.match(/aula_sfu_datagrams_unrouted_total (\d+)/)[1]);
  assert.ok(bad >= 1000, `garbage counted in metrics (${bad})`);
  assert.equal((await fetch(`${server.base}/healthz`)).status, 200);
});

function randomBytes(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(Math.random() * 256);
  return b;
}
