// The room's shared whiteboard and code editor: a Yjs document synced with the server over the
// room connection's `yjs` data channel (y-protocols sync + awareness; chunked, see
// signaling/src/collab/dc.rs), CodeMirror 6 bound with y-codemirror.next (remote cursors from
// awareness), strokes in a Y.Array drawn on a canvas. Bundled by scripts/build-web.sh (esbuild)
// into web/vendor/collab.bundle.js.
import * as Y from 'yjs';
import * as syncProtocol from 'y-protocols/sync';
import * as awarenessProtocol from 'y-protocols/awareness';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';
import { EditorView, basicSetup } from 'codemirror';
import { javascript } from '@codemirror/lang-javascript';
import { yCollab } from 'y-codemirror.next';

const MSG_SYNC = 0;
const MSG_AWARENESS = 1;
const CHUNK = 16 * 1024;
const [WHOLE, MORE, LAST, CLOSED] = [0, 1, 2, 3];

// A y-protocols provider over one RTCDataChannel.
export class DataChannelProvider {
  constructor(channel, doc, { onStatus = () => {} } = {}) {
    this.channel = channel;
    this.doc = doc;
    this.awareness = new awarenessProtocol.Awareness(doc);
    this.synced = false;
    this.closed = null;
    this.partial = [];
    this.onStatus = onStatus;
    channel.binaryType = 'arraybuffer';
    channel.addEventListener('message', (e) => this.receive(new Uint8Array(e.data)));
    const start = () => {
      // Step 1 (what we have) and our presence; the server answers with step 2 and its step 1.
      const enc = encoding.createEncoder();
      encoding.writeVarUint(enc, MSG_SYNC);
      syncProtocol.writeSyncStep1(enc, doc);
      this.send(encoding.toUint8Array(enc));
      this.sendAwareness([doc.clientID]);
    };
    if (channel.readyState === 'open') start(); else channel.addEventListener('open', start);
    doc.on('update', (update, origin) => {
      if (origin === this) return;
      const enc = encoding.createEncoder();
      encoding.writeVarUint(enc, MSG_SYNC);
      syncProtocol.writeUpdate(enc, update);
      this.send(encoding.toUint8Array(enc));
    });
    // Local changes and the awareness module's 15 s renewals go out.
    this.awareness.on('update', ({ added, updated, removed }, origin) => {
      if (origin === this) return;
      this.sendAwareness(added.concat(updated, removed));
    });
  }

  sendAwareness(clients) {
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MSG_AWARENESS);
    encoding.writeVarUint8Array(enc, awarenessProtocol.encodeAwarenessUpdate(this.awareness, clients));
    this.send(encoding.toUint8Array(enc));
  }

  send(msg) {
    if (this.channel.readyState !== 'open' || this.closed) return;
    if (msg.length <= CHUNK) {
      const out = new Uint8Array(msg.length + 1);
      out[0] = WHOLE;
      out.set(msg, 1);
      this.channel.send(out);
      return;
    }
    for (let at = 0; at < msg.length; at += CHUNK) {
      const part = msg.subarray(at, at + CHUNK);
      const out = new Uint8Array(part.length + 1);
      out[0] = at + CHUNK >= msg.length ? LAST : MORE;
      out.set(part, 1);
      this.channel.send(out);
    }
  }

  receive(data) {
    const kind = data[0];
    const body = data.subarray(1);
    if (kind === CLOSED) {
      this.closed = new TextDecoder().decode(body);
      this.onStatus(`collaboration closed: ${this.closed}`);
      return;
    }
    if (kind === MORE) { this.partial.push(body.slice()); return; }
    let msg = body;
    if (kind === LAST) {
      this.partial.push(body);
      const len = this.partial.reduce((n, p) => n + p.length, 0);
      msg = new Uint8Array(len);
      let at = 0;
      for (const p of this.partial) { msg.set(p, at); at += p.length; }
      this.partial = [];
    }
    const dec = decoding.createDecoder(msg);
    const type = decoding.readVarUint(dec);
    if (type === MSG_SYNC) {
      const enc = encoding.createEncoder();
      encoding.writeVarUint(enc, MSG_SYNC);
      const t = syncProtocol.readSyncMessage(dec, enc, this.doc, this);
      if (encoding.length(enc) > 1) this.send(encoding.toUint8Array(enc));
      if (t === syncProtocol.messageYjsSyncStep2 && !this.synced) {
        this.synced = true;
        this.onStatus('synced');
      }
    } else if (type === MSG_AWARENESS) {
      awarenessProtocol.applyAwarenessUpdate(this.awareness, decoding.readVarUint8Array(dec), this);
    }
  }
}

const COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#46f0f0', '#f032e6'];

// Sets up the editor and whiteboard in `root` over `channel`; returns the handles tests use.
export function startCollab(channel, root, identity) {
  const doc = new Y.Doc();
  const status = root.querySelector('.collab-status');
  const provider = new DataChannelProvider(channel, doc, { onStatus: (s) => { status.textContent = s; } });
  const color = COLORS[Math.abs([...identity].reduce((h, c) => h * 31 + c.charCodeAt(0), 7)) % COLORS.length];
  provider.awareness.setLocalStateField('user', { name: identity, color, colorLight: `${color}33` });

  const code = doc.getText('code');
  const editor = new EditorView({
    doc: code.toString(),
    extensions: [basicSetup, javascript(), yCollab(code, provider.awareness)],
    parent: root.querySelector('.editor'),
  });

  // Whiteboard: each stroke is {color, points: [x, y, ...]} in canvas units, pushed when done.
  const strokes = doc.getArray('strokes');
  const canvas = root.querySelector('canvas');
  const ctx = canvas.getContext('2d');
  const draw = () => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const s of strokes.toArray()) {
      const p = s.points || [];
      if (p.length < 4) continue;
      ctx.strokeStyle = s.color || '#000';
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(p[0], p[1]);
      for (let i = 2; i + 1 < p.length; i += 2) ctx.lineTo(p[i], p[i + 1]);
      ctx.stroke();
    }
  };
  strokes.observe(draw);
  let current = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [Math.round((e.clientX - r.left) * (canvas.width / r.width)), Math.round((e.clientY - r.top) * (canvas.height / r.height))];
  };
  canvas.addEventListener('pointerdown', (e) => { current = { color, points: at(e) }; });
  canvas.addEventListener('pointermove', (e) => { if (current) { current.points.push(...at(e)); } });
  const finish = () => { if (current && current.points.length >= 4) strokes.push([current]); current = null; };
  canvas.addEventListener('pointerup', finish);
  canvas.addEventListener('pointerleave', finish);
  draw();
  return { doc, provider, editor, strokes, code };
}

window.aulaCollabLib = { startCollab, DataChannelProvider, Y };
