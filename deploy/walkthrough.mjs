import { launchBrowser, waitFor, tileFrames } from '../web/tests/helpers.mjs';
const [base, spki, t1, t2] = process.argv.slice(2);
const b = await launchBrowser([`--ignore-certificate-errors-spki-list=${spki}`]);
const pages = [];
for (const t of [t1, t2]) { const p = await (await b.newContext()).newPage(); await p.goto(`${base}/room/walk?token=${t}`); pages.push(p); }
for (const [i, p] of pages.entries()) {
  const f = await waitFor(async () => { const v = Object.values(await tileFrames(p)); return v.some((x) => x.frames > 60) && v; }, 60_000, `page ${i}`);
  const pair = await p.evaluate(async () => { const st = await window.aulaRoom.pc.getStats(); let out; st.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) { const pr = st.get(s.selectedCandidatePairId); out = `${st.get(pr.localCandidateId).address} -> ${st.get(pr.remoteCandidateId).address}:${st.get(pr.remoteCandidateId).port}/${st.get(pr.remoteCandidateId).protocol}`; } }); return out; });
  console.log(`page ${i}: decoding ${JSON.stringify(f)} over ${pair}; secure ${await p.evaluate(() => window.isSecureContext)}`);
}
await b.close();
