// The room page's whiteboard and code editor: headless Chromium in /room/{room} edits over the
// `yjs` WebRTC data channel while a Node y-websocket client edits over /collab/{room}; both
// converge, see each other's presence, and messages far above the chunk size cross both ways.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { startServer, launchBrowser, waitFor } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

test('Chromium over the data channel and Node over the WebSocket edit one document', async (t) => {
  const room = 'lesson';
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/room/${room}?token=${server.token(room, 'ana', ['--publish', '--publish-data'])}`);
  await waitFor(() => page.evaluate(() => window.aulaRoom?.collab?.provider.synced), 30_000, 'browser document synced over the data channel');

  const doc = new Y.Doc();
  const node = new WebsocketProvider(`${server.base.replace('http', 'ws')}/collab`, room, doc, {
    WebSocketPolyfill: WebSocket, params: { token: server.token(room, 'node', ['--publish-data']) }, disableBc: true,
  });
  t.after(() => { node.destroy(); doc.destroy(); });
  await waitFor(() => node.synced, 15_000, 'node synced');
  node.awareness.setLocalStateField('user', { name: 'node', color: '#123456' });

  // The browser types into CodeMirror and draws a stroke; Node edits the same text and board.
  await page.click('#editor .cm-content');
  await page.keyboard.type('from chromium; ');
  const box = await page.locator('#board').boundingBox();
  await page.mouse.move(box.x + 20, box.y + 20);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) await page.mouse.move(box.x + 20 + i * 15, box.y + 20 + i * 8);
  await page.mouse.up();
  doc.getText('code').insert(0, 'from node; ');
  doc.getArray('strokes').push([{ color: '#123456', points: [1, 2, 30, 40] }]);

  const browserState = () => page.evaluate(() => {
    const c = window.aulaRoom.collab;
    const users = [...c.provider.awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean);
    return { text: c.code.toString(), strokes: c.strokes.length, users, editor: c.editor.state.doc.toString() };
  });
  const converged = await waitFor(async () => {
    const b = await browserState();
    const t = doc.getText('code').toString();
    return b.text === t && t.includes('from chromium; ') && t.includes('from node; ') && b.strokes === 2 && doc.getArray('strokes').length === 2 && b;
  }, 20_000, 'both sides converge');
  assert.equal(converged.editor, converged.text, 'the editor shows the shared text');
  await waitFor(async () => (await browserState()).users.includes('node'), 10_000, 'browser sees node');
  await waitFor(() => [...node.awareness.getStates().values()].some((s) => s.user?.name === 'ana'), 10_000, 'node sees ana');

  // 100 KB from Node reaches the browser in 16 KiB chunks; 60 KB from the browser reaches Node.
  const big = 'x'.repeat(100_000);
  doc.getText('code').insert(0, big);
  await waitFor(async () => (await browserState()).text.length === doc.getText('code').length, 20_000, 'big update down the data channel');
  await page.evaluate(() => { window.aulaRoom.collab.code.insert(0, 'y'.repeat(60_000)); });
  await waitFor(async () => doc.getText('code').length === (await browserState()).text.length && doc.getText('code').toString().startsWith('yyyy'), 20_000, 'big update up the data channel');
  assert.deepEqual(await page.evaluate(() => window.aulaRoom.errors), []);
});
