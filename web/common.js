// Shared helpers for aula's pages.
export const params = new URLSearchParams(location.search);
export const token = params.get('token') || '';
export const room = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');

export function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

export function $(sel) { return document.querySelector(sel); }

export function log(msg) {
  const el = $('#log');
  if (el) {
    const line = document.createElement('div');
    line.textContent = `${new Date().toLocaleTimeString()} ${msg}`;
    el.prepend(line);
  }
  console.log('[aula]', msg);
}

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

// The RTCPeerConnection configuration for a WHIP/WHEP page: the TURN relays aula mints for
// this token (`turn.*`; none when it has none), fetched before the offer so the first ICE
// gathering already has relay candidates. `?ice=relay` forces them (a network that blocks UDP
// to the server). The same relays come in the WHIP/WHEP answer's `Link` headers for other
// clients; a page cannot use those without an ICE restart, which WHIP does without trickle.
export async function iceConfig() {
  const config = { bundlePolicy: 'max-bundle' };
  try {
    const r = await fetch(`/api/rooms/${encodeURIComponent(room)}/ice-servers`, { headers: { Authorization: `Bearer ${token}` } });
    if (r.ok) config.iceServers = (await r.json()).ice_servers;
  } catch (e) { log(`ICE servers unavailable: ${e}`); }
  if (params.get('ice') === 'relay') config.iceTransportPolicy = 'relay';
  return config;
}
