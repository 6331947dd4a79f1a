// Low-latency viewer over WHEP: recvonly audio + video; ?quality=low|medium|high picks the layer.
import { $, iceConfig, log, params, room, token } from '/assets/common.js';

const state = { status: 'connecting', error: null };
window.aulaLive = state;

async function watch() {
  $('#room-name').textContent = room;
  const pc = new RTCPeerConnection(await iceConfig());
  state.pc = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  $('#video').srcObject = stream;
  state.video = $('#video');
  pc.ontrack = (e) => stream.addTrack(e.track);
  pc.onconnectionstatechange = () => {
    state.status = pc.connectionState;
    $('#status').textContent = pc.connectionState;
  };
  await pc.setLocalDescription(await pc.createOffer());
  const q = params.get('quality');
  const r = await fetch(`/whep/${encodeURIComponent(room)}${q ? `?quality=${encodeURIComponent(q)}` : ''}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (r.status !== 201) {
    state.error = `${r.status} ${(await r.text()).trim()}`;
    $('#status').textContent = `error: ${state.error}`;
    return;
  }
  state.resource = r.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
  setInterval(() => {
    const v = $('#video');
    $('#size').textContent = v.videoWidth ? `${v.videoWidth}x${v.videoHeight}` : '';
  }, 500);
}

watch().catch((e) => { state.error = String(e); log(String(e)); });
