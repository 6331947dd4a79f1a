// aula edge worker for Cloudflare: verifies the same signed path prefix as aula's origin
// (`/s/{token}/{key}`), strips it, serves the bare object from the R2 bucket bound as BUCKET,
// and caches media on the bare path, so every viewer shares one cache entry per object.
//
// Bindings: BUCKET (R2), SIGNING_KEYS (secret: JSON {"kid": "secret", ...}), optional ORIGIN
// (aula's public URL): LL-HLS blocking playlist reloads (`_HLS_msn`) go there, since a bucket
// cannot hold a request until a part exists.

const enc = new TextEncoder();

function b64urlDecode(s) {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return null;
  const pad = s.length % 4 === 2 ? '==' : s.length % 4 === 3 ? '=' : s.length % 4 === 0 ? '' : null;
  if (pad === null) return null;
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + pad);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Checks a token for a bare path; returns null when valid, else the reason. */
export async function verify(token, path, keys, nowUnix) {
  const parts = token.split('.');
  if (parts.length !== 4) return 'malformed token';
  const [kid, expText, scopeB64, tagB64] = parts;
  if (!/^\d+$/.test(expText)) return 'malformed token';
  const scopeBytes = b64urlDecode(scopeB64);
  const tag = b64urlDecode(tagB64);
  if (!scopeBytes || !tag) return 'malformed token';
  const scope = new TextDecoder().decode(scopeBytes);
  const secret = Object.prototype.hasOwnProperty.call(keys, kid) ? keys[kid] : undefined;
  if (secret === undefined) return `unknown key id "${kid}"`;
  const key = await crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  const ok = await crypto.subtle.verify('HMAC', key, tag, enc.encode(`${kid}.${expText}.${scope}`));
  if (!ok) return 'bad signature';
  if (nowUnix >= Number(expText)) return 'token expired';
  // Whole path segments: a scope of /r/b1 covers /r/b1/... but not /r/b10/... (as hls::sign::in_scope).
  const inScope = path.startsWith(scope) && (scope.endsWith('/') || path.length === scope.length || path[scope.length] === '/');
  if (!inScope || path.split('/').some((s) => s === '..' || s === '.')) return `token is for "${scope}"`;
  return null;
}

const TYPES = { m3u8: 'application/vnd.apple.mpegurl', m4s: 'video/iso.segment', mp4: 'video/mp4' };

function text(status, msg) {
  return new Response(msg, { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' } });
}

export default {
  async fetch(request, env, ctx) {
    if (request.method !== 'GET' && request.method !== 'HEAD') return text(405, 'GET or HEAD');
    const url = new URL(request.url);
    const m = url.pathname.match(/^\/s\/([^/]+)(\/.+)$/);
    if (!m) return text(403, 'no token in the path (expected /s/{token}/...)');
    const [, token, bare] = m;
    let keys;
    try {
      keys = JSON.parse(env.SIGNING_KEYS || '{}');
    } catch {
      return text(500, 'SIGNING_KEYS is not JSON');
    }
    const why = await verify(token, bare, keys, Math.floor(Date.now() / 1000));
    if (why) return text(403, why);
    const key = bare.slice(1);
    if (url.searchParams.has('_HLS_msn') && env.ORIGIN) {
      return fetch(new URL(url.pathname + url.search, env.ORIGIN), request);
    }
    const isPlaylist = key.endsWith('.m3u8');
    const cache = globalThis.caches ? globalThis.caches.default : null;
    const cacheKey = new Request(new URL(bare, url.origin).toString());
    const range = request.headers.get('range');
    if (cache && !range && !isPlaylist) {
      const hit = await cache.match(cacheKey);
      if (hit) return hit;
    }
    const obj = await env.BUCKET.get(key, range ? { range: request.headers } : undefined);
    if (!obj) return text(404, 'no such object');
    const headers = new Headers();
    const ext = key.split('.').pop();
    headers.set('content-type', (obj.httpMetadata && obj.httpMetadata.contentType) || TYPES[ext] || 'application/octet-stream');
    headers.set('cache-control', (obj.httpMetadata && obj.httpMetadata.cacheControl) || (isPlaylist ? 'public, max-age=1' : 'public, max-age=31536000, immutable'));
    headers.set('accept-ranges', 'bytes');
    headers.set('access-control-allow-origin', '*');
    if (obj.etag) headers.set('etag', obj.etag);
    let status = 200;
    if (range && obj.range) {
      const start = obj.range.offset;
      const end = start + obj.range.length - 1;
      headers.set('content-range', `bytes ${start}-${end}/${obj.size}`);
      status = 206;
    }
    const resp = new Response(request.method === 'HEAD' ? null : obj.body, { status, headers });
    if (cache && status === 200 && !isPlaylist && ctx && ctx.waitUntil) ctx.waitUntil(cache.put(cacheKey, resp.clone()));
    return resp;
  },
};
