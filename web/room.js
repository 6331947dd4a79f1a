// Live room client: publishes camera (simulcast) + mic and, on demand, a screen share; receives
// everyone else; signaling and chat (ordered, with history: each message has the server's
// `seq`) over /rtc/{room}.
import { $, log, params, preferCodec, room, simulcastFor, token, wsUrl } from '/assets/common.js';

const tiles = new Map(); // participant id -> { el, video, stream, name }
const mids = new Map(); // mid -> { track, participant }
let pc, ws, me, videoSender, resumeKey, dropDeadline = 0, leaving = false;
// What each of this page's sending transceivers carries, told to the server with every offer.
const sources = new Map(); // RTCRtpTransceiver -> 'camera' | 'microphone' | 'screen' | 'screen_audio'
let screenStream = null;
// The last chat message this page has: a reconnect asks for what came after it.
let chatSeq = null, chatId = 0;
const unacked = new Map(); // chat id -> text sent, not yet acknowledged (resent on reconnect)

function showChat(m) {
  window.aulaRoom.chatFrames.push(m.seq); // as received: the server sends each once
  if (chatSeq !== null && m.seq <= chatSeq) return; // already shown
  chatSeq = m.seq;
  window.aulaRoom.chat.push(m);
  const line = document.createElement('div');
  line.textContent = `${m.identity}: ${m.text}`;
  line.title = new Date(m.at).toLocaleTimeString();
  $('#chat-log').append(line);
  $('#chat-log').scrollTop = $('#chat-log').scrollHeight;
}

let handUp = false;
const votes = new Map(); // poll id -> option this page voted

// A poll as a card: question, one button per option (until voted or closed), live totals.
function showPoll(p) {
  window.aulaRoom.polls[p.id] = p;
  let card = document.getElementById(`poll-${p.id}`);
  if (!card) {
    card = document.createElement('div');
    card.id = `poll-${p.id}`;
    card.className = 'poll';
    $('#polls').prepend(card);
  }
  card.replaceChildren();
  const q = document.createElement('div');
  q.textContent = `${p.open ? 'Poll' : 'Poll (closed)'}: ${p.question} (${p.voters} voted)`;
  card.append(q);
  p.options.forEach((o, i) => {
    const row = document.createElement('div');
    const pct = p.voters ? Math.round((100 * p.totals[i]) / p.voters) : 0;
    if (p.open && !votes.has(p.id)) {
      const b = document.createElement('button');
      b.textContent = o;
      b.onclick = () => { votes.set(p.id, i); send({ type: 'vote', poll: p.id, option: i }); showPoll(p); };
      row.append(b, ` ${p.totals[i]} (${pct}%)`);
    } else {
      row.textContent = `${votes.get(p.id) === i ? '✔ ' : ''}${o}: ${p.totals[i]} (${pct}%)`;
    }
    card.append(row);
  });
  if (p.open && me?.grants?.admin) {
    const close = document.createElement('button');
    close.textContent = 'Close poll';
    close.onclick = () => send({ type: 'poll_close', poll: p.id });
    card.append(close);
  }
}

// The server stops forwarding a muted track; the page also stops sending it.
function setSelfMuted(source, muted) {
  for (const [tr, src] of sources) if (src === source && tr.sender.track) tr.sender.track.enabled = !muted;
  if (source === 'microphone') { selfMuted.audio = muted; $('#mic').textContent = muted ? 'Unmute mic' : 'Mute mic'; }
  if (source === 'camera') { selfMuted.video = muted; $('#camera').textContent = muted ? 'Camera on' : 'Camera off'; }
}

function sendChat(text) {
  const id = `${Date.now().toString(36)}-${++chatId}`;
  unacked.set(id, text);
  send({ type: 'chat', id, text });
}

const tracks = new Map(); // track id -> { participant, kind, muted } (others' tracks)
const selfMuted = { audio: false, video: false };

// A tile's label: the name, what is muted, and a moderator's buttons for that participant.
function label(t, pid) {
  if (t.screen) { t.label.textContent = `${t.name} (screen)`; return; }
  const muted = [...tracks.values()].filter((x) => String(x.participant) === String(pid) && x.muted && !String(x.source).startsWith('screen')).map((x) => (x.kind === 'audio' ? 'mic off' : 'camera off'));
  t.label.textContent = muted.length ? `${t.name} (${muted.join(', ')})` : t.name;
  if (pid !== 'self' && me?.grants?.admin) {
    const mute = document.createElement('button');
    mute.textContent = 'Mute';
    mute.className = 'mod-mute';
    mute.onclick = () => { for (const [id, x] of tracks) if (String(x.participant) === String(pid) && x.kind === 'audio' && x.source !== 'screen_audio') send({ type: 'mute', track: id, muted: true }); };
    const remove = document.createElement('button');
    remove.textContent = 'Remove';
    remove.className = 'mod-remove';
    remove.onclick = () => send({ type: 'remove', participant: Number(pid) });
    t.label.append(' ', mute, ' ', remove);
  }
}

// A participant's camera tile, or (`screen`) the tile of its screen share, keyed `${pid}:screen`.
function tile(pid, name, screen = false) {
  const key = screen ? `${pid}:screen` : String(pid);
  let t = tiles.get(key);
  if (!t) {
    const el = document.createElement('div');
    el.className = screen ? 'tile screen' : 'tile';
    el.dataset.participant = pid;
    const video = document.createElement('video');
    video.autoplay = true; video.playsInline = true;
    const label = document.createElement('div');
    label.className = 'name';
    el.append(video, label);
    $('#tiles').append(el);
    t = { el, video, label, stream: new MediaStream(), name: name || tiles.get(String(pid))?.name || `#${pid}`, screen };
    video.srcObject = t.stream;
    if (screen) $('#tiles').prepend(el); // a shared screen leads the grid
    tiles.set(key, t);
  }
  if (name) t.name = name;
  label(t, pid);
  return t;
}

// A received track goes to its publisher's camera tile, or to its screen tile when the track
// it carries (known from `subscribed` and `track_published`) is a screen share.
function placeTrack(pid, mid, track) {
  const sub = mids.get(mid);
  const source = sub ? tracks.get(sub.track)?.source : undefined;
  const screen = source === 'screen' || source === 'screen_audio';
  const owner = sub ? sub.participant : pid;
  const t = tile(owner, undefined, screen);
  if (t.stream.getTracks().includes(track)) return;
  for (const o of tiles.values()) if (o.stream.getTracks().includes(track)) o.stream.removeTrack(track);
  t.stream.addTrack(track);
  track.onended = () => t.stream.removeTrack(track);
}

function removeTile(key) {
  const t = tiles.get(String(key));
  if (t) { t.el.remove(); tiles.delete(String(key)); }
}

function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

async function offer(iceRestart = false) {
  const o = await pc.createOffer({ iceRestart });
  await pc.setLocalDescription(o);
  const declared = {};
  for (const [t, source] of sources) if (t.mid !== null && !t.stopped) declared[t.mid] = source;
  send({ type: 'offer', sdp: pc.localDescription.sdp, sources: declared });
}

// Screen share: high resolution at a low frame rate, as suits text; the server serves it to
// subscribers before cameras when their bandwidth is short. Its audio too, when the browser
// gives one (a tab's).
async function shareScreen() {
  if (screenStream) return stopScreen();
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: true });
  screenStream = stream;
  for (const track of stream.getTracks()) {
    const video = track.kind === 'video';
    if (video) track.contentHint = 'detail';
    const tr = pc.addTransceiver(track, {
      direction: 'sendonly', streams: [stream],
      sendEncodings: video ? [{ maxFramerate: 15, maxBitrate: 2_500_000 }] : undefined,
    });
    if (video) {
      const p = tr.sender.getParameters();
      p.degradationPreference = 'maintain-resolution';
      await tr.sender.setParameters(p).catch((e) => log(`screen parameters: ${e}`));
    }
    sources.set(tr, video ? 'screen' : 'screen_audio');
    // The browser's own "Stop sharing" ends the track.
    track.onended = () => { if (screenStream === stream) stopScreen(); };
  }
  const self = tile('self', 'me', true);
  self.video.muted = true;
  for (const t of stream.getVideoTracks()) self.stream.addTrack(t);
  $('#screen').textContent = 'Stop sharing';
  window.aulaRoom.sharing = true;
  if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
  await offer();
}

async function stopScreen() {
  const stream = screenStream;
  screenStream = null;
  for (const [tr, source] of [...sources]) {
    if (source !== 'screen' && source !== 'screen_audio') continue;
    tr.stop();
    sources.delete(tr);
  }
  for (const t of stream?.getTracks() || []) t.stop();
  removeTile('self:screen');
  $('#screen').textContent = 'Share screen';
  window.aulaRoom.sharing = false;
  if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
  await offer();
}

// TURN relays from the server (`turn.*`), with fresh credentials on every join and resume;
// `?ice=relay` forces them (what a network that blocks UDP to the server leaves).
function useIceServers(m) {
  if (!m.ice_servers?.length && params.get('ice') !== 'relay') return;
  pc.setConfiguration({ ...pc.getConfiguration(), iceServers: m.ice_servers || [], iceTransportPolicy: params.get('ice') === 'relay' ? 'relay' : 'all' });
}

async function onMessage(m) {
  switch (m.type) {
    case 'joined': {
      me = m;
      $('#poll-form').hidden = !m.grants?.admin;
      useIceServers(m);
      resumeKey = m.resume;
      window.aulaRoom.resumeKey = m.resume;
      $('#status').textContent = `joined as ${m.identity}`;
      for (const tr of m.tracks) tracks.set(tr.id, { participant: tr.participant, kind: tr.kind, source: tr.source, muted: tr.muted });
      for (const p of m.participants) tile(p.id, p.identity);
      await offer();
      break;
    }
    case 'resumed': {
      // Back on a new socket after a drop: events sent meanwhile were lost, so reconcile tiles
      // with the room as it is, and restart ICE in case the network changed too.
      dropDeadline = 0;
      useIceServers(m);
      window.aulaRoom.resumed += 1;
      $('#status').textContent = `resumed as ${m.identity}`;
      const present = new Set(m.participants.map((p) => String(p.id)));
      for (const key of [...tiles.keys()]) if (!key.startsWith('self') && !present.has(key.split(':')[0])) removeTile(key);
      for (const p of m.participants) if (p.id !== m.participant && p.kind === 'room') tile(p.id, p.identity);
      if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
      await offer(true);
      break;
    }
    case 'answer':
      await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
      break;
    case 'offer': {
      // The server renegotiates subscriptions; we are the polite side.
      if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
      await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      send({ type: 'answer', sdp: pc.localDescription.sdp });
      break;
    }
    case 'subscribed': {
      mids.set(m.mid, { track: m.track, participant: m.participant });
      // Its track may have arrived before this (ontrack fires when the offer is applied).
      const tr = pc.getTransceivers().find((t) => t.mid === m.mid);
      if (tr?.receiver.track) placeTrack(m.participant, m.mid, tr.receiver.track);
      break;
    }
    case 'participant_joined':
      if (m.participant.kind === 'room') tile(m.participant.id, m.participant.identity);
      log(`${m.participant.identity} joined`);
      break;
    case 'participant_left':
      window.aulaRoom.left.push(m.participant);
      removeTile(m.participant);
      removeTile(`${m.participant}:screen`);
      log(`${m.identity} left`);
      break;
    case 'track_published':
      tracks.set(m.track.id, { participant: m.track.participant, kind: m.track.kind, source: m.track.source, muted: m.track.muted });
      tile(m.track.participant, m.track.identity);
      break;
    case 'track_unpublished': {
      const gone = tracks.get(m.track);
      tracks.delete(m.track);
      if (gone?.source === 'screen') removeTile(`${m.participant}:screen`);
      break;
    }
    case 'track_muted': {
      window.aulaRoom.muted.push(m);
      const x = tracks.get(m.track);
      if (x) x.muted = m.muted;
      if (me && m.participant === me.participant) {
        // Muted by a moderator (or by this page): stop sending too, and show it.
        setSelfMuted(m.source || (m.kind === 'audio' ? 'microphone' : 'camera'), m.muted);
      }
      const t = tiles.get(String(m.participant));
      if (t) label(t, m.participant);
      break;
    }
    case 'speakers': {
      const on = new Set(m.participants.map(String));
      for (const [pid, t] of tiles) t.el.classList.toggle('speaking', on.has(pid));
      window.aulaRoom.speakers = m.participants;
      break;
    }
    case 'layers_needed': {
      // Dynacast: pause simulcast layers nobody watches.
      if (!videoSender) break;
      const p = videoSender.getParameters();
      if (!p.encodings) break;
      for (const e of p.encodings) if (e.rid) e.active = m.rids.includes(e.rid);
      await videoSender.setParameters(p).catch((e) => log(`setParameters: ${e}`));
      window.aulaRoom.layersNeeded = m.rids;
      break;
    }
    case 'chat':
      showChat(m);
      break;
    case 'hands': {
      window.aulaRoom.hands = m.raised;
      const mine = me && m.raised.some((h) => h.participant === me.participant);
      handUp = mine;
      $('#hand').textContent = mine ? 'Lower hand' : 'Raise hand';
      $('#hands-list').textContent = m.raised.length ? m.raised.map((h, i) => `${i + 1}. ${h.identity}`).join('  ') : 'none';
      break;
    }
    case 'poll':
      showPoll(m);
      break;
    case 'chat_ack':
      unacked.delete(m.id);
      break;
    case 'chat_synced':
      if (m.truncated) log('some older chat messages are no longer kept');
      if (chatSeq === null) chatSeq = m.last;
      // Sent before the drop and never acknowledged: the server may not have them.
      for (const [id, text] of unacked) send({ type: 'chat', id, text });
      break;
    case 'error':
      log(`server: ${m.message}`);
      window.aulaRoom.errors.push(m.message);
      if (m.id !== undefined) unacked.delete(m.id);
      break;
    case 'data':
      // An application message from the room service API: for the page that embeds the room.
      window.aulaRoom.data.push(m);
      window.dispatchEvent(new CustomEvent('aula:data', { detail: m }));
      break;
    case 'closed':
      // Ended by the server (removed, or replaced by the same identity elsewhere): no resume.
      leaving = true;
      window.aulaRoom.closed = m.reason;
      $('#status').textContent = `closed: ${m.reason}`;
      break;
  }
}

// The token's claims, for the page's own choices only (the server checks the token).
function tokenClaims() {
  try { return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); } catch { return {}; } // opaque token
}
const claims = tokenClaims();

async function start() {
  $('#room-name').textContent = room;
  const width = Number(params.get('width') || 640);
  // A token without `publish`, or a camera refused (no permission, no device): join as a
  // viewer who still sees, hears, chats and edits; Chromium then hides its host addresses
  // behind mDNS (`….local`) candidates, which the server passes over (it learns the address
  // from the checks themselves).
  let stream = null, noCamera = null;
  if (claims.grants && !claims.grants.publish) noCamera = 'this token does not publish';
  else {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width, height: Math.round(width * 9 / 16), frameRate: 30 },
      });
    } catch (e) { noCamera = `${e.name || e}`; }
  }
  pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  window.aulaRoom = { pc, tiles, mids, tracks, errors: [], chat: [], chatFrames: [], hands: [], polls: {}, muted: [], speakers: [], resumed: 0, left: [], data: [], viewer: !stream, candidates: [], iceStates: [], restartIce: () => offer(true) };
  if (stream) {
    const self = tile('self', 'me');
    self.stream.addTrack(stream.getVideoTracks()[0]);
    self.video.muted = true;
    const vt = pc.addTransceiver(stream.getVideoTracks()[0], {
      direction: 'sendonly', streams: [stream],
      sendEncodings: params.get('simulcast') === '0' ? undefined : simulcastFor(stream.getVideoTracks()[0].getSettings().height),
    });
    preferCodec(vt, params.get('codec'));
    videoSender = vt.sender;
    sources.set(vt, 'camera');
    sources.set(pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] }), 'microphone');
  } else {
    log(`viewing only: ${noCamera}`);
    $('#mic').hidden = true;
    $('#camera').hidden = true;
  }
  // A screen needs the publish grant, not a camera.
  $('#screen').hidden = !!(claims.grants && !claims.grants.publish) || !navigator.mediaDevices?.getDisplayMedia;
  // The room's whiteboard and code editor: a Yjs document over the `yjs` data channel.
  const yjs = pc.createDataChannel('yjs', { ordered: true });
  const identity = claims.sub || 'me';
  import('/assets/collab.bundle.js')
    .then(({ startCollab }) => { window.aulaRoom.collab = startCollab(yjs, $('#collab'), identity); })
    .catch((e) => { log(`collaboration unavailable: ${e}`); window.aulaRoom.errors.push(`collab: ${e}`); });
  pc.ontrack = (e) => {
    const pid = e.streams[0] ? e.streams[0].id : (mids.get(e.transceiver.mid) || {}).participant;
    placeTrack(pid, e.transceiver.mid, e.track);
  };
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    window.aulaRoom.candidates.push(e.candidate.candidate);
    send({ type: 'candidate', candidate: e.candidate.candidate });
  };
  pc.oniceconnectionstatechange = () => {
    log(`ice ${pc.iceConnectionState}`);
    window.aulaRoom.iceStates.push(pc.iceConnectionState);
    // Network change: restart ICE over the same signaling connection.
    if (pc.iceConnectionState === 'failed') offer(true).catch((e) => log(`ice restart: ${e}`));
  };
  connect(false);
  $('#chat-form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('#chat-input').value;
    if (text) { sendChat(text); $('#chat-input').value = ''; }
  };
  $('#quality').onchange = () => send({ type: 'layer', quality: $('#quality').value });
  $('#hand').onclick = () => send({ type: 'hand', raised: !handUp });
  $('#mic').onclick = () => send({ type: 'mute', kind: 'audio', muted: !selfMuted.audio });
  $('#camera').onclick = () => send({ type: 'mute', kind: 'video', muted: !selfMuted.video });
  $('#screen').onclick = () => shareScreen().catch((e) => { log(`screen share: ${e}`); window.aulaRoom.errors.push(`screen: ${e}`); });
  $('#poll-form').onsubmit = (e) => {
    e.preventDefault();
    const options = $('#poll-options').value.split(',').map((o) => o.trim()).filter(Boolean);
    send({ type: 'poll_create', question: $('#poll-question').value, options });
    $('#poll-question').value = ''; $('#poll-options').value = '';
  };
  $('#leave').onclick = () => { leaving = true; send({ type: 'leave' }); pc.close(); };
}

// Signaling socket; after an unexpected drop, resume the same participant for up to 9 s
// (the server keeps it 10 s).
function connect(resume) {
  const q = `token=${encodeURIComponent(token)}${resume ? `&resume=${encodeURIComponent(resumeKey)}` : ''}${chatSeq !== null ? `&chat_after=${chatSeq}` : ''}`;
  ws = new WebSocket(wsUrl(`/rtc/${encodeURIComponent(room)}?${q}`));
  // Handle messages strictly in order: an answer must be applied before the next offer.
  let chain = Promise.resolve();
  ws.onmessage = (e) => {
    chain = chain.then(() => onMessage(JSON.parse(e.data))).catch((err) => log(`error: ${err}`));
  };
  ws.onclose = () => {
    if (leaving || !resumeKey) { if (!window.aulaRoom.closed) $('#status').textContent = 'disconnected'; return; }
    if (!dropDeadline) dropDeadline = Date.now() + 9000;
    if (Date.now() > dropDeadline) { $('#status').textContent = 'disconnected'; return; }
    $('#status').textContent = 'reconnecting';
    setTimeout(() => connect(true), 1000);
  };
}

start().catch((e) => { log(`failed: ${e}`); $('#status').textContent = `failed: ${e}`; });
