// Shared helpers for the browser tests: start `aula serve` on free loopback ports, mint tokens
// with `aula token`, launch Debian's headless Chromium with a fake camera and mic.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, renameSync, copyFileSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AULA = process.env.AULA_BIN || join(root, 'target', 'debug', 'aula');

const CALIBRATION = join(tmpdir(), `aula-test-encode-cost-${process.getuid?.() ?? 0}.json`);

function seedCalibration(dir) {
  if (existsSync(join(dir, 'encode-cost.json'))) return;
  if (!existsSync(CALIBRATION)) {
    const tmp = `${CALIBRATION}.${process.pid}`;
    execFileSync(AULA, ['ladder', 'calibrate', '--out', tmp]);
    renameSync(tmp, CALIBRATION);
  }
  copyFileSync(CALIBRATION, join(dir, 'encode-cost.json'));
}

export async function startServer(extraEnv = {}, opts = {}) {
  // opts.dir: reuse a storage directory (a restart); it is then left for the caller.
  const dir = opts.dir || mkdtempSync(join(tmpdir(), 'aula-test-'));
  // The encode-cost calibration (`aula ladder calibrate`, a few CPU-seconds) is measured once
  // for the whole run and copied in, as a server finds its own on a second start;
  // opts.calibrate leaves it out, so the server measures at start (the first-start path).
  if (!opts.calibrate) seedCalibration(dir);
  // opts.config: an aula.toml that says where to bind and store (nothing set here but the log).
  const env = {
    ...process.env,
    ...(opts.config ? {} : { AULA_HTTP__BIND: '127.0.0.1:0', AULA_MEDIA__BIND: '127.0.0.1:0', AULA_STORAGE__DIR: dir }),
    RUST_LOG: process.env.RUST_LOG || 'info,str0m=warn',
    ...extraEnv,
  };
  const global = opts.config ? ['--config', opts.config] : [];
  // opts.cpus: pin the server to these cores (`taskset -c`), apart from the browsers.
  // opts.netns: run it inside this network namespace (`ip netns exec`).
  let [cmd, args] = opts.cpus ? ['taskset', ['-c', opts.cpus, AULA, ...global, 'serve']] : [AULA, [...global, 'serve']];
  if (opts.netns) [cmd, args] = ['ip', ['netns', 'exec', opts.netns, cmd, ...args]];
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stderr.on('data', (d) => { logs += d; });
  const [base, media, tcpMedia] = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`aula did not start:\n${out}\n${logs}`)), 30_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/aula listening http=(\S+) media=(\S+)(?: tcp_media=(\S+))?/);
      if (m) { clearTimeout(timer); resolve([m[1], m[2], m[3]]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`aula exited ${code}:\n${logs}`)); });
  });
  return {
    base,
    media,
    // The ICE-TCP address ('off' when media.tcp is false).
    tcpMedia,
    dir,
    proc,
    env,
    logs: () => logs,
    token(room, identity, flags = ['--publish', '--publish-data'], ttl = '1h') {
      return execFileSync(AULA, [...global, 'token', '--room', room, '--identity', identity, '--ttl', ttl, ...flags], { env })
        .toString().trim();
    },
    async stop() {
      proc.kill('SIGINT');
      await new Promise((r) => { if (proc.exitCode !== null) r(); else proc.on('exit', r); });
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
    // Dies without a word (power cut); the storage directory stays.
    async kill() {
      proc.kill('SIGKILL');
      await new Promise((r) => { if (proc.exitCode !== null || proc.signalCode !== null) r(); else proc.on('exit', r); });
    },
  };
}

const BROWSER_OPTIONS = (extra = []) => ({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    ...extra,
    '--headless', '--no-sandbox', '--disable-gpu',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

// `extra`: more Chromium flags (a test certificate's SPKI to trust, say).
// opts.cpus: pin every Chromium process to these cores (`taskset -c`, inherited by the
// processes it starts).
// opts.refuseCamera: without `--use-fake-ui-for-media-stream`, so a camera prompt is refused (no
// one is there to accept it), as for a student who says no; such pages then get no media
// permission, and Chromium hides their host addresses behind mDNS names.
export async function launchBrowser(extra = [], opts = {}) {
  const options = BROWSER_OPTIONS(extra);
  if (opts.refuseCamera) options.args = options.args.filter((a) => a !== '--use-fake-ui-for-media-stream');
  if (opts.cpus) {
    const wrapper = join(mkdtempSync(join(tmpdir(), 'aula-chromium-')), 'chromium');
    writeFileSync(wrapper, `#!/bin/sh\nexec taskset -c ${opts.cpus} ${options.executablePath} "$@"\n`, { mode: 0o755 });
    options.executablePath = wrapper;
  }
  return chromium.launch(options);
}

// A browser in its own process group, so a test can freeze all of it (SIGSTOP: its network
// goes silent as on a dropped link) and thaw it: { browser, freeze(), thaw(), close() }.
export async function launchFreezableBrowser() {
  const server = await chromium.launchServer(BROWSER_OPTIONS());
  const browser = await chromium.connect(server.wsEndpoint());
  const pid = server.process().pid;
  return {
    browser,
    freeze: () => process.kill(-pid, 'SIGSTOP'),
    thaw: () => process.kill(-pid, 'SIGCONT'),
    close: async () => { try { process.kill(-pid, 'SIGCONT'); } catch {} await browser.close().catch(() => {}); await server.close(); },
  };
}

// A WHIP offer str0m answers (Opus, sendonly): a real session without a browser.
export const OPUS_OFFER = [
  'v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', 'a=group:BUNDLE 0',
  'a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=sendonly', 'a=ice-ufrag:abcd', 'a=ice-pwd:abcdefghijklmnopqrstuvwx',
  'a=setup:actpass', 'a=rtcp-mux', 'a=rtpmap:111 opus/48000/2', 'a=ssrc:1234 cname:x', '',
].join('\r\n');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `fn` until it returns a truthy value or `ms` pass (then throws with the last value).
export async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

// Frames decoded by each remote tile of a room page, by participant id.
export function tileFrames(page) {
  return page.evaluate(() => {
    const out = {};
    // The page publishes window.aulaRoom once its camera is up; until then there are no tiles.
    if (!window.aulaRoom) return out;
    for (const [pid, t] of window.aulaRoom.tiles) {
      if (pid.startsWith('self')) continue;
      const q = t.video.getVideoPlaybackQuality();
      out[pid] = { frames: q.totalVideoFrames, width: t.video.videoWidth, audio: t.stream.getAudioTracks().length };
    }
    return out;
  });
}

export async function inboundAudio(pc, page) {
  return page.evaluate(async (name) => {
    let packets = 0;
    (await window[name].pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') packets += s.packetsReceived;
    });
    return packets;
  }, pc);
}

// A TCP proxy in front of the HTTP server, so a test can cut one browser's signaling the way a
// network drop does (no WebSocket close handshake) while its WebRTC media (UDP) keeps flowing.
export async function tcpProxy(base) {
  const net = await import('node:net');
  const target = new URL(base);
  const sockets = new Set();
  let down = false;
  const srv = net.createServer((c) => {
    if (down) { c.destroy(); return; }
    const u = net.connect(Number(target.port), target.hostname);
    for (const s of [c, u]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
    c.pipe(u); u.pipe(c);
    c.on('close', () => u.destroy()); u.on('close', () => c.destroy());
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    base: `http://127.0.0.1:${srv.address().port}`,
    cut() { down = true; for (const s of sockets) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy(); },
    restore() { down = false; },
    close() { this.cut(); srv.close(); },
  };
}

// The HTTP status a WebSocket upgrade request gets (101 when it is accepted). Node 20 has no
// WebSocket client; refusals must come before the upgrade, as plain HTTP answers.
export async function upgradeStatus(url) {
  const http = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = http.get(url, {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(101); });
    req.on('error', reject);
  });
}

// A real S3 server (moto[server] from PyPI) on a free loopback port.
async function freePort() {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// A real redis-server on loopback (no persistence), for the egress worker queue.
export async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const net = await import('node:net');
  await waitFor(() => new Promise((r) => {
    const c = net.connect(port, '127.0.0.1', () => { c.end(); r(true); });
    c.on('error', () => r(false));
  }), 15_000, 'redis-server');
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill() };
}

// `aula egress worker` with the server's configuration (same storage, same queue).
export async function startWorker(server, name, extraEnv = {}) {
  const proc = spawn(AULA, ['egress', 'worker', '--name', name], { env: { ...server.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stderr.on('data', (d) => { logs += d; });
  await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); });
    proc.on('exit', (code) => reject(new Error(`worker ${name} exited ${code}:\n${logs}`)));
  });
  return {
    name,
    proc,
    logs: () => logs,
    kill(signal = 'SIGKILL') { proc.kill(signal); },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGINT');
        await new Promise((r) => proc.on('exit', r));
      }
    },
  };
}

export async function startMoto() {
  const port = await freePort();
  const proc = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitFor(async () => { try { await fetch(endpoint); return true; } catch { return false; } }, 30_000, 'moto server');
  // freeze/thaw: SIGSTOP/SIGCONT, a bucket that stops answering without closing connections.
  return { endpoint, stop: () => proc.kill(), freeze: () => proc.kill('SIGSTOP'), thaw: () => proc.kill('SIGCONT') };
}

// What the /watch page's player is doing (window.aulaWatch and the <video>).
export const watchState = (page) => page.evaluate(() => {
  const w = window.aulaWatch;
  const v = document.querySelector('#video');
  return {
    mode: w.mode,
    state: w.broadcast?.state,
    frames: v.getVideoPlaybackQuality().totalVideoFrames,
    width: v.videoWidth,
    height: v.videoHeight,
    time: v.currentTime,
    duration: v.duration,
    audioBytes: v.webkitAudioDecodedByteCount,
    levels: w.hls ? w.hls.levels.map((l) => l.height) : [],
    level: w.hls ? w.hls.currentLevel : null,
    latency: w.hls ? w.hls.latency : null,
    errors: w.errors.filter((e) => e.includes('fatal')),
    allErrors: w.errors,
    ranges: w.ranges || {},
    fragStarts: w.fragStarts,
  };
});

// A JSON API call with a bearer token: { status, json } (json is the text when not JSON).
export async function api(server, method, path, token, body) {
  const r = await fetch(`${server.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, json: text.startsWith('{') || text.startsWith('[') ? JSON.parse(text) : text };
}

// `aula serve` settings for S3 storage on a moto server.
export function s3Env(moto) {
  return {
    AULA_STORAGE__BACKEND: 's3',
    AULA_STORAGE__S3__ENDPOINT: moto.endpoint,
    AULA_STORAGE__S3__REGION: 'us-east-1',
    AULA_STORAGE__S3__BUCKET: 'aula-test',
    AULA_STORAGE__S3__ACCESS_KEY_ID: 'test',
    AULA_STORAGE__S3__SECRET_ACCESS_KEY: 'test',
    AULA_STORAGE__S3__CREATE_BUCKET: 'true',
  };
}

// Largest start-time difference between audio and video segments of the same sequence number
// as the player buffered them, and how many segments were compared.
export function avSkew(s) {
  const a = s.fragStarts.audio || {};
  const v = s.fragStarts.main || {};
  const common = Object.keys(a).filter((sn) => sn in v);
  return { segments: common.length, skew: Math.max(0, ...common.map((sn) => Math.abs(a[sn] - v[sn]))) };
}

// A room signaling client without media (`/rtc/{room}`): { ws, msgs, closed, next(pred, ms,
// what), chat(text, id), close() }. `query`: more URL parameters (`chat_after=N`, say).
export async function roomSocket(base, room, token, query = '') {
  const { default: WebSocket } = await import('ws');
  const ws = new WebSocket(`${base.replace('http', 'ws')}/rtc/${room}?token=${token}${query ? `&${query}` : ''}`);
  const c = { ws, msgs: [], closed: null };
  ws.on('message', (d) => c.msgs.push(JSON.parse(d.toString())));
  ws.on('close', (code, reason) => { c.closed = { code, reason: reason.toString() }; });
  ws.on('error', () => {});
  c.next = (pred, ms = 10_000, what = 'a message') => waitFor(() => c.msgs.find(pred), ms, what);
  c.chat = (text, id) => ws.send(JSON.stringify({ type: 'chat', text, id }));
  c.close = () => ws.close();
  await c.next((m) => m.type === 'chat_synced', 10_000, 'chat_synced');
  return c;
}

// A throwaway CA in `dir` and a leaf for `ip` signed by it (`name` picks the files), for
// HTTPS tests; Chromium trusts it through `--ignore-certificate-errors-spki-list=${spki}`.
export function makeCert(dir, name, ip = '127.0.0.1') {
  const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=aula test CA ${name}`, '-keyout', `${name}-ca.key`, '-out', `${name}-ca.pem`);
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${ip}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${name}-ca.pem`, '-CAkey', `${name}-ca.key`, '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  const spki = execFileSync('sh', ['-c', `openssl x509 -in ${name}.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`], { cwd: dir }).toString().trim();
  return { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`), ca: readFileSync(join(dir, `${name}-ca.pem`)), spki };
}

// A network namespace joined to this one by a veth pair: `inside` is its one address (besides
// its own loopback), `outside` this side's. Removed by `remove()`. The /24 is 10.{net}.{pid}:
// two runs at once (a developer's beside a rehearsal) get different ones, where a shared
// subnet would route one run's traffic into the other's namespace.
export function netnsPair(name, net = 201) {
  const subnet = `10.${net}.${process.pid % 250}`;
  const sh = (cmd) => execFileSync('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  const [a, b] = [`${name}-a`.slice(0, 15), `${name}-b`.slice(0, 15)];
  sh(`ip netns add ${name}`);
  sh(`ip link add ${a} type veth peer name ${b} && ip link set ${b} netns ${name}`);
  // No IPv6 on the pair: its link-local addresses would appear a second or two later (after
  // duplicate address detection), and Chromium takes any address change on the machine for
  // a network change: it aborts requests in flight (net::ERR_NETWORK_CHANGED) and drops
  // connections, so a page could lose a module load or its signaling at a random moment.
  sh(`sysctl -qw net.ipv6.conf.${a}.disable_ipv6=1`);
  sh(`ip netns exec ${name} sysctl -qw net.ipv6.conf.${b}.disable_ipv6=1`);
  sh(`ip addr add ${subnet}.1/24 dev ${a} && ip link set ${a} up`);
  sh(`ip netns exec ${name} sh -c 'ip addr add ${subnet}.2/24 dev ${b} && ip link set ${b} up && ip link set lo up'`);
  // Settled before anyone uses it: the host side reports its carrier once the peer is up.
  const deadline = Date.now() + 5000;
  while (!/state UP/.test(sh(`ip -o link show ${a}`).toString()) && Date.now() < deadline) execFileSync('sleep', ['0.05']);
  return {
    name,
    inside: `${subnet}.2`,
    outside: `${subnet}.1`,
    remove() { try { sh(`ip link del ${a}`); } catch {} try { sh(`ip netns del ${name}`); } catch {} },
  };
}

// The local candidate of a page's selected ICE pair (`key`: the page's window object, e.g.
// 'aulaRoom'): { candidateType, protocol, relayProtocol }, or null before one is selected.
export function selectedLocalCandidate(page, key) {
  return page.evaluate(async (key) => {
    const stats = await window[key].pc.getStats();
    let pair;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    const c = pair && stats.get(pair.localCandidateId);
    return c ? { candidateType: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol } : null;
  }, key);
}

