// Issue 15: the README's "Deploying" steps, followed on this machine. A network namespace the
// test creates stands for the public server (one address, as a VM behind 1:1 NAT has): step 3's
// `deploy/aula.toml` with only what it says to set changed (`media.public_ip`, the R2 endpoint
// — a moto S3 server here —, the TURN host — a coturn here), `/etc/aula` and `/var/lib/aula`
// moved under a temporary directory, `deploy/secrets.env.example` filled in, a self-signed
// certificate (a throwaway CA Chromium trusts by SPKI); step 4's `aula config` passes (the
// unit's ExecStartPre); step 5's ExecStart runs (this machine has no systemd as init to run
// the unit itself); step 7's tokens come from `aula token` with the same key. Two Chromium
// room pages on https://{public_ip}/ then decode each other.
//
// It once failed 2 of about 12 runs: one page stuck before its camera and signaling, the other's
// signaling dropped and resumed. Chromium had aborted them with net::ERR_NETWORK_CHANGED, as it
// does on any address change on the machine: the veth pair's IPv6 addresses appearing after
// setup (`netnsPair` now makes pairs without IPv6), or another test's pair. A failure prints
// what each page did and keeps the server's log.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AULA, startServer, launchBrowser, waitFor, tileFrames, makeCert, netnsPair } from './helpers.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let ns, root, server, browser, moto, turn, base, cert;

function inNs(cmd, args) {
  return spawn('ip', ['netns', 'exec', ns.name, cmd, ...args], { stdio: 'ignore' });
}

before(async () => {
  ns = netnsPair(`aulady${process.pid % 10000}`, 203);
  root = mkdtempSync(join(tmpdir(), 'aula-deploy-'));
  const etc = join(root, 'etc', 'aula');
  const lib = join(root, 'var', 'lib', 'aula');
  mkdirSync(etc, { recursive: true });
  mkdirSync(lib, { recursive: true });
  // R2 and the TURN relay, inside the namespace.
  moto = inNs('python3', ['-m', 'moto.server', '-H', ns.inside, '-p', '9000']);
  await waitFor(async () => { try { await fetch(`http://${ns.inside}:9000`); return true; } catch { return false; } }, 30_000, 'moto');
  // The bucket, as one makes it in R2's dashboard before the first start.
  assert.equal((await fetch(`http://${ns.inside}:9000/aula`, { method: 'PUT' })).status, 200);
  turn = inNs('turnserver', ['-n', `--listening-ip=${ns.inside}`, '--listening-port=3478', '--use-auth-secret',
    '--static-auth-secret=deploy-turn-secret', '--realm=aula.test', '--no-cli', '--no-tls', '--no-dtls']);
  // Step 3: the example config, with what the README says to set.
  cert = makeCert(etc, 'site', ns.inside);
  execFileSync('cp', [cert.cert, join(etc, 'fullchain.pem')]);
  execFileSync('cp', [cert.key, join(etc, 'privkey.pem')]);
  const toml = readFileSync(join(repo, 'deploy', 'aula.toml'), 'utf8')
    .replaceAll('/etc/aula', etc)
    .replaceAll('/var/lib/aula', lib)
    .replace('public_ip = "203.0.113.10"', `public_ip = "${ns.inside}"`)
    .replace('https://<account-id>.r2.cloudflarestorage.com', `http://${ns.inside}:9000`)
    .replaceAll('turn.example.org:3478', `${ns.inside}:3478`)
    .replace(/, "turns:turn\.example\.org:443\?transport=tcp"/, '');
  assert.notEqual(toml, readFileSync(join(repo, 'deploy', 'aula.toml'), 'utf8'));
  writeFileSync(join(etc, 'aula.toml'), toml);
  const secrets = Object.fromEntries(readFileSync(join(repo, 'deploy', 'secrets.env.example'), 'utf8')
    .split('\n').filter((l) => /^AULA_\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  Object.assign(secrets, {
    AULA_AUTH__API_SECRET: 'deploy-test-api-secret-0123456789abcdef',
    AULA_SIGNING__KEYS: '{k1="deploy-test-signing-key-0123456789abcdef"}',
    AULA_TURN__SECRET: 'deploy-turn-secret',
    AULA_STORAGE__S3__ACCESS_KEY_ID: 'test',
    AULA_STORAGE__S3__SECRET_ACCESS_KEY: 'test',
  });
  const config = join(etc, 'aula.toml');
  // Step 4: the check the unit runs before every start.
  const shown = execFileSync(AULA, ['--config', config, 'config'], { env: { ...process.env, ...secrets } }).toString();
  assert.ok(shown.includes(`public_ip = "${ns.inside}"`), shown);
  assert.doesNotMatch(shown, /deploy-test-api-secret/, 'secrets are not printed');
  // Step 5: the unit's ExecStart.
  server = await startServer({ RUST_LOG: process.env.RUST_LOG || 'info,aula=debug,signaling=debug,str0m=warn', ...secrets }, { config, netns: ns.name, dir: lib });
  base = `https://${ns.inside}`;
  browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${cert.spki}`]);
});
after(async () => {
  await browser?.close(); await server?.stop();
  moto?.kill(); turn?.kill(); ns?.remove();
  if (root) rmSync(root, { recursive: true, force: true });
});

// What a page had done when it did not decode: its status and log lines, the requests it
// made (with the protocol each used) and any that failed, and its console.
async function pageState(page, events) {
  const state = await page.evaluate(() => ({
    status: document.querySelector('#status')?.textContent,
    room: document.querySelector('#room-name')?.textContent,
    log: document.querySelector('#log')?.textContent?.slice(-3000),
    joined: !!window.aulaRoom,
    ice: window.aulaRoom?.iceStates,
    resources: performance.getEntriesByType('resource').map((e) => `${e.name.replace(/\?.*/, '')} ${e.nextHopProtocol} ${Math.round(e.startTime)}+${Math.round(e.duration)}ms`),
  })).catch((e) => ({ evaluate: `${e}` }));
  return JSON.stringify({ ...state, events }, null, 1);
}

test('the Deploying steps reach a working room on https://{public_ip}/', async () => {
  const pages = [];
  const events = [];
  try {
    for (const n of ['tutor', 'student']) {
      const page = await (await browser.newContext()).newPage();
      const seen = [];
      events.push(seen);
      const t0 = Date.now();
      page.on('console', (m) => seen.push(`${Date.now() - t0}ms console ${m.type()}: ${m.text()}`));
      page.on('requestfailed', (r) => seen.push(`${Date.now() - t0}ms failed ${r.url().replace(/\?.*/, '')}: ${r.failure()?.errorText}`));
      page.on('websocket', (ws) => {
        seen.push(`${Date.now() - t0}ms ws open ${ws.url().replace(/\?.*/, '')}`);
        ws.on('close', () => seen.push(`${Date.now() - t0}ms ws close ${ws.url().replace(/\?.*/, '')}`));
        ws.on('socketerror', (e) => seen.push(`${Date.now() - t0}ms ws error ${e}`));
      });
      await page.goto(`${base}/room/deployed?token=${server.token('deployed', n)}`);
      pages.push(page);
    }
    for (const [i, page] of pages.entries()) {
      try {
        await waitFor(async () => Object.values(await tileFrames(page)).some((t) => t.frames > 30), 45_000, `page ${i} decoding`);
      } catch (e) {
        const states = [];
        for (const [j, p] of pages.entries()) states.push(`page ${j}: ${await pageState(p, events[j])}`);
        const dump = join(tmpdir(), `aula-deploy-check-${process.pid}.log`);
        writeFileSync(dump, `${states.join('\n')}\n--- server log\n${server.logs()}`);
        throw new Error(`${e.message}\n${states.join('\n')}\nserver log: ${dump}`);
      }
    }
    // The pages got aula's TURN credentials for the relay named in the config.
    const ice = await pages[0].evaluate(() => window.aulaRoom.pc.getConfiguration().iceServers);
    assert.deepEqual(ice.map((s) => s.urls).flat(), [`turn:${ns.inside}:3478`]);
    assert.match(ice[0].username, /^\d+:tutor$/);
  } finally {
    for (const p of pages) await p.context().close();
  }
});
