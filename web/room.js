// The live room page: the interface over aula's room client (/assets/aula.js), which does the
// signaling, media, chat, hands, polls and screen share. This file only draws: tiles (camera
// and screen), the toolbar, chat, hands, polls, and the moderator's buttons.
import { $, log, params, room as roomName, token } from '/assets/common.js';
import { Room, isScreen } from '/assets/aula.js';

const client = new Room({ room: roomName, token, iceRelay: params.get('ice') === 'relay' });
const tiles = new Map(); // participant id (or `${id}:screen`, 'self', 'self:screen') -> tile
const votes = new Map(); // poll id -> option this page voted
// What tests and embedding pages read (the client itself is `client`).
window.aulaRoom = {
  client, pc: client.pc, tiles, mids: client.mids, tracks: client.tracks, chat: client.chatLog,
  errors: [], chatFrames: [], hands: [], polls: {}, muted: [], speakers: [], resumed: 0, left: [],
  data: [], viewer: false, candidates: [], iceStates: [], sharing: false,
  restartIce: () => client.restartIce(),
};

function showChat(m) {
  const line = document.createElement('div');
  line.textContent = `${m.identity}: ${m.text}`;
  line.title = new Date(m.at).toLocaleTimeString();
  $('#chat-log').append(line);
  $('#chat-log').scrollTop = $('#chat-log').scrollHeight;
}

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
      b.onclick = () => { votes.set(p.id, i); client.vote(p.id, i); showPoll(p); };
      row.append(b, ` ${p.totals[i]} (${pct}%)`);
    } else {
      row.textContent = `${votes.get(p.id) === i ? '✔ ' : ''}${o}: ${p.totals[i]} (${pct}%)`;
    }
    card.append(row);
  });
  if (p.open && client.me?.grants?.admin) {
    const close = document.createElement('button');
    close.textContent = 'Close poll';
    close.onclick = () => client.closePoll(p.id);
    card.append(close);
  }
}

function showOwnMute() {
  $('#mic').textContent = client.muted.microphone ? 'Unmute mic' : 'Mute mic';
  $('#camera').textContent = client.muted.camera ? 'Camera on' : 'Camera off';
}

// A tile's label: the name, what is muted, and a moderator's buttons for that participant.
function label(t, pid) {
  if (t.screen) { t.label.textContent = `${t.name} (screen)`; return; }
  const own = [...client.tracks.values()].filter((x) => String(x.participant) === String(pid) && !isScreen(x.source));
  const muted = own.filter((x) => x.muted).map((x) => (x.kind === 'audio' ? 'mic off' : 'camera off'));
  t.label.textContent = muted.length ? `${t.name} (${muted.join(', ')})` : t.name;
  if (pid !== 'self' && client.me?.grants?.admin) {
    const mute = document.createElement('button');
    mute.textContent = 'Mute';
    mute.className = 'mod-mute';
    mute.onclick = () => {
      for (const x of client.tracks.values()) if (String(x.participant) === String(pid) && x.source === 'microphone') client.mute(x.id, true);
    };
    const remove = document.createElement('button');
    remove.textContent = 'Remove';
    remove.className = 'mod-remove';
    remove.onclick = () => client.remove(Number(pid));
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
    if (screen) $('#tiles').prepend(el); // a shared screen leads the grid
    else $('#tiles').append(el);
    t = { el, video, label, stream: new MediaStream(), name: name || tiles.get(String(pid))?.name || `#${pid}`, screen };
    video.srcObject = t.stream;
    tiles.set(key, t);
    // A participant in another breakout than this page's is not shown.
    el.hidden = pid !== 'self' && (client.participants.get(Number(pid))?.group ?? null) !== client.group;
  }
  if (name) t.name = name;
  label(t, pid);
  return t;
}

// Only the tiles of this page's group (its breakout, or the main room) are shown.
function showGroup() {
  for (const [key, t] of tiles) {
    if (key.startsWith('self')) continue;
    const p = client.participants.get(Number(key.split(':')[0]));
    t.el.hidden = (p?.group ?? null) !== client.group;
  }
  $('#status').dataset.group = client.group ?? '';
}

function removeTile(key) {
  const t = tiles.get(String(key));
  if (t) { t.el.remove(); tiles.delete(String(key)); }
}

// A received track goes to its publisher's camera tile, or its screen tile for a screen share
// (a track may be told again once its source is known: it then moves).
function placeTrack({ participant, source, track }) {
  const t = tile(participant, undefined, isScreen(source));
  if (t.stream.getTracks().includes(track)) return;
  for (const o of tiles.values()) if (o.stream.getTracks().includes(track)) o.stream.removeTrack(track);
  t.stream.addTrack(track);
  track.addEventListener('ended', () => t.stream.removeTrack(track));
}

const on = (type, fn) => client.addEventListener(type, (e) => fn(e.detail));

on('status', ({ status }) => { if (status !== 'closed') $('#status').textContent = status; });
on('joined', (m) => {
  $('#poll-form').hidden = !m.grants?.admin;
  window.aulaRoom.resumeKey = m.resume;
  $('#status').textContent = `joined as ${m.identity}`;
  for (const p of m.participants) tile(p.id, p.identity);
});
on('resumed', (m) => {
  window.aulaRoom.resumed = client.resumed;
  $('#status').textContent = `resumed as ${m.identity}`;
  for (const p of m.participants) if (p.id !== m.participant && p.kind === 'room') tile(p.id, p.identity);
});
on('track', placeTrack);
on('participant_joined', (m) => {
  if (m.participant.kind === 'room') tile(m.participant.id, m.participant.identity);
  log(`${m.participant.identity} joined`);
});
on('participant_left', (m) => {
  window.aulaRoom.left.push(m.participant);
  removeTile(m.participant);
  removeTile(`${m.participant}:screen`);
  log(`${m.identity} left`);
});
on('track_published', (m) => tile(m.track.participant, m.track.identity));
on('track_unpublished', (m) => { if (m.info?.source === 'screen') removeTile(`${m.participant}:screen`); });
on('track_muted', (m) => {
  window.aulaRoom.muted.push(m);
  if (client.me && m.participant === client.me.participant) showOwnMute();
  const t = tiles.get(String(m.participant));
  if (t) label(t, m.participant);
});
on('speakers', (m) => {
  const loud = new Set(m.participants.map(String));
  for (const [key, t] of tiles) t.el.classList.toggle('speaking', loud.has(key));
  // The loudest participant's tile leads the grid (after shared screens).
  const first = m.participants[0] !== undefined && tiles.get(String(m.participants[0]));
  if (first && !first.el.classList.contains('screen')) {
    const lead = [...$('#tiles').children].find((el) => !el.classList.contains('screen'));
    if (lead && lead !== first.el) $('#tiles').insertBefore(first.el, lead);
  }
  window.aulaRoom.speakers = m.participants;
});
on('layers_needed', (m) => { window.aulaRoom.layersNeeded = m.rids; });
on('grouped', (m) => {
  log(`${client.participants.get(m.participant)?.identity ?? 'you'} moved to ${m.group ?? 'the main room'} by ${m.by}`);
  showGroup();
});
on('chat', (m) => { window.aulaRoom.chatFrames.push(m.seq); showChat(m); });
// Sent again (a resume overlapping what this page has): counted, not shown twice.
on('chat_repeat', (m) => window.aulaRoom.chatFrames.push(m.seq));
on('chat_synced', (m) => { if (m.truncated) log('some older chat messages are no longer kept'); });
on('hands', (m) => {
  window.aulaRoom.hands = m.raised;
  const mine = client.me && m.raised.some((h) => h.participant === client.me.participant);
  $('#hand').textContent = mine ? 'Lower hand' : 'Raise hand';
  $('#hands-list').textContent = m.raised.length ? m.raised.map((h, i) => `${i + 1}. ${h.identity}`).join('  ') : 'none';
});
on('poll', showPoll);
on('error', (m) => { log(`server: ${m.message}`); window.aulaRoom.errors.push(m.message); });
// An application message from the room service API: for the page that embeds the room.
on('data', (m) => { window.aulaRoom.data.push(m); window.dispatchEvent(new CustomEvent('aula:data', { detail: m })); });
on('closed', (m) => { window.aulaRoom.closed = m.reason; $('#status').textContent = `closed: ${m.reason}`; });
on('candidate', (c) => window.aulaRoom.candidates.push(c.candidate));
on('ice', ({ state }) => { log(`ice ${state}`); window.aulaRoom.iceStates.push(state); });
on('screen_stopped', () => {
  removeTile('self:screen');
  $('#screen').textContent = 'Share screen';
  window.aulaRoom.sharing = false;
});

async function shareScreen() {
  if (client.sharing) return client.stopScreen();
  const stream = await client.shareScreen();
  const self = tile('self', 'me', true);
  self.video.muted = true;
  for (const t of stream.getVideoTracks()) self.stream.addTrack(t);
  $('#screen').textContent = 'Stop sharing';
  window.aulaRoom.sharing = true;
}

async function start() {
  $('#room-name').textContent = roomName;
  const width = Number(params.get('width') || 640);
  // A token without `publish`, or a camera refused (no permission, no device): join as a
  // viewer who still sees, hears, chats and edits; Chromium then hides its host addresses
  // behind mDNS (`….local`) candidates, which the server passes over (it learns the address
  // from the checks themselves).
  const stream = await client.join({ camera: { width }, microphone: true, simulcast: params.get('simulcast') !== '0', codec: params.get('codec') });
  window.aulaRoom.viewer = !stream;
  if (stream) {
    const self = tile('self', 'me');
    self.stream.addTrack(stream.getVideoTracks()[0]);
    self.video.muted = true;
  } else {
    log(`viewing only: ${client.viewOnly}`);
    $('#mic').hidden = true;
    $('#camera').hidden = true;
  }
  // A screen needs the publish grant, not a camera.
  $('#screen').hidden = !!(client.claims.grants && !client.claims.grants.publish) || !navigator.mediaDevices?.getDisplayMedia;
  // The room's whiteboard and code editor: a Yjs document over the `yjs` data channel.
  import('/assets/collab.bundle.js')
    .then(({ startCollab }) => { window.aulaRoom.collab = startCollab(client.collab, $('#collab'), client.claims.sub || 'me'); })
    .catch((e) => { log(`collaboration unavailable: ${e}`); window.aulaRoom.errors.push(`collab: ${e}`); });
  $('#chat-form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('#chat-input').value;
    if (text) { client.chat(text); $('#chat-input').value = ''; }
  };
  $('#quality').onchange = () => client.setQuality($('#quality').value);
  $('#hand').onclick = () => client.raiseHand(!(client.me && client.hands.some((h) => h.participant === client.me.participant)));
  $('#mic').onclick = () => client.mute('microphone', !client.muted.microphone);
  $('#camera').onclick = () => client.mute('camera', !client.muted.camera);
  $('#screen').onclick = () => shareScreen().catch((e) => { log(`screen share: ${e}`); window.aulaRoom.errors.push(`screen: ${e}`); });
  $('#poll-form').onsubmit = (e) => {
    e.preventDefault();
    const options = $('#poll-options').value.split(',').map((o) => o.trim()).filter(Boolean);
    client.createPoll($('#poll-question').value, options);
    $('#poll-question').value = ''; $('#poll-options').value = '';
  };
  $('#leave').onclick = () => client.leave();
}

start().catch((e) => { log(`failed: ${e}`); $('#status').textContent = `failed: ${e}`; });
