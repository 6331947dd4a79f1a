// Go live from the browser: camera + mic over WHIP (simulcast q/h/f), with status and bitrate.
import { $, iceConfig, log, params, preferCodec, room, simulcastFor, token } from '/assets/common.js';

let pc, stream, resource, timer, lastBytes = 0, lastAt = 0;
const state = { status: 'idle', kbps: 0, error: null };
window.aulaBroadcast = state;

function setStatus(s) { state.status = s; $('#status').textContent = s; }

async function preview() {
  const width = Number(params.get('width') || 1280);
  stream = await navigator.mediaDevices.getUserMedia({
    audio: true,
    video: { width, height: Math.round(width * 9 / 16), frameRate: 30 },
  });
  $('#preview').srcObject = stream;
}

async function goLive() {
  $('#golive').disabled = true;
  setStatus('connecting');
  pc = new RTCPeerConnection(await iceConfig());
  state.pc = pc;
  const vt = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly', streams: [stream],
    sendEncodings: params.get('simulcast') === '0' ? undefined : simulcastFor(stream.getVideoTracks()[0].getSettings().height),
  });
  preferCodec(vt, params.get('codec'));
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected') setStatus('live');
    if (pc.connectionState === 'failed') setStatus('failed');
  };
  await pc.setLocalDescription(await pc.createOffer());
  // ?profile= picks the HLS ladder of the broadcast's egress.
  const q = params.get('profile') ? `?profile=${encodeURIComponent(params.get('profile'))}` : '';
  const r = await fetch(`/whip/${encodeURIComponent(room)}${q}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (r.status !== 201) {
    const msg = (await r.text()).trim();
    state.error = `${r.status} ${msg}`;
    setStatus(`error: ${state.error}`);
    log(state.error);
    pc.close();
    $('#golive').disabled = false;
    return;
  }
  resource = r.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  $('#stop').disabled = false;
  timer = setInterval(sampleBitrate, 1000);
}

async function sampleBitrate() {
  if (!pc) return;
  let bytes = 0;
  (await pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') bytes += s.bytesSent; });
  const now = performance.now();
  if (lastAt) state.kbps = Math.round(((bytes - lastBytes) * 8) / (now - lastAt));
  lastBytes = bytes; lastAt = now;
  $('#bitrate').textContent = `${state.kbps} kbit/s sent`;
}

async function stop() {
  clearInterval(timer);
  if (resource) {
    await fetch(resource, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
    resource = null;
  }
  if (pc) pc.close();
  setStatus('ended');
  $('#stop').disabled = true;
  $('#golive').disabled = false;
}

$('#room-name').textContent = room;
$('#golive').onclick = () => goLive().catch((e) => { setStatus(`error: ${e}`); log(String(e)); });
$('#stop').onclick = () => stop();
preview().catch((e) => setStatus(`camera error: ${e}`));
state.goLive = goLive;
state.stop = stop;
