// aula's room client: one ES module an application imports instead of re-implementing the room
// signaling protocol (README "Client library"). The room page (/room/{room}) is built on it.
//
//   import { Room } from '/assets/aula.js';
//   const room = new Room({ room: 'math', token });
//   room.addEventListener('track', (e) => attach(e.detail.participant, e.detail.source, e.detail.track));
//   room.addEventListener('chat', (e) => show(e.detail));
//   await room.join({ camera: { width: 640 }, microphone: true });
//   room.chat('hello'); room.raiseHand(true); await room.shareScreen();
//
// One RTCPeerConnection per Room for its whole life: publishing, subscribing, screen share and
// ICE restarts are renegotiations of it. The signaling WebSocket resumes by itself after a drop
// (the server keeps the participant 10 s), and chat resumes from the last message it has.

// Simulcast layers aula's SFU understands: q (quarter), h (half), f (full).
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_000_000 },
];

// The simulcast layers Chrome will really send for a capture `height` high: libwebrtc sends
// at most 3 layers from 540p up, 2 from 270p, 1 below, and drops the last-listed (full-size)
// ones (seen at 640x360: `f` never sent, so viewers and the HLS ladder got 320x180 at best).
// Listing only what it sends keeps the full picture as the top layer.
export function simulcastFor(height) {
  if (!height || height >= 540) return SIMULCAST;
  if (height >= 270) return SIMULCAST.slice(1);
  return undefined;
}

// Prefer one video codec ('vp8' or 'h264') in a transceiver's offer.
export function preferCodec(transceiver, name) {
  if (!name || !RTCRtpReceiver.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities('video').codecs;
  const want = caps.filter((c) => c.mimeType.toLowerCase() === `video/${name.toLowerCase()}`);
  if (!want.length) throw new Error(`this browser cannot send ${name}`);
  const rest = caps.filter((c) => !want.includes(c));
  transceiver.setCodecPreferences([...want, ...rest]);
}

// A token's claims, for a client's own choices only (the server checks the token).
export function tokenClaims(token) {
  try { return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))); } catch { return {}; }
}

const SCREEN = new Set(['screen', 'screen_audio']);
// The server keeps a dropped participant 10 s; the client tries to resume for 9.
const RESUME_FOR_MS = 9000;

export class Room extends EventTarget {
  // room: the room name; token: an access token for it; origin: the server's origin (default:
  // this page's); iceRelay: relay-only ICE (what a network that blocks UDP to the server leaves).
  constructor({ room, token, origin = location.origin, iceRelay = false }) {
    super();
    this.name = room;
    this.token = token;
    this.origin = origin;
    this.iceRelay = iceRelay;
    this.claims = tokenClaims(token);
    this.me = null; // the `joined` message: participant, identity, grants, resume
    this.participants = new Map(); // id -> { id, identity, kind }
    this.tracks = new Map(); // track id -> { id, participant, identity, kind, source, muted, layers }
    this.mids = new Map(); // mid -> { track, participant } (subscriptions)
    this.hands = [];
    this.polls = new Map(); // poll id -> poll
    this.chatLog = []; // every chat message, once, in order
    this.sharing = false;
    this.group = null; // this client's breakout (null: the main room)
    this.resumed = 0;
    this.closedReason = null;
    this.sources = new Map(); // this client's sending RTCRtpTransceiver -> source
    this.muted = { microphone: false, camera: false };
    this.chatSeq = null; // the last chat message this client has
    this.unacked = new Map(); // chat id -> text, not yet acknowledged (resent after a drop)
    this.chatId = 0;
    this.leaving = false;
    this.dropDeadline = 0;
    this.ws = null;
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.screenStream = null;
    this.cameraSender = null;
  }

  // Events are CustomEvents with the server message (or a description) as `detail`:
  // joined, resumed, status ({ status }), participant_joined, participant_left (also for each
  // entry of a large room's `presence` batch, which is emitted too), track
  // ({ track: MediaStreamTrack, participant, source, mid, id }), track_published,
  // track_unpublished, track_muted, speakers, layers_needed, chat, chat_synced, chat_ack,
  // hands, poll, data, error ({ message }), closed ({ reason }), ice ({ state }), candidate.
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  send(msg) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg)); }

  // Captures and publishes (camera: false or { width }, microphone: bool), opens the `yjs` data
  // channel (this.collab), and joins. Returns the local camera/mic stream (null when viewing
  // only: no publish grant, or the camera refused; `this.viewOnly` says why).
  async join({ camera = { width: 640 }, microphone = true, simulcast = true, codec } = {}) {
    let stream = null;
    if (this.claims.grants && !this.claims.grants.publish) this.viewOnly = 'this token does not publish';
    else if (camera || microphone) {
      try {
        const width = camera?.width || 640;
        stream = await navigator.mediaDevices.getUserMedia({
          audio: !!microphone,
          video: camera ? { width, height: Math.round(width * 9 / 16), frameRate: 30 } : false,
        });
      } catch (e) { this.viewOnly = `${e.name || e}`; }
    }
    const video = stream?.getVideoTracks()[0];
    if (video) {
      const tr = this.pc.addTransceiver(video, {
        direction: 'sendonly', streams: [stream],
        sendEncodings: simulcast ? simulcastFor(video.getSettings().height) : undefined,
      });
      preferCodec(tr, codec);
      this.cameraSender = tr.sender;
      this.sources.set(tr, 'camera');
    }
    const audio = stream?.getAudioTracks()[0];
    if (audio) this.sources.set(this.pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] }), 'microphone');
    // The room's shared document: y-sync over this channel (see /assets/collab.bundle.js).
    this.collab = this.pc.createDataChannel('yjs', { ordered: true });
    this.pc.ontrack = (e) => {
      const pid = e.streams[0] ? Number(e.streams[0].id) : this.mids.get(e.transceiver.mid)?.participant;
      this.announceTrack(pid, e.transceiver.mid, e.track);
    };
    this.pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      this.emit('candidate', { candidate: e.candidate.candidate });
      this.send({ type: 'candidate', candidate: e.candidate.candidate });
    };
    this.pc.oniceconnectionstatechange = () => {
      this.emit('ice', { state: this.pc.iceConnectionState });
      // A network change: restart ICE over the same signaling connection.
      if (this.pc.iceConnectionState === 'failed') this.restartIce().catch((e) => this.emit('error', { message: `ice restart: ${e}` }));
    };
    this.connect(false);
    return stream;
  }

  // A received track, with what the room knows of it (its source once `subscribed` says which
  // track a mid carries; until then the kind's camera or microphone).
  announceTrack(pid, mid, track) {
    const sub = this.mids.get(mid);
    const info = sub ? this.tracks.get(sub.track) : undefined;
    const source = info?.source || (track.kind === 'audio' ? 'microphone' : 'camera');
    this.emit('track', { track, participant: sub ? sub.participant : pid, source, mid, id: sub?.track });
  }

  async offer(iceRestart = false) {
    const o = await this.pc.createOffer({ iceRestart });
    await this.pc.setLocalDescription(o);
    const sources = {};
    for (const [t, source] of this.sources) if (t.mid !== null && !t.stopped) sources[t.mid] = source;
    this.send({ type: 'offer', sdp: this.pc.localDescription.sdp, sources });
  }

  restartIce() { return this.offer(true); }

  async renegotiate() {
    if (this.pc.signalingState !== 'stable') await this.pc.setLocalDescription({ type: 'rollback' });
    await this.offer();
  }

  useIceServers(m) {
    if (!m.ice_servers?.length && !this.iceRelay) return;
    this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: m.ice_servers || [], iceTransportPolicy: this.iceRelay ? 'relay' : 'all' });
  }

  setTrack(t) {
    this.tracks.set(t.id, { id: t.id, participant: t.participant, identity: t.identity, kind: t.kind, source: t.source, muted: t.muted, layers: t.layers });
  }

  async onMessage(m) {
    switch (m.type) {
      case 'joined':
        this.me = m;
        this.useIceServers(m);
        for (const p of m.participants) this.participants.set(p.id, p);
        for (const t of m.tracks) this.setTrack(t);
        await this.offer();
        break;
      case 'resumed': {
        // Back on a new socket after a drop: events sent meanwhile were lost, so the room is
        // taken as it is now, and ICE restarts in case the network changed too.
        this.dropDeadline = 0;
        this.resumed += 1;
        this.useIceServers(m);
        const present = new Set(m.participants.map((p) => p.id));
        for (const id of [...this.participants.keys()]) {
          if (!present.has(id)) { const p = this.participants.get(id); this.participants.delete(id); this.emit('participant_left', { type: 'participant_left', participant: id, identity: p.identity }); }
        }
        for (const p of m.participants) this.participants.set(p.id, p);
        if (this.pc.signalingState !== 'stable') await this.pc.setLocalDescription({ type: 'rollback' });
        await this.offer(true);
        break;
      }
      case 'answer':
        await this.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
        break;
      case 'offer':
        // The server renegotiates subscriptions; the client is the polite side.
        if (this.pc.signalingState !== 'stable') await this.pc.setLocalDescription({ type: 'rollback' });
        await this.pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        this.send({ type: 'answer', sdp: this.pc.localDescription.sdp });
        break;
      case 'subscribed': {
        this.mids.set(m.mid, { track: m.track, participant: m.participant });
        // Its media may have arrived before this (ontrack fires when the offer is applied).
        const tr = this.pc.getTransceivers().find((t) => t.mid === m.mid);
        if (tr?.receiver.track) this.announceTrack(m.participant, m.mid, tr.receiver.track);
        break;
      }
      case 'participant_joined':
        this.participants.set(m.participant.id, m.participant);
        break;
      case 'participant_left':
        this.participants.delete(m.participant);
        for (const [id, t] of this.tracks) if (t.participant === m.participant) this.tracks.delete(id);
        break;
      case 'grouped': {
        // Someone moved to a breakout or back: media now flows within groups only.
        const p = this.participants.get(m.participant);
        if (p) p.group = m.group ?? undefined;
        if (this.me && m.participant === this.me.participant) this.group = m.group ?? null;
        break;
      }
      case 'presence':
        // A large room's joins and leaves, batched by the server: told as one event each.
        for (const p of m.joined) await this.onMessage({ type: 'participant_joined', participant: p });
        for (const l of m.left) await this.onMessage({ type: 'participant_left', participant: l.participant, identity: l.identity });
        break;
      case 'track_published':
        this.setTrack(m.track);
        break;
      case 'track_unpublished':
        m.info = this.tracks.get(m.track);
        this.tracks.delete(m.track);
        break;
      case 'track_muted': {
        const t = this.tracks.get(m.track);
        if (t) t.muted = m.muted;
        const source = m.source || (m.kind === 'audio' ? 'microphone' : 'camera');
        // Muted by a moderator (or by this client): stop sending it too.
        if (this.me && m.participant === this.me.participant) {
          for (const [tr, src] of this.sources) if (src === source && tr.sender.track) tr.sender.track.enabled = !m.muted;
          this.muted[source] = m.muted;
        }
        break;
      }
      case 'layers_needed': {
        // Dynacast: pause simulcast layers nobody watches.
        if (!this.cameraSender) break;
        const p = this.cameraSender.getParameters();
        if (!p.encodings) break;
        for (const e of p.encodings) if (e.rid) e.active = m.rids.includes(e.rid);
        await this.cameraSender.setParameters(p).catch((e) => this.emit('error', { message: `setParameters: ${e}` }));
        break;
      }
      case 'chat':
        // The server sends each message once per connection; after a resume, what came after
        // `chatSeq`. Anything at or below it is already here.
        if (this.chatSeq !== null && m.seq <= this.chatSeq) { this.emit('chat_repeat', m); return; }
        this.chatSeq = m.seq;
        this.chatLog.push(m);
        break;
      case 'chat_ack':
        this.unacked.delete(m.id);
        break;
      case 'chat_synced':
        if (this.chatSeq === null) this.chatSeq = m.last;
        // Sent before the drop and never acknowledged: the server may not have them.
        for (const [id, text] of this.unacked) this.send({ type: 'chat', id, text });
        break;
      case 'hands':
        this.hands = m.raised;
        break;
      case 'poll':
        this.polls.set(m.id, m);
        break;
      case 'error':
        if (m.id !== undefined) this.unacked.delete(m.id);
        break;
      case 'closed':
        // Ended by the server (removed, or replaced by the same identity elsewhere): no resume.
        this.leaving = true;
        this.closedReason = m.reason;
        break;
    }
    this.emit(m.type, m);
  }

  // The signaling socket; after an unexpected drop, resume the same participant.
  connect(resume) {
    const q = new URLSearchParams({ token: this.token });
    if (resume) q.set('resume', this.me.resume);
    if (this.chatSeq !== null) q.set('chat_after', String(this.chatSeq));
    const ws = new WebSocket(`${this.origin.replace(/^http/, 'ws')}/rtc/${encodeURIComponent(this.name)}?${q}`);
    this.ws = ws;
    // Messages are handled strictly in order: an answer is applied before the next offer.
    let chain = Promise.resolve();
    ws.onmessage = (e) => {
      chain = chain.then(() => this.onMessage(JSON.parse(e.data))).catch((err) => this.emit('error', { message: `${err}` }));
    };
    ws.onclose = () => {
      if (this.leaving || !this.me?.resume) { this.emit('status', { status: this.closedReason ? 'closed' : 'disconnected' }); return; }
      if (!this.dropDeadline) this.dropDeadline = Date.now() + RESUME_FOR_MS;
      if (Date.now() > this.dropDeadline) { this.emit('status', { status: 'disconnected' }); return; }
      this.emit('status', { status: 'reconnecting' });
      setTimeout(() => this.connect(true), 1000);
    };
  }

  // Sends a chat message (acknowledged by `chat_ack`, resent after a drop until it is).
  chat(text) {
    const id = `${Date.now().toString(36)}-${++this.chatId}`;
    this.unacked.set(id, text);
    this.send({ type: 'chat', id, text });
    return id;
  }

  raiseHand(raised) { this.send({ type: 'hand', raised }); }
  createPoll(question, options) { this.send({ type: 'poll_create', question, options }); }
  vote(poll, option) { this.send({ type: 'vote', poll, option }); }
  closePoll(poll) { this.send({ type: 'poll_close', poll }); }
  // One's own microphone/camera/screen by source, or (moderators: mute only) any track by id.
  mute(what, muted) {
    if (typeof what === 'number') this.send({ type: 'mute', track: what, muted });
    else this.send({ type: 'mute', source: what, muted });
  }
  // Moderators: removes a participant from the room.
  remove(participant) { this.send({ type: 'remove', participant }); }
  // Moderators: moves a participant (or oneself, to visit) to breakout `group`, or back to the
  // main room with `null`. Media regroups on the connections everyone has.
  moveTo(participant, group) { this.send({ type: 'group', participant, group }); }
  // Which simulcast layer to receive: 'low' | 'medium' | 'high', for one track or all.
  setQuality(quality, track) { this.send({ type: 'layer', quality, ...(track ? { track } : {}) }); }

  // Screen share: high resolution at a low frame rate, as suits text (the server serves it to
  // subscribers before cameras when their bandwidth is short), with its audio when the browser
  // gives one (a tab's). Returns the captured stream; the browser's own "Stop sharing" ends it.
  async shareScreen({ frameRate = 15, maxBitrate = 2_500_000 } = {}) {
    if (this.screenStream) return this.screenStream;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate }, audio: true });
    this.screenStream = stream;
    for (const track of stream.getTracks()) {
      const video = track.kind === 'video';
      if (video) track.contentHint = 'detail';
      const tr = this.pc.addTransceiver(track, {
        direction: 'sendonly', streams: [stream],
        sendEncodings: video ? [{ maxFramerate: frameRate, maxBitrate }] : undefined,
      });
      if (video) {
        const p = tr.sender.getParameters();
        p.degradationPreference = 'maintain-resolution';
        await tr.sender.setParameters(p).catch((e) => this.emit('error', { message: `screen parameters: ${e}` }));
      }
      this.sources.set(tr, video ? 'screen' : 'screen_audio');
      track.onended = () => { if (this.screenStream === stream) this.stopScreen(); };
    }
    this.sharing = true;
    await this.renegotiate();
    return stream;
  }

  async stopScreen() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    for (const [tr, source] of [...this.sources]) {
      if (!SCREEN.has(source)) continue;
      tr.stop();
      this.sources.delete(tr);
    }
    for (const t of stream.getTracks()) t.stop();
    this.sharing = false;
    this.emit('screen_stopped', {});
    await this.renegotiate();
  }

  leave() {
    this.leaving = true;
    this.send({ type: 'leave' });
    this.pc.close();
    this.ws?.close();
  }
}

export const isScreen = (source) => SCREEN.has(source);
