// Shared helpers for aula's pages.
export const params = new URLSearchParams(location.search);
export const token = params.get('token') || '';
export const room = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');

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

// Simulcast and codec choice, shared with the room client library.
export { SIMULCAST, simulcastFor, preferCodec } from '/assets/aula.js';

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
