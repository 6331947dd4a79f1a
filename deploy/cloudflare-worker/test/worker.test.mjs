// The edge worker verifies tokens minted by aula (`aula hls sign`) exactly as aula's origin does,
// strips the prefix, serves the bare object with ranges, and refuses bad tokens with 403.
// Runs in Node (WebCrypto and fetch's Request/Response are built in); the R2 binding is an
// in-memory stand-in with R2's get() shape, since the Workers runtime does not run here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import worker, { verify } from '../worker.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const aula = process.env.AULA_BIN || path.join(root, 'target/debug/aula');

function sign(prefix, { kid = 'k1', secret = 'first secret', ttl = '10m' } = {}) {
  return execFileSync(aula, ['hls', 'sign', '--prefix', prefix, '--ttl', ttl, '--key-id', kid, '--secret', secret]).toString().trim();
}

const objects = new Map([
  ['math/b1/master.m3u8', { body: '#EXTM3U\n', type: 'application/vnd.apple.mpegurl', cc: 'public, max-age=1' }],
  ['math/b1/v0/e1-3.m4s', { body: '0123456789', type: 'video/iso.segment', cc: 'public, max-age=31536000, immutable' }],
]);

const env = {
  SIGNING_KEYS: JSON.stringify({ k1: 'first secret', k2: 'second secret' }),
  BUCKET: {
    async get(key, opts) {
      const o = objects.get(key);
      if (!o) return null;
      let body = o.body;
      let range;
      const h = opts && opts.range && opts.range.get('range');
      if (h) {
        const [a, b] = h.replace('bytes=', '').split('-').map(Number);
        range = { offset: a, length: b - a + 1 };
        body = body.slice(a, b + 1);
      }
      return { body, size: o.body.length, range, etag: 'e', httpMetadata: { contentType: o.type, cacheControl: o.cc } };
    },
  },
};

async function get(p, headers = {}) {
  return worker.fetch(new Request(`https://edge.example${p}`, { headers }), env, { waitUntil() {} });
}

test('a token from aula opens its prefix, with ranges and the stored headers', async () => {
  const t = sign('/math/b1/');
  let r = await get(`/s/${t}/math/b1/master.m3u8`);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), '#EXTM3U\n');
  assert.equal(r.headers.get('content-type'), 'application/vnd.apple.mpegurl');
  r = await get(`/s/${t}/math/b1/v0/e1-3.m4s`, { range: 'bytes=2-5' });
  assert.equal(r.status, 206);
  assert.equal(await r.text(), '2345');
  assert.equal(r.headers.get('content-range'), 'bytes 2-5/10');
  assert.equal(r.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  r = await get(`/s/${t}/math/b1/nothing.m4s`);
  assert.equal(r.status, 404);
});

test('tampered, expired, wrong-prefix, unknown-key and missing tokens get 403', async () => {
  const t = sign('/math/b1/');
  const [kid, exp, scope, tag] = t.split('.');
  const cases = {
    tampered: `${kid}.${Number(exp) + 100}.${scope}.${tag}`,
    expired: sign('/math/b1/', { ttl: '0s' }),
    unknown: sign('/math/b1/', { kid: 'k9', secret: 'x' }),
    garbage: 'not-a-token',
  };
  for (const [name, tok] of Object.entries(cases)) {
    const r = await get(`/s/${tok}/math/b1/master.m3u8`);
    assert.equal(r.status, 403, name);
  }
  assert.equal((await get(`/s/${t}/history/b9/master.m3u8`)).status, 403, 'wrong prefix');
  assert.equal((await get(`/s/${t}/math/b1/../../x`)).status, 403, 'dot-dot');
  assert.equal((await get('/math/b1/master.m3u8')).status, 403, 'no token');
  // A scope without a trailing slash covers whole segments only (issue 13, item 10).
  const bare = sign('/math/b1');
  assert.equal((await get(`/s/${bare}/math/b1/master.m3u8`)).status, 200, 'its own prefix');
  assert.equal((await get(`/s/${bare}/math/b10/master.m3u8`)).status, 403, 'a longer sibling name');
});

test('rotation: a token signed with the previous key still verifies while that key is listed', async () => {
  const old = sign('/math/', { kid: 'k1', secret: 'first secret' });
  const cur = sign('/math/', { kid: 'k2', secret: 'second secret' });
  const now = Math.floor(Date.now() / 1000);
  assert.equal(await verify(old, '/math/b1/x', { k1: 'first secret', k2: 'second secret' }, now), null);
  assert.equal(await verify(cur, '/math/b1/x', { k1: 'first secret', k2: 'second secret' }, now), null);
  assert.match(await verify(old, '/math/b1/x', { k2: 'second secret' }, now), /unknown key/);
});
