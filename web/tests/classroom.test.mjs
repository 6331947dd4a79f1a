// Classroom tools (issue 16) over the room WebSocket: raised hands in order, polls with one
// vote per identity and throttled live totals, moderator-only actions, results kept across a
// restart. Node clients (no media), as the issue allows for voters.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, waitFor, roomSocket, launchBrowser } from './helpers.mjs';

let server, browser;
before(async () => { server = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }); browser = await launchBrowser(); });
after(async () => { await browser?.close(); await server?.stop(); });

const last = (c, type, pred = () => true) => [...c.msgs].reverse().find((m) => m.type === type && pred(m));
const send = (c, m) => c.ws.send(JSON.stringify(m));

test('hands go up in order, come down on leave or by a moderator; students cannot lower others', async () => {
  const room = 'hands';
  const teacher = await roomSocket(server.base, room, server.token(room, 'teacher', ['--admin']));
  const ana = await roomSocket(server.base, room, server.token(room, 'ana'));
  const ben = await roomSocket(server.base, room, server.token(room, 'ben'));
  const cam = await roomSocket(server.base, room, server.token(room, 'cam'));
  const raised = () => (last(teacher, 'hands')?.raised || []).map((h) => h.identity);
  send(ana, { type: 'hand', raised: true });
  await waitFor(() => raised().length === 1, 5000, 'ana raised');
  send(ben, { type: 'hand', raised: true });
  await waitFor(() => raised().length === 2, 5000, 'ben raised');
  send(cam, { type: 'hand', raised: true });
  await waitFor(() => raised().length === 3, 5000, 'three raised');
  assert.deepEqual(raised(), ['ana', 'ben', 'cam'], 'in the order raised');
  // A student cannot lower someone else's hand.
  const benId = last(teacher, 'hands').raised.find((h) => h.identity === 'ben').participant;
  send(cam, { type: 'hand', raised: false, participant: benId });
  await cam.next((m) => m.type === 'error' && /for moderators/.test(m.message), 5000, 'refused');
  // The moderator can; a participant who leaves has its hand lowered.
  send(teacher, { type: 'hand', raised: false, participant: benId });
  await waitFor(() => raised().join() === 'ana,cam', 5000, 'ben lowered by the teacher');
  ana.close();
  await waitFor(() => raised().join() === 'cam', 10_000, 'ana left: her hand is down');
  // A newcomer is told who has a hand up.
  const dan = await roomSocket(server.base, room, server.token(room, 'dan'));
  await dan.next((m) => m.type === 'hands', 5000, 'hands on join');
  assert.deepEqual(last(dan, 'hands').raised.map((h) => h.identity), ['cam']);
  for (const c of [teacher, ben, cam, dan]) c.close();
});

test('a poll with 20 voters: one vote each, throttled live totals, correct final results that survive a restart', async () => {
  const room = 'poll';
  const s = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' });
  const dir = s.dir;
  let again;
  try {
    const teacher = await roomSocket(s.base, room, s.token(room, 'teacher', ['--admin']));
    const voters = await Promise.all([...Array(20).keys()].map((i) => roomSocket(s.base, room, s.token(room, `s${i}`))));
    // Students cannot create or close polls.
    send(voters[0], { type: 'poll_create', question: 'mine?', options: ['a', 'b'] });
    await voters[0].next((m) => m.type === 'error' && /for moderators/.test(m.message), 5000, 'student poll refused');
    // Malformed polls are refused with the rule.
    send(teacher, { type: 'poll_create', question: 'q', options: ['only one'] });
    await teacher.next((m) => m.type === 'error' && /2 to 10 options/.test(m.message), 5000, 'one option refused');
    send(teacher, { type: 'poll_create', question: 'x'.repeat(600), options: ['a', 'b'] });
    await teacher.next((m) => m.type === 'error' && /question is 1 to 500 bytes/.test(m.message), 5000, 'long question refused');
    send(teacher, { type: 'poll_create', question: 'Which is a prime?', options: ['4', '7', '9'] });
    const { id } = await teacher.next((m) => m.type === 'poll_created', 5000, 'poll created');
    await Promise.all(voters.map((v) => v.next((m) => m.type === 'poll' && m.id === id && m.open, 5000, 'poll shown')));
    // 14 vote 7, 4 vote 9, 2 vote 4; everyone then tries again (refused), one tries a bad option.
    const choice = (i) => (i < 14 ? 1 : i < 18 ? 2 : 0);
    voters.forEach((v, i) => send(v, { type: 'vote', poll: id, option: choice(i) }));
    await Promise.all(voters.map((v) => v.next((m) => m.type === 'vote_ack' && m.poll === id, 5000, 'vote acknowledged')));
    voters.forEach((v) => send(v, { type: 'vote', poll: id, option: 0 }));
    await Promise.all(voters.map((v) => v.next((m) => m.type === 'error' && /already voted/.test(m.message), 5000, 'second vote refused')));
    const reader = await roomSocket(s.base, room, s.token(room, 'reader', []));
    send(reader, { type: 'vote', poll: id, option: 1 });
    await reader.next((m) => m.type === 'error' && /may not vote/.test(m.message), 5000, 'read-only vote refused');
    await waitFor(() => last(teacher, 'poll', (m) => m.id === id)?.voters === 20, 5000, 'live totals reach 20 voters');
    assert.deepEqual(last(teacher, 'poll', (m) => m.id === id).totals, [2, 14, 4]);
    // 20 votes arrived within a moment: the totals went out a few times, not 20.
    const updates = teacher.msgs.filter((m) => m.type === 'poll' && m.id === id).length;
    assert.ok(updates <= 6, `totals throttled (${updates} poll messages for 20 votes)`);
    send(teacher, { type: 'poll_close', poll: id });
    await voters[5].next((m) => m.type === 'poll' && m.id === id && !m.open, 5000, 'closed');
    send(voters[0], { type: 'vote', poll: id, option: 1 });
    await voters[0].next((m) => m.type === 'error' && /closed/.test(m.message), 5000, 'vote after close refused');
    for (const c of [teacher, reader, ...voters]) c.close();
    // Killed, not stopped: a closed poll's results are on disk when everyone is told.
    await s.kill();
    again = await startServer({ AULA_HLS__AUTO_EGRESS: 'false' }, { dir });
    const late = await roomSocket(again.base, room, again.token(room, 'late'));
    const p = await late.next((m) => m.type === 'poll' && m.id === id, 5000, 'the closed poll after a restart');
    assert.deepEqual([p.open, p.totals, p.voters, p.question], [false, [2, 14, 4], 20, 'Which is a prime?']);
    late.close();
  } finally {
    await again?.stop();
    const { rmSync } = await import('node:fs');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the room page: a student raises a hand and votes by clicking; the teacher asks and sees the totals', async () => {
  const room = 'class-page';
  const open = async (name, flags) => {
    const p = await (await browser.newContext()).newPage();
    await p.goto(`${server.base}/room/${room}?token=${server.token(room, name, flags)}`);
    await waitFor(() => p.evaluate(() => document.querySelector('#status').textContent.startsWith('joined')), 20_000, `${name} joined`);
    return p;
  };
  const teacher = await open('teacher', ['--publish', '--publish-data', '--admin']);
  const student = await open('student', ['--publish', '--publish-data']);
  assert.equal(await student.isHidden('#poll-form'), true, 'students get no poll form');
  await student.click('#hand');
  await waitFor(() => teacher.evaluate(() => document.querySelector('#hands-list').textContent === '1. student'), 10_000, 'the teacher sees the raised hand');
  assert.equal(await student.textContent('#hand'), 'Lower hand');
  await teacher.fill('#poll-question', 'Ready for the quiz?');
  await teacher.fill('#poll-options', 'yes, not yet');
  await teacher.click('#poll-form button');
  await waitFor(() => student.evaluate(() => document.querySelectorAll('.poll button').length === 2), 10_000, 'the student sees the poll');
  await student.click('.poll button >> text=yes');
  await waitFor(() => teacher.evaluate(() => Object.values(window.aulaRoom.polls).some((p) => p.voters === 1 && p.totals[0] === 1)), 10_000, 'the teacher sees the vote');
  await teacher.click('.poll button >> text=Close poll');
  await waitFor(() => student.evaluate(() => Object.values(window.aulaRoom.polls).some((p) => !p.open)), 10_000, 'closed for the student');
  assert.match(await student.textContent('.poll'), /yes: 1 \(100%\)/);
  await student.click('#hand');
  await waitFor(() => teacher.evaluate(() => document.querySelector('#hands-list').textContent === 'none'), 10_000, 'the hand is down');
  await teacher.context().close();
  await student.context().close();
});
