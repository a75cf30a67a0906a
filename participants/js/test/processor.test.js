'use strict';
// The idempotency rules, batches, in-doubt resolution and sagas of the
// Processor, with a real durable record, without NATS.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { Processor, FileStore, Settle, State, READ_ONLY, refuse, withCode, Reason, batch } = require('../src');
const { auditResponse } = require('../src/runtime');
const P = require('../src/protocol');
const { tempDir } = require('./helpers');

const NAME = 'pay';

/** A handler that records its calls and fails as told; its prepare votes read-only for the payload "read-only". */
function recordingHandler() {
  const h = {
    calls: [],
    fail: {},
    async prepare(tx, payload) {
      h.calls.push(['prepare', tx.id, payload ? payload.toString() : undefined]);
      if (h.fail.prepare) throw new Error(h.fail.prepare);
      if (payload && payload.toString() === 'read-only') return READ_ONLY;
      return undefined;
    },
    async commit(tx) { h.calls.push(['commit', tx.id]); if (h.fail.commit) { h.fail.commit--; throw new Error('disk full'); } },
    async abort(tx) { h.calls.push(['abort', tx.id]); if (h.fail.abort) { h.fail.abort--; throw new Error('busy'); } },
  };
  return h;
}

async function rig(t, { file, now, handler = recordingHandler(), sagaHandler, inDoubtAfter } = {}) {
  const f = file || path.join(tempDir(), 'rec.jsonl');
  const store = await FileStore.open(f);
  t.after(() => store.close());
  const proc = new Processor({ name: NAME, handler, sagaHandler, store, now, inDoubtAfter });
  const send = async (op, txid, { attempt = 1, payload = null, deadline = null, step = '', subject } = {}) => {
    const c = { txid, op, participant: NAME, attempt, replyTo: `natstx.reply.c1.${NAME}`, deadline, step, payload: payload && Buffer.from(payload) };
    let ans;
    await proc.handle(P.commandHeader(c), c.payload, subject ?? (step ? '' : P.commandSubject(NAME, txid)), (a) => { ans = a; });
    return ans;
  };
  return { proc, store, file: f, handler, send };
}

const brief = (a) => [a.reply && a.reply.result, a.settle, a.reply && a.reply.reason];

test('prepare, duplicate prepare, commit, duplicate commit', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('prepare', 't1', { payload: 'x' })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 't1', { attempt: 2, payload: 'x' })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit', 't1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit', 't1', { attempt: 2 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 't1', { attempt: 3 })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 't1', 'x'], ['commit', 't1']]);
  assert.equal(r.proc.state('t1'), 'committed');
  const s = r.proc.stats();
  assert.equal(s.duplicates, 3);
  assert.equal(s.prepares, 3);
});

test('a prepare voted abort gives the same vote again without the handler; its abort is a duplicate', async (t) => {
  const r = await rig(t);
  r.handler.fail.prepare = 'no stock';
  assert.deepEqual(brief(await r.send('prepare', 't1')), ['vote-abort', Settle.ACK, 'no stock']);
  r.handler.fail.prepare = '';
  assert.deepEqual(brief(await r.send('prepare', 't1', { attempt: 2 })), ['vote-abort', Settle.ACK, 'no stock']);
  assert.deepEqual(brief(await r.send('abort', 't1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 't1', undefined]]);
});

test('abort before prepare makes a late prepare vote abort; abort is idempotent', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('abort', 't1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 't1')), ['vote-abort', Settle.ACK, Reason.ABORTED_BEFORE_PREPARE]);
  assert.deepEqual(brief(await r.send('abort', 't1', { attempt: 2 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, []);
  // prepared, then aborted: the handler's abort runs once; a duplicate
  // prepare votes abort with the coordinator's reason.
  await r.send('prepare', 't2');
  assert.deepEqual(brief(await r.send('abort', 't2')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('abort', 't2')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 't2', { attempt: 2 })), ['vote-abort', Settle.ACK, Reason.ABORTED]);
  assert.deepEqual(r.handler.calls, [['prepare', 't2', undefined], ['abort', 't2']]);
});

test('commands that contradict the record are answered failed and terminated', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('commit', 'never')), ['failed', Settle.TERM, Reason.NO_RECORD]);
  await r.send('abort', 'ab');
  assert.deepEqual(brief(await r.send('commit', 'ab')), ['failed', Settle.TERM, Reason.COMMIT_AFTER_ABORT]);
  await r.send('prepare', 'co');
  await r.send('commit', 'co');
  assert.deepEqual(brief(await r.send('abort', 'co')), ['failed', Settle.TERM, Reason.ABORT_AFTER_COMMIT]);
  assert.equal(r.proc.stats().rejected, 3);
  assert.equal(r.proc.state('never'), 'none');
});

test('a prepare at or after its deadline votes abort without the handler', async (t) => {
  let clock = 1_000_000;
  const r = await rig(t, { now: () => clock });
  assert.deepEqual(brief(await r.send('prepare', 't1', { deadline: clock })), ['vote-abort', Settle.ACK, Reason.DEADLINE_PASSED]);
  assert.deepEqual(brief(await r.send('prepare', 't2', { deadline: clock + 1 })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 't2', undefined]]);
});

test('a failed commit or abort is delivered again (nak) until it succeeds', async (t) => {
  const r = await rig(t);
  await r.send('prepare', 't1');
  r.handler.fail.commit = 2;
  assert.deepEqual(brief(await r.send('commit', 't1')), ['failed', Settle.NAK, 'disk full']);
  assert.deepEqual(brief(await r.send('commit', 't1')), ['failed', Settle.NAK, 'disk full']);
  assert.equal(r.proc.state('t1'), 'prepared');
  assert.deepEqual(brief(await r.send('commit', 't1')), ['ack', Settle.ACK, '']);
  await r.send('prepare', 't2');
  r.handler.fail.abort = 1;
  assert.deepEqual(brief(await r.send('abort', 't2')), ['failed', Settle.NAK, 'busy']);
  assert.deepEqual(brief(await r.send('abort', 't2')), ['ack', Settle.ACK, '']);
  assert.equal(r.proc.stats().handlerErrors, 3);
});

test('malformed commands: answered failed when they say where, always terminated', async (t) => {
  const r = await rig(t);
  let ans;
  const h = P.commandHeader({ txid: 't1', op: 'prepare', participant: 'other', attempt: 1, replyTo: 'natstx.reply.c1.pay', deadline: null, step: '' });
  await r.proc.handle(h, null, '', (a) => { ans = a; });
  assert.equal(ans.reply.result, 'failed');
  assert.equal(ans.settle, Settle.TERM);
  assert.match(ans.reply.reason, /command for participant "other" reached participant "pay"/);
  assert.equal(ans.replyTo, 'natstx.reply.c1.pay');
  // on the wrong subject
  ans = await r.send('prepare', 't1', { subject: 'natstx.cmd.pay.t2' });
  assert.deepEqual([ans.reply.result, ans.settle], ['failed', Settle.TERM]);
  assert.match(ans.reply.reason, /arrived on subject/);
  // no reply subject: no reply
  const h2 = { ...h, [P.Header.REPLY_TO]: undefined };
  delete h2[P.Header.REPLY_TO];
  await r.proc.handle(h2, null, '', (a) => { ans = a; });
  assert.deepEqual([ans.replyTo, ans.settle], ['', Settle.TERM]);
  assert.equal(r.proc.stats().malformed, 3);
  assert.deepEqual(r.handler.calls, []);
});

test('the record survives a restart: duplicates answered from it, prepared ones in doubt', async (t) => {
  const first = await rig(t);
  await first.send('prepare', 'p1', { deadline: 9_000_000_000_000 });
  await first.send('prepare', 'c1');
  await first.send('commit', 'c1');
  await first.send('abort', 'a1');
  await first.store.close();
  // a torn last line, as a crash mid-write leaves it, is dropped
  fs.appendFileSync(first.file, '{"k":"zz","v":{"sta');
  const handler = recordingHandler();
  const again = await rig(t, { file: first.file, handler });
  assert.equal(again.proc.loadPrepared(), 1);
  assert.deepEqual(again.proc.inDoubt(), ['p1']);
  assert.deepEqual(brief(await again.send('prepare', 'p1')), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(brief(await again.send('commit', 'c1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await again.send('prepare', 'a1')), ['vote-abort', Settle.ACK, Reason.ABORTED_BEFORE_PREPARE]);
  assert.deepEqual(handler.calls, []);
  assert.deepEqual(brief(await again.send('commit', 'p1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(handler.calls, [['commit', 'p1']]);
  assert.deepEqual(again.proc.inDoubt(), []);
});

test('in doubt: asks after inDoubtAfter with the deadline, applies commit and abort, keeps pending', async (t) => {
  let clock = 5_000_000;
  const r = await rig(t, { now: () => clock, inDoubtAfter: 1000 });
  for (const id of ['d-commit', 'd-abort', 'd-pending', 'd-error']) await r.send('prepare', id, { deadline: clock + 500 });
  const asked = [];
  const answers = { 'd-commit': { outcome: 'commit' }, 'd-abort': { outcome: 'abort', reason: 'timed out' }, 'd-pending': { outcome: 'pending' } };
  const ask = async (req, timeout) => {
    asked.push(req);
    assert.ok(timeout >= 1000);
    if (!answers[req.id]) throw new Error('no coordinator is running');
    return answers[req.id];
  };
  assert.deepEqual(await r.proc.resolveInDoubt(ask), { asked: 0, resolved: 0 }); // not in doubt long enough
  clock += 1000;
  assert.deepEqual(await r.proc.resolveInDoubt(ask), { asked: 4, resolved: 2 });
  assert.deepEqual(asked.map((q) => q.id), ['d-abort', 'd-commit', 'd-error', 'd-pending']);
  assert.deepEqual(asked[0], { id: 'd-abort', participant: NAME, asked_at_ms: clock, deadline_ms: 5_000_500 });
  assert.equal(r.proc.state('d-commit'), 'committed');
  assert.equal(r.proc.state('d-abort'), 'aborted');
  assert.deepEqual(r.proc.inDoubt().sort(), ['d-error', 'd-pending']);
  // a command that arrives after all is a duplicate
  assert.deepEqual(brief(await r.send('commit', 'd-commit')), ['ack', Settle.ACK, '']);
  // an answer that contradicts the record takes it out of the doubt set
  await r.send('abort', 'x');
  r.proc.doubt.set('x', { id: 'x', deadline: null, since: 0 });
  answers.x = { outcome: 'commit' };
  await r.proc.resolveInDoubt(ask);
  assert.equal(r.proc.stats().inDoubtContradicted, 1);
  assert.ok(!r.proc.inDoubt().includes('x'));
  assert.equal(r.proc.stats().rejected, 0);
});

test('in doubt: a transaction whose commit arrives while an earlier question waits is not asked about', async (t) => {
  let clock = 5_000_000;
  const r = await rig(t, { now: () => clock, inDoubtAfter: 1000 });
  for (const id of ['a', 'b']) await r.send('prepare', id, { deadline: clock + 500 });
  clock += 1000;
  const asked = [];
  const ask = async (req) => {
    asked.push(req.id);
    if (req.id === 'a') await r.send('commit', 'b'); // b's commit arrives meanwhile
    return { outcome: 'abort', reason: 'no commit decision by the deadline (presumed abort, now recorded)' };
  };
  assert.deepEqual(await r.proc.resolveInDoubt(ask), { asked: 1, resolved: 1 });
  assert.deepEqual(asked, ['a']);
  assert.equal(r.proc.state('a'), 'aborted');
  assert.equal(r.proc.state('b'), 'committed');
  assert.equal(r.proc.stats().inDoubtContradicted, 0);
});

test('a batch: each command as if alone, replies grouped by subject in order', async (t) => {
  const r = await rig(t);
  await r.send('prepare', 'old');
  const mk = (txid, op, replyTo, payload = null) => ({ txid, op, participant: NAME, attempt: 1, replyTo, deadline: null, step: '', payload });
  const cmds = [mk('b1', 'prepare', 'natstx.reply.c1.pay', Buffer.from('1')), mk('b2', 'prepare', 'natstx.reply.c1.pay'), mk('old', 'commit', 'natstx.reply.c2.pay'), mk('nope', 'commit', 'natstx.reply.c2.pay')];
  const m = batch.encodeCommandBatch(NAME, 'id1', cmds);
  const acquire = async () => () => {};
  const ba = await r.proc.handleBatch(m.header, m.body, batch.batchSubject(NAME, 'id1'), acquire);
  assert.equal(ba.settle, Settle.ACK);
  assert.equal(ba.replies.length, 2);
  assert.equal(ba.replies[0].subject, 'natstx.reply.c1.pay');
  const items = batch.decodeBatch(ba.replies[0].header, ba.replies[0].body).map((it) => P.decodeReply(it.header, it.body));
  assert.deepEqual(items.map((x) => [x.txid, x.result]), [['b1', 'vote-commit'], ['b2', 'vote-commit']]);
  const items2 = batch.decodeBatch(ba.replies[1].header, ba.replies[1].body).map((it) => P.decodeReply(it.header, it.body));
  assert.deepEqual(items2.map((x) => [x.txid, x.result, x.reason]), [['old', 'ack', ''], ['nope', 'failed', Reason.NO_RECORD]]);
  // any nak makes the batch delivered again; a batch for another participant is terminated
  await r.send('prepare', 'n1');
  r.handler.fail.commit = 1;
  const m2 = batch.encodeCommandBatch(NAME, 'id2', [mk('n1', 'commit', 'natstx.reply.c1.pay')]);
  const ba2 = await r.proc.handleBatch(m2.header, m2.body, batch.batchSubject(NAME, 'id2'), acquire);
  assert.equal(ba2.settle, Settle.NAK);
  assert.equal(ba2.replies[0].header[P.Header.RESULT][0], 'failed'); // one reply goes alone, not as a batch
  const ba3 = await r.proc.handleBatch(m2.header, m2.body, batch.batchSubject('other', 'id2'), acquire);
  assert.deepEqual(ba3, { replies: [], settle: Settle.TERM, stopped: false });
  // stopping midway hands the batch back
  const ba4 = await r.proc.handleBatch(m.header, m.body, '', async () => null);
  assert.equal(ba4.stopped, true);
});

test('saga steps: action once, refusal kept, compensation only after the action, null compensation', async (t) => {
  const calls = [];
  const sagaHandler = {
    async action(st, payload) {
      calls.push(['action', st.sagaId, st.name, st.attempt]);
      if (payload && payload.toString() === 'refuse') throw refuse('out-of-stock', 'no widgets');
      if (payload && payload.toString() === 'fail') throw withCode('busy', new Error('try later'));
    },
    async compensate(st) { calls.push(['compensate', st.sagaId, st.name]); },
  };
  const r = await rig(t, { sagaHandler });
  const s = async (op, id, step, opts = {}) => brief(await r.send(op, id, { step, ...opts }));
  assert.deepEqual(await s('action', 's1', 'a'), ['ack', Settle.ACK, '']);
  assert.deepEqual(await s('action', 's1', 'a', { attempt: 2 }), ['ack', Settle.ACK, '']);
  assert.deepEqual(await s('compensate', 's1', 'a'), ['ack', Settle.ACK, '']);
  assert.deepEqual(await s('compensate', 's1', 'a'), ['ack', Settle.ACK, '']);
  assert.deepEqual(await s('action', 's2', 'a', { payload: 'refuse' }), ['refused', Settle.ACK, 'no widgets']);
  const again = await r.send('action', 's2', { step: 'a', attempt: 2 });
  assert.deepEqual([again.reply.result, again.reply.code], ['refused', 'out-of-stock']);
  assert.deepEqual(await s('compensate', 's3', 'a'), ['ack', Settle.ACK, 'null compensation: the action was never done']);
  const late = await r.send('action', 's3', { step: 'a' });
  assert.deepEqual([late.reply.result, late.reply.code], ['refused', 'compensated-first']);
  const f = await r.send('action', 's4', { step: 'a', payload: 'fail' });
  assert.deepEqual([f.reply.result, f.reply.code, f.settle], ['failed', 'busy', Settle.ACK]);
  assert.deepEqual(await s('action', 's4', 'a'), ['failed', Settle.ACK, Reason.ATTEMPT_FAILED]);
  assert.deepEqual(await s('action', 's4', 'a', { attempt: 2 }), ['ack', Settle.ACK, '']);
  assert.deepEqual(calls, [
    ['action', 's1', 'a', 1], ['compensate', 's1', 'a'], ['action', 's2', 'a', 1], ['action', 's4', 'a', 1], ['action', 's4', 'a', 2],
  ]);
  assert.equal(r.proc.stepState('s1', 'a'), 'compensated');
  assert.equal(r.proc.stepState('s4', 'a'), 'done');
  // a participant without a two-phase handler terminates prepare
  const sagaOnly = new Processor({ name: NAME, sagaHandler, store: r.store });
  let ans;
  const h = P.commandHeader({ txid: 'z', op: 'prepare', participant: NAME, attempt: 1, replyTo: 'natstx.reply.c.pay', deadline: null, step: '' });
  await sagaOnly.handle(h, null, '', (a) => { ans = a; });
  assert.deepEqual(brief(ans), ['failed', Settle.TERM, Reason.NO_TWO_PHASE_HANDLER]);
  // and refuses commit-one-phase for good (failed would be re-sent for ever)
  const h1 = P.commandHeader({ txid: 'z1', op: 'commit-one-phase', participant: NAME, attempt: 1, replyTo: 'natstx.reply.c.pay', deadline: null, step: '' });
  await sagaOnly.handle(h1, null, '', (a) => { ans = a; });
  assert.deepEqual(brief(ans), ['vote-abort', Settle.TERM, Reason.NO_TWO_PHASE_HANDLER]);
});

test('finished records are swept after retention; prepared ones stay', async (t) => {
  let clock = 1_000_000;
  const f = path.join(tempDir(), 'rec.jsonl');
  const store = await FileStore.open(f);
  t.after(() => store.close());
  const proc = new Processor({ name: NAME, handler: recordingHandler(), store, now: () => clock, retention: 1000 });
  const send = (op, txid) => proc.handle(P.commandHeader({ txid, op, participant: NAME, attempt: 1, replyTo: 'natstx.reply.c.pay', deadline: null, step: '' }), null, '', () => {});
  await send('prepare', 'p');
  await send('abort', 'a');
  clock += 999;
  assert.equal(await proc.sweep(), 0);
  clock += 1;
  assert.equal(await proc.sweep(), 1);
  assert.equal(proc.state('a'), 'none');
  assert.equal(proc.state('p'), 'prepared');
});

// The read-only vote (protocol 6): prepare resolving READ_ONLY.

test('a prepare whose handler resolves READ_ONLY is answered vote-read-only with no reason, settled ack, and recorded read-only', async (t) => {
  const r = await rig(t);
  const a = await r.send('prepare', 'ro', { payload: 'read-only' });
  assert.deepEqual(brief(a), ['vote-read-only', Settle.ACK, '']);
  assert.deepEqual([a.replyTo, a.reply.op, a.reply.attempt], [`natstx.reply.c1.${NAME}`, 'prepare', 1]);
  assert.equal(P.replyBody(a.reply).length, 0);
  assert.equal(P.decodeReply(P.replyHeader(a.reply), P.replyBody(a.reply)).result, 'vote-read-only');
  assert.equal(r.proc.state('ro'), State.READ_ONLY);
  assert.equal(State.READ_ONLY, 'read-only');
  assert.equal(r.store.get('ro').state, 'read-only');
  assert.ok(r.store.get('ro').finishedAt > 0);
  assert.deepEqual(r.handler.calls, [['prepare', 'ro', 'read-only']]);
  const s = r.proc.stats();
  assert.deepEqual([s.prepares, s.duplicates, s.rejected, s.handlerErrors], [1, 0, 0, 0]);
});

test('only READ_ONLY itself votes read-only: prepare resolving the string "read-only" or "vote-read-only" votes commit', async (t) => {
  const handler = recordingHandler();
  handler.prepare = async (tx, payload) => payload.toString();
  const r = await rig(t, { handler });
  assert.deepEqual(brief(await r.send('prepare', 's1', { payload: 'read-only' })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 's2', { payload: 'vote-read-only' })), ['vote-commit', Settle.ACK, '']);
  assert.equal(r.proc.state('s1'), 'prepared');
  assert.equal(READ_ONLY, Symbol.for('natstx.participant.read-only'));
});

test('a duplicate prepare after a read-only vote, redelivered or at a later attempt, is answered vote-read-only without calling the handler and counts as a duplicate', async (t) => {
  const r = await rig(t);
  await r.send('prepare', 'ro', { payload: 'read-only' });
  r.handler.fail.prepare = 'would vote abort if called';
  assert.deepEqual(brief(await r.send('prepare', 'ro', { payload: 'read-only' })), ['vote-read-only', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 'ro', { attempt: 2, payload: 'x' })), ['vote-read-only', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 'ro', { attempt: 3, deadline: 1 })), ['vote-read-only', Settle.ACK, '']); // deadline passed: still the record's answer
  assert.deepEqual(r.handler.calls, [['prepare', 'ro', 'read-only']]);
  assert.equal(r.proc.stats().duplicates, 3);
  assert.equal(r.proc.state('ro'), 'read-only');
});

test('commit and abort after a read-only vote are acked (settled ack, not rejected) without calling the handler, and leave the state read-only', async (t) => {
  const r = await rig(t);
  await r.send('prepare', 'ro', { payload: 'read-only' });
  assert.deepEqual(brief(await r.send('commit', 'ro')), ['ack', Settle.ACK, '']);
  assert.equal(r.proc.state('ro'), 'read-only');
  assert.deepEqual(brief(await r.send('abort', 'ro')), ['ack', Settle.ACK, '']);
  assert.equal(r.proc.state('ro'), 'read-only');
  assert.deepEqual(brief(await r.send('commit', 'ro', { attempt: 2 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('abort', 'ro', { attempt: 2 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('prepare', 'ro', { attempt: 2 })), ['vote-read-only', Settle.ACK, '']);
  assert.equal(r.proc.state('ro'), 'read-only');
  assert.equal(r.store.get('ro').state, 'read-only');
  assert.deepEqual(r.handler.calls, [['prepare', 'ro', 'read-only']]);
  const s = r.proc.stats();
  assert.deepEqual([s.rejected, s.duplicates, s.handlerErrors], [0, 5, 0]);
});

test('a read-only vote is durable: after a restart of the store the state is read-only, prepare answers vote-read-only and commit and abort are acked without the handler', async (t) => {
  const first = await rig(t);
  await first.send('prepare', 'ro', { payload: 'read-only', deadline: 9_000_000_000_000 });
  await first.store.close();
  const handler = recordingHandler();
  const again = await rig(t, { file: first.file, handler });
  assert.equal(again.store.get('ro').state, 'read-only');
  assert.equal(again.proc.state('ro'), 'read-only');
  assert.equal(again.proc.loadPrepared(), 0);
  assert.deepEqual(again.proc.inDoubt(), []);
  assert.deepEqual(brief(await again.send('prepare', 'ro', { attempt: 2, payload: 'read-only' })), ['vote-read-only', Settle.ACK, '']);
  assert.deepEqual(brief(await again.send('commit', 'ro')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await again.send('abort', 'ro')), ['ack', Settle.ACK, '']);
  assert.deepEqual(handler.calls, []);
  assert.equal(again.proc.state('ro'), 'read-only');
});

test('a read-only transaction is never in doubt: not in the doubt set, not loaded as prepared at start, never asked about on the outcome API', async (t) => {
  let clock = 5_000_000;
  const r = await rig(t, { now: () => clock, inDoubtAfter: 1000 });
  await r.send('prepare', 'ro', { payload: 'read-only', deadline: clock + 500 });
  await r.send('prepare', 'p1', { deadline: clock + 500 });
  assert.deepEqual(r.proc.inDoubt(), ['p1']);
  assert.equal(r.proc.stats().inDoubt, 1);
  clock += 10_000;
  const asked = [];
  const ask = async (req) => { asked.push(req.id); return { outcome: 'pending' }; };
  assert.deepEqual(await r.proc.resolveInDoubt(ask), { asked: 1, resolved: 0 });
  assert.deepEqual(asked, ['p1']);
  await r.store.close();
  const again = await rig(t, { file: r.file, now: () => clock, inDoubtAfter: 1000 });
  assert.equal(again.proc.loadPrepared(), 1);
  assert.deepEqual(again.proc.inDoubt(), ['p1']);
  clock += 10_000;
  asked.length = 0;
  await again.proc.resolveInDoubt(ask);
  assert.deepEqual(asked, ['p1']);
});

test('the audit answer gives read-only as the state of a transaction voted read-only', async (t) => {
  const r = await rig(t);
  await r.send('prepare', 'ro', { payload: 'read-only' });
  await r.send('prepare', 'p1');
  await r.send('prepare', 'ro2', { payload: 'read-only' });
  await r.send('commit', 'ro2');
  const resp = auditResponse(r.proc, Buffer.from(JSON.stringify({ ids: ['ro', 'p1', 'ro2', 'unknown', 'bad.id'] })));
  assert.deepEqual(resp, { participant: NAME, states: { ro: 'read-only', p1: 'prepared', ro2: 'read-only', unknown: 'none' } });
  assert.match(auditResponse(r.proc, Buffer.from('not json')).error, /not valid JSON/);
});

test('read-only records are swept after retention, like committed and aborted ones', async (t) => {
  let clock = 1_000_000;
  const f = path.join(tempDir(), 'rec.jsonl');
  const store = await FileStore.open(f);
  t.after(() => store.close());
  const handler = recordingHandler();
  const proc = new Processor({ name: NAME, handler, store, now: () => clock, retention: 1000 });
  const c = { txid: 'ro', op: 'prepare', participant: NAME, attempt: 1, replyTo: 'natstx.reply.c.pay', deadline: null, step: '' };
  await proc.handle(P.commandHeader(c), Buffer.from('read-only'), '', () => {});
  assert.equal(proc.state('ro'), 'read-only');
  clock += 999;
  assert.equal(await proc.sweep(), 0);
  clock += 1;
  assert.equal(await proc.sweep(), 1);
  assert.equal(proc.state('ro'), 'none');
});

test('a batch answers a read-only prepare with vote-read-only inside the reply batch', async (t) => {
  const r = await rig(t);
  const mk = (txid, payload) => ({ txid, op: 'prepare', participant: NAME, attempt: 1, replyTo: 'natstx.reply.c1.pay', deadline: null, step: '', payload: payload && Buffer.from(payload) });
  const m = batch.encodeCommandBatch(NAME, 'ro-b', [mk('r1', 'read-only'), mk('c1', 'x')]);
  const ba = await r.proc.handleBatch(m.header, m.body, batch.batchSubject(NAME, 'ro-b'), async () => () => {});
  assert.equal(ba.settle, Settle.ACK);
  const items = batch.decodeBatch(ba.replies[0].header, ba.replies[0].body).map((it) => P.decodeReply(it.header, it.body));
  assert.deepEqual(items.map((x) => [x.txid, x.result]), [['r1', 'vote-read-only'], ['c1', 'vote-commit']]);
});

// commit-one-phase (protocol 6): the only participant of a transaction
// prepares and commits at once, deciding the outcome alone.

const FAR = 9_000_000_000_000; // a deadline far away

test('commit-one-phase calls prepare then commit once each, answers ack and records committed; its duplicates are acked without a handler call and counted', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'o1', 'x'], ['commit', 'o1']]);
  assert.equal(r.proc.state('o1'), 'committed');
  assert.deepEqual(r.store.get('o1'), { state: 'committed', reason: '', finishedAt: r.store.get('o1').finishedAt });
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { attempt: 2, payload: 'x', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'o1', 'x'], ['commit', 'o1']]);
  assert.deepEqual(r.proc.inDoubt(), []);
  const s = r.proc.stats();
  assert.deepEqual([s.onePhases, s.duplicates, s.prepares, s.commits, s.aborts, s.rejected], [3, 2, 0, 0, 0, 0]);
});

test('commit-one-phase refused by prepare answers vote-abort with its reason and records aborted; its duplicates answer vote-abort with the same reason without the handler', async (t) => {
  const r = await rig(t);
  r.handler.fail.prepare = 'out of stock';
  assert.deepEqual(brief(await r.send('commit-one-phase', 'no', { payload: 'x', deadline: FAR })), ['vote-abort', Settle.ACK, 'out of stock']);
  r.handler.fail.prepare = '';
  assert.deepEqual(brief(await r.send('commit-one-phase', 'no', { attempt: 2, payload: 'x', deadline: FAR })), ['vote-abort', Settle.ACK, 'out of stock']);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'no', { payload: 'x', deadline: FAR })), ['vote-abort', Settle.ACK, 'out of stock']);
  assert.deepEqual(r.handler.calls, [['prepare', 'no', 'x']]);
  assert.equal(r.proc.state('no'), 'aborted');
  assert.equal(r.proc.stats().duplicates, 2);
  // after it, the usual rules: abort acked, commit a contradiction
  assert.deepEqual(brief(await r.send('abort', 'no')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit', 'no')), ['failed', Settle.TERM, Reason.COMMIT_AFTER_ABORT]);
  assert.deepEqual(r.handler.calls, [['prepare', 'no', 'x']]);
});

test('an abort before commit-one-phase makes it vote abort with the recorded reason, without the handler', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('abort', 'ab')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'ab', { payload: 'x', deadline: FAR })), ['vote-abort', Settle.ACK, Reason.ABORTED_BEFORE_PREPARE]);
  assert.deepEqual(r.handler.calls, []);
});

test('commit-one-phase voted read-only by prepare answers ack, records read-only and never calls commit; a duplicate is acked without the handler', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'ro', { payload: 'read-only', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.equal(r.proc.state('ro'), 'read-only');
  assert.deepEqual(brief(await r.send('commit-one-phase', 'ro', { attempt: 2, payload: 'read-only', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'ro', 'read-only']]);
  assert.deepEqual(r.proc.inDoubt(), []);
  assert.equal(r.proc.stats().duplicates, 1);
});

test('a commit-one-phase whose commit fails answers failed with nak and records prepared one-phase, not in doubt; delivered again it calls commit only, not prepare, and acks', async (t) => {
  const r = await rig(t);
  r.handler.fail.commit = 2;
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['failed', Settle.NAK, 'disk full']);
  assert.equal(r.proc.state('o1'), 'prepared');
  assert.deepEqual(r.store.get('o1'), { state: 'prepared', onePhase: true, deadline: FAR });
  assert.deepEqual(r.proc.inDoubt(), []);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['failed', Settle.NAK, 'disk full']);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'o1', 'x'], ['commit', 'o1'], ['commit', 'o1'], ['commit', 'o1']]);
  assert.equal(r.proc.state('o1'), 'committed');
  assert.equal(r.store.get('o1').onePhase, undefined);
  assert.deepEqual(r.proc.inDoubt(), []);
  const s = r.proc.stats();
  assert.deepEqual([s.handlerErrors, s.duplicates, s.rejected, s.inDoubt], [2, 0, 0, 0]);
});

test('a prepared one-phase record survives a restart of the store and is not in doubt: not loaded as in doubt, never asked about, audited prepared; the command delivered again calls commit only and acks', async (t) => {
  let clock = 5_000_000;
  const first = await rig(t, { now: () => clock, inDoubtAfter: 1000 });
  first.handler.fail.commit = 1;
  assert.deepEqual(brief(await first.send('commit-one-phase', 'o1', { payload: 'x', deadline: clock + 60_000 })), ['failed', Settle.NAK, 'disk full']);
  await first.send('prepare', 'p1', { deadline: clock + 60_000 }); // prepared for two-phase commit: in doubt
  await first.store.close();
  const handler = recordingHandler();
  const again = await rig(t, { file: first.file, handler, now: () => clock, inDoubtAfter: 1000 });
  assert.deepEqual(again.store.get('o1'), { state: 'prepared', onePhase: true, deadline: clock + 60_000 });
  assert.equal(again.proc.loadPrepared(), 1);
  assert.deepEqual(again.proc.inDoubt(), ['p1']);
  clock += 10_000;
  const asked = [];
  assert.deepEqual(await again.proc.resolveInDoubt(async (req) => { asked.push(req.id); return { outcome: 'pending' }; }), { asked: 1, resolved: 0 });
  assert.deepEqual(asked, ['p1']);
  const resp = auditResponse(again.proc, Buffer.from(JSON.stringify({ ids: ['o1', 'p1'] })));
  assert.deepEqual(resp.states, { o1: 'prepared', p1: 'prepared' });
  assert.deepEqual(brief(await again.send('commit-one-phase', 'o1', { payload: 'x', deadline: clock + 50_000 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(handler.calls, [['commit', 'o1']]);
  assert.equal(again.proc.state('o1'), 'committed');
  assert.deepEqual(again.proc.inDoubt(), ['p1']);
});

test('commit-one-phase at or past its deadline votes abort (deadline passed) without the handler; the takeover probe (deadline 1, no payload) votes abort without the handler, and the original command after it votes abort too', async (t) => {
  const clock = 1_000_000;
  const r = await rig(t, { now: () => clock });
  assert.deepEqual(brief(await r.send('commit-one-phase', 'at', { payload: 'x', deadline: clock })), ['vote-abort', Settle.ACK, Reason.DEADLINE_PASSED]);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'past', { payload: 'x', deadline: clock - 1 })), ['vote-abort', Settle.ACK, Reason.DEADLINE_PASSED]);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'late', { attempt: 3, deadline: 1 })), ['vote-abort', Settle.ACK, Reason.DEADLINE_PASSED]);
  assert.equal(r.proc.state('late'), 'aborted');
  assert.deepEqual(brief(await r.send('commit-one-phase', 'late', { payload: 'x', deadline: clock + 60_000 })), ['vote-abort', Settle.ACK, Reason.DEADLINE_PASSED]);
  assert.deepEqual(r.handler.calls, []);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'ok', { payload: 'x', deadline: clock + 1 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'ok', 'x'], ['commit', 'ok']]);
  // a probe of a transaction already committed in one phase learns it
  assert.deepEqual(brief(await r.send('commit-one-phase', 'ok', { attempt: 2, deadline: 1 })), ['ack', Settle.ACK, '']);
  assert.deepEqual(r.handler.calls, [['prepare', 'ok', 'x'], ['commit', 'ok']]);
});

test('commit-one-phase of a transaction prepared by a two-phase prepare is answered failed and terminated (rejected) without the handler; it stays prepared and in doubt', async (t) => {
  const r = await rig(t);
  assert.deepEqual(brief(await r.send('prepare', 'two', { deadline: FAR })), ['vote-commit', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'two', { payload: 'x', deadline: FAR })), ['failed', Settle.TERM, Reason.ONE_PHASE_OF_PREPARED]);
  assert.equal(Reason.ONE_PHASE_OF_PREPARED, 'one-phase commit of a transaction prepared for two-phase commit');
  assert.deepEqual(r.handler.calls, [['prepare', 'two', undefined]]);
  assert.equal(r.proc.state('two'), 'prepared');
  assert.deepEqual(r.proc.inDoubt(), ['two']);
  assert.equal(r.proc.stats().rejected, 1);
  assert.deepEqual(brief(await r.send('commit', 'two')), ['ack', Settle.ACK, '']);
});

test('commit or abort of a transaction prepared one-phase is answered failed and terminated (rejected) without the handler and leaves it prepared one-phase, not in doubt; after the one-phase commit ends, commit is acked and abort is abort after commit', async (t) => {
  const r = await rig(t);
  r.handler.fail.commit = 1;
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['failed', Settle.NAK, 'disk full']);
  assert.deepEqual(brief(await r.send('commit', 'o1')), ['failed', Settle.TERM, Reason.COMMIT_OF_ONE_PHASE]);
  assert.deepEqual(brief(await r.send('abort', 'o1')), ['failed', Settle.TERM, Reason.ABORT_OF_ONE_PHASE]);
  assert.deepEqual([Reason.COMMIT_OF_ONE_PHASE, Reason.ABORT_OF_ONE_PHASE], ['commit of a one-phase transaction', 'abort of a one-phase transaction']);
  assert.deepEqual(r.store.get('o1'), { state: 'prepared', onePhase: true, deadline: FAR });
  assert.deepEqual(r.proc.inDoubt(), []);
  assert.equal(r.proc.stats().rejected, 2);
  assert.deepEqual(r.handler.calls, [['prepare', 'o1', 'x'], ['commit', 'o1']]);
  assert.deepEqual(brief(await r.send('commit-one-phase', 'o1', { payload: 'x', deadline: FAR })), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('commit', 'o1')), ['ack', Settle.ACK, '']);
  assert.deepEqual(brief(await r.send('abort', 'o1')), ['failed', Settle.TERM, Reason.ABORT_AFTER_COMMIT]);
  assert.deepEqual(r.handler.calls, [['prepare', 'o1', 'x'], ['commit', 'o1'], ['commit', 'o1']]);
});

test('a batch answers commit-one-phase commands (ack, vote-abort, failed) inside the reply batch, each reply valid, and naks the batch for the failed one', async (t) => {
  const handler = recordingHandler();
  handler.commit = async (tx) => { if (tx.id === 'f1') throw new Error('disk full'); };
  const r = await rig(t, { handler });
  const mk = (txid, payload, deadline = FAR) => ({ txid, op: 'commit-one-phase', participant: NAME, attempt: 1, replyTo: 'natstx.reply.c1.pay', deadline, step: '', payload: payload && Buffer.from(payload) });
  const m = batch.encodeCommandBatch(NAME, 'op-b', [mk('f1', 'x'), mk('c1', 'x'), mk('d1', null, 1)]);
  const ba = await r.proc.handleBatch(m.header, m.body, batch.batchSubject(NAME, 'op-b'), async () => () => {});
  assert.equal(ba.settle, Settle.NAK);
  const items = batch.decodeBatch(ba.replies[0].header, ba.replies[0].body).map((it) => P.decodeReply(it.header, it.body));
  assert.deepEqual(items.map((x) => [x.txid, x.op, x.result, x.reason]), [
    ['f1', 'commit-one-phase', 'failed', 'disk full'], ['c1', 'commit-one-phase', 'ack', ''], ['d1', 'commit-one-phase', 'vote-abort', Reason.DEADLINE_PASSED],
  ]);
});
