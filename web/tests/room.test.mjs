// Three participants in one room through /room/{room}: each decodes the other two.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, waitFor, sleep, tileFrames, inboundAudio } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer(); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('three participants each decode video from both others, with audio and chat', async () => {
  const names = ['ana', 'ben', 'caro'];
  const pages = [];
  for (const n of names) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on('console', (m) => { if (process.env.DEBUG) console.log(`[${n}]`, m.text()); });
    await page.goto(`${server.base}/room/math?token=${server.token('math', n)}`);
    pages.push(page);
  }
  // Everyone sees two remote tiles with decoded frames.
  for (const [i, page] of pages.entries()) {
    await waitFor(async () => {
      const t = await tileFrames(page);
      const vals = Object.values(t);
      return vals.length === 2 && vals.every((v) => v.frames > 0) && t;
    }, 30_000, `${names[i]} decoding two remote videos`);
  }
  // Frames keep rising (polled: progress, not a rate, on a shared machine).
  const first = await Promise.all(pages.map(tileFrames));
  for (const [i, page] of pages.entries()) {
    const t = await waitFor(async () => {
      const t = await tileFrames(page);
      return Object.entries(t).every(([pid, v]) => v.frames > first[i][pid].frames + 50) && t;
    }, 30_000, `${names[i]} keeps decoding both (from ${JSON.stringify(first[i])})`);
    for (const [pid, v] of Object.entries(t)) assert.equal(v.audio, 1, `${names[i]} has an audio track from ${pid}`);
    const audio = await inboundAudio('aulaRoom', pages[i]);
    assert.ok(audio > 200, `${names[i]} received ${audio} audio packets`);
  }
  // Chat (over the room WebSocket) reaches everyone, the sender too, with the server's number.
  await pages[0].fill('#chat-input', 'hello class');
  await pages[0].click('#chat-form button');
  for (const page of pages) {
    await waitFor(() => page.evaluate(() => window.aulaRoom.chat.some((m) => m.text === 'hello class' && m.identity === 'ana' && m.seq >= 1)),
      10_000, 'chat message');
  }
  // The fake microphone beeps: someone is reported as an active speaker.
  await waitFor(() => pages[0].evaluate(() => window.aulaRoom.speakers.length > 0), 15_000, 'active speaker event');
  // A participant vanishing without leaving is noticed and the others keep going.
  await pages[2].context().close();
  await waitFor(async () => Object.keys(await tileFrames(pages[0])).length === 1, 30_000, 'caro removed from ana\'s tiles');
  const a = await tileFrames(pages[0]);
  await waitFor(async () => { const b = await tileFrames(pages[0]); return Object.keys(b).every((pid) => b[pid].frames > a[pid].frames); }, 20_000, 'ana still decodes ben');
});

test('on a phone-width screen the room page fits the width: no sideways scrolling, 16:9 tiles', async () => {
  const ana = await (await browser.newContext()).newPage();
  await ana.goto(`${server.base}/room/phone?token=${server.token('phone', 'ana')}`);
  const phone = await (await browser.newContext({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, hasTouch: true })).newPage();
  await phone.goto(`${server.base}/room/phone?token=${server.token('phone', 'ben')}`);
  await waitFor(async () => Object.values(await tileFrames(phone)).some((t) => t.frames > 0), 30_000, 'the phone decodes ana');
  const layout = await phone.evaluate(() => {
    const w = window.innerWidth;
    const boxes = [...document.querySelectorAll('.tile video, header, aside, #collab canvas, #chat-form')].map((el) => {
      const r = el.getBoundingClientRect();
      return { what: el.id || el.tagName.toLowerCase(), left: r.left, right: r.right, width: r.width, height: r.height };
    });
    return { w, scroll: document.documentElement.scrollWidth, boxes };
  });
  assert.ok(layout.scroll <= layout.w, `no sideways scrolling (${layout.scroll} px wide in a ${layout.w} px screen)`);
  for (const b of layout.boxes) assert.ok(b.left >= 0 && b.right <= layout.w + 0.5, `${b.what} within the screen: ${JSON.stringify(b)}`);
  for (const v of layout.boxes.filter((b) => b.what === 'video')) {
    assert.ok(Math.abs(v.height / v.width - 9 / 16) < 0.02, `tiles are 16:9: ${JSON.stringify(v)}`);
  }
  await ana.context().close();
  await phone.context().close();
});
