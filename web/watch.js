// /watch/{room}: plays the room's broadcast over HLS (hls.js; Safari plays it natively).
// Asks /api/broadcasts/{room} for signed URLs (the ladder follows ?geo= or the CDN's country
// header), plays LL-HLS while live and the recording from the start once it ended.
import { $, log, params, room, token } from './common.js';

const video = $('#video');
const status = (s) => { $('#status').textContent = s; };
$('#room-name').textContent = room;

const state = { hls: null, url: null, key: null, mode: null, errors: [], levelsPlayed: new Set(), fragStarts: {} };
window.aulaWatch = state;

async function broadcast() {
  const q = params.get('geo') ? `?geo=${encodeURIComponent(params.get('geo'))}` : '';
  const r = await fetch(`/api/broadcasts/${encodeURIComponent(room)}${q}`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function fillQualities(hls) {
  const sel = $('#quality');
  sel.innerHTML = '<option value="-1">auto</option>';
  hls.levels.forEach((l, i) => {
    const o = document.createElement('option');
    o.value = String(i);
    o.textContent = l.height ? `${l.height}p ${Math.round(l.bitrate / 1000)} kbit/s` : `audio ${Math.round(l.bitrate / 1000)} kbit/s`;
    sel.append(o);
  });
  sel.onchange = () => { hls.currentLevel = Number(sel.value); log(`quality ${sel.selectedOptions[0].textContent}`); };
}

function play(url, mode, id) {
  // Each status answer carries a freshly signed URL: reload only for another broadcast or mode.
  const key = `${id}/${mode}`;
  if (state.key === key) return;
  state.key = key;
  state.url = url;
  state.mode = mode;
  if (state.hls) state.hls.destroy();
  if (!window.Hls || !Hls.isSupported()) {
    video.src = url; // Safari: native HLS
    return;
  }
  // LL-HLS: hls.js sits PART-HOLD-BACK behind the live edge (the playlist says 1.5 s). A small
  // drift it makes up at up to 1.25x speed; hls.js does that only within a segment of its
  // target and, on its defaults, never jumps, so a longer stall stayed behind for good
  // (catchUp below). ?debug=1 logs hls.js's decisions to the console.
  const hls = new Hls({
    lowLatencyMode: mode === 'live',
    maxLiveSyncPlaybackRate: 1.25,
    debug: params.get('debug') === '1',
  });
  state.hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, () => { fillQualities(hls); log(`${mode}: ${hls.levels.length} levels`); video.play().catch(() => {}); });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => {
    const l = hls.levels[d.level];
    $('#level').textContent = l ? `${l.height || 'audio'}p` : '';
  });
  hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => {
    const f = d.frag;
    if (f.type === 'main') state.levelsPlayed.add(f.level);
    // Media time each segment starts at, per track: audio and video segments of one sequence
    // number should start together (A/V sync, checked by tests).
    if (typeof f.sn === 'number') (state.fragStarts[f.type] ||= {})[f.sn] = f.startPTS ?? f.start;
  });
  // Where audio and video sit on the media timeline (A/V alignment, for tests and debugging).
  hls.on(Hls.Events.BUFFER_APPENDED, (_, d) => {
    state.ranges = {};
    for (const [kind, r] of Object.entries(d.timeRanges || {})) {
      if (r && r.length) state.ranges[kind] = [r.start(0), r.end(r.length - 1)];
    }
  });
  hls.on(Hls.Events.ERROR, (_, d) => {
    state.errors.push(`${d.type}/${d.details}${d.fatal ? ' fatal' : ''}`);
    if (d.fatal) {
      log(`player error ${d.details}`);
      if (d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else setTimeout(() => { state.key = null; }, 2000);
    }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  if (mode === 'vod') video.currentTime = 0;
}

// Follow the live master: aula stops listing a rung it sheds (its encoder fell behind) a segment
// before that rung's playlist turns to gaps. Moving down now avoids the stall a player meets at
// the gap; a rung listed again is offered again.
async function followMaster() {
  const hls = state.hls;
  if (!hls || state.mode !== 'live' || !state.url || !hls.levels.length) return;
  let text;
  try {
    text = await (await fetch(state.url)).text();
  } catch {
    return;
  }
  if (hls !== state.hls || !text.startsWith('#EXTM3U')) return;
  const listed = new Set(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.trim().split('?')[0]));
  const name = (l) => new URL(l.uri, location.href).pathname.split('/').pop();
  const ok = hls.levels.map((l) => listed.has(name(l)));
  const top = ok.lastIndexOf(true);
  if (top < 0) return;
  const cap = ok.every(Boolean) ? -1 : top;
  if (hls.autoLevelCapping !== cap) {
    hls.autoLevelCapping = cap;
    state.shedLevels = ok.map((v, i) => (v ? null : i)).filter((i) => i !== null);
    log(cap < 0 ? 'every rung offered again' : `rungs shed by the server: levels ${state.shedLevels.join(',')}`);
  }
  const at = hls.loadLevel;
  if (at >= 0 && !ok[at]) {
    // The smooth switch: the buffer plays out while the next fragment comes from below.
    hls.nextLevel = ok.slice(0, at + 1).lastIndexOf(true);
  }
}
setInterval(followMaster, 1000);

// A live viewer more than 3 s behind hls.js's target for 2 s in a row (after a stall, a
// backgrounded tab, a pause) jumps to where hls.js would sit; a paused one stays paused.
let behindSince = null;
function catchUp() {
  const hls = state.hls;
  if (!hls || state.mode !== 'live' || video.paused || !Number.isFinite(hls.latency) || !Number.isFinite(hls.targetLatency)) { behindSince = null; return; }
  if (hls.latency <= hls.targetLatency + 3 || !Number.isFinite(hls.liveSyncPosition)) { behindSince = null; return; }
  behindSince ??= Date.now();
  if (Date.now() - behindSince < 2000) return;
  behindSince = null;
  log(`caught up: ${hls.latency.toFixed(1)} s behind live`);
  state.catchUps = (state.catchUps || 0) + 1;
  video.currentTime = hls.liveSyncPosition;
}

setInterval(() => {
  if (state.hls && state.mode === 'live' && Number.isFinite(state.hls.latency)) {
    $('#latency').textContent = `latency ${state.hls.latency.toFixed(1)} s`;
  }
  catchUp();
}, 500);

async function poll() {
  try {
    const b = await broadcast();
    state.broadcast = b;
    status(b.state);
    if (b.state === 'live' && b.hls) play(b.hls, 'live', b.broadcast);
    // A finished broadcast plays from the start; a live viewer keeps watching to the end.
    if (b.state === 'ended' && b.hls && state.mode !== 'live') play(b.vod || b.hls, 'vod', b.broadcast);
  } catch (e) {
    status('error');
    log(`broadcast status: ${e.message}`);
  }
  setTimeout(poll, state.mode ? 5000 : 1000);
}
poll();
