'use strict';
// The Participant against a real NATS server with JetStream (`natstx nats`,
// the command stream made as the coordinator makes it), and a transaction
// through a real coordinator (`natstx server`).
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { connect, headers } = require('@nats-io/transport-node');
const { jetstream, jetstreamManager } = require('@nats-io/jetstream');
const { Participant, FileStore, READ_ONLY, batch } = require('../src');
const P = require('../src/protocol');
const { startNatstx, waitFor, tempDir, createCommandStream } = require('./helpers');

const NAME = 'jsrt';
const REPLY = `natstx.reply.t1.${NAME}`;

function toHeaders(rec) {
  const h = headers();
  for (const [k, vs] of Object.entries(rec)) for (const v of vs) h.append(k, v);
  return h;
}

test('the participant on a real NATS server', { timeout: 120_000 }, async (t) => {
  const srv = await startNatstx('nats');
  t.after(() => srv.stop());
  const nc = await connect({ servers: srv.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await createCommandStream(jsm);
  const js = jetstream(nc);

  const calls = [];
  const gate = { prepareDelay: 0, commitFailures: 0 };
  const handler = {
    async prepare(tx, payload) {
      calls.push(['prepare', tx.id]);
      if (gate.prepareDelay) await new Promise((r) => setTimeout(r, gate.prepareDelay));
      if (payload && payload.toString() === 'no') throw new Error('refusing');
      if (payload && payload.toString() === 'ro') return READ_ONLY;
      return undefined;
    },
    async commit(tx) {
      calls.push(['commit', tx.id]);
      if (gate.commitFailures > 0) { gate.commitFailures--; throw new Error('not now'); }
    },
    async abort(tx) { calls.push(['abort', tx.id]); },
  };
  const dir = tempDir();
  const start = async () => {
    const store = await FileStore.open(path.join(dir, 'rec.jsonl'));
    const p = new Participant(nc, { name: NAME, handler, store, ackWait: 5000, opTimeout: 2000, retryDelay: 50, inDoubtAfter: 300 });
    await p.start();
    return p;
  };
  let p = await start();

  // replies, as decoded by a coordinator would read them
  const replies = [];
  nc.subscribe(`natstx.reply.t1.${NAME}`, {
    callback: (err, m) => {
      const h = m.headers.toRecord();
      if (batch.isBatch(h)) {
        for (const it of batch.decodeBatch(h, m.data)) replies.push({ ...P.decodeReply(it.header, it.body), inBatch: true });
      } else replies.push(P.decodeReply(h, m.data));
    },
  });
  let seq = 0;
  const publish = async (op, txid, { attempt = 1, payload = null, deadline = Date.now() + 60_000, extra = {} } = {}) => {
    const c = { txid, op, participant: NAME, attempt, replyTo: REPLY, deadline: P.votes(op) ? deadline : null, step: '', payload };
    const h = { ...P.commandHeader(c), ...extra };
    h[P.Header.MSG_ID] = [`${h[P.Header.MSG_ID][0]}.${seq++}`]; // a deliberate re-send is stored again
    await js.publish(P.commandSubject(NAME, txid), payload || undefined, { headers: toHeaders(h) });
  };
  const replyOf = async (txid, op, n = 1) => {
    await waitFor(() => replies.filter((r) => r.txid === txid && r.op === op).length >= n, 10_000, () => `${n} ${op} replies for ${txid}: ${JSON.stringify(replies)}`);
    return replies.filter((r) => r.txid === txid && r.op === op);
  };
  const streamEmpty = () => waitFor(async () => (await jsm.streams.info(P.COMMAND_STREAM)).state.messages === 0, 10_000, () => 'an empty command stream');

  await t.test('the durable consumer has the Go runtime\'s settings', async () => {
    const ci = await jsm.consumers.info(P.COMMAND_STREAM, `natstx-${NAME}`);
    assert.equal(ci.config.durable_name, `natstx-${NAME}`);
    assert.equal(ci.config.filter_subject, `natstx.cmd.${NAME}.>`);
    assert.equal(ci.config.ack_policy, 'explicit');
    assert.equal(ci.config.deliver_policy, 'all');
    assert.equal(ci.config.ack_wait, 5000 * 1e6);
    assert.equal(ci.config.max_ack_pending, 512);
    assert.equal(ci.config.description, `natstx commands for participant ${NAME}`);
  });

  await t.test('prepare and commit, each published twice: one handler call each, the same answers', async () => {
    await publish('prepare', 'tx1', { payload: Buffer.from('{"a":1}') });
    await publish('prepare', 'tx1', { payload: Buffer.from('{"a":1}') });
    const votes = await replyOf('tx1', 'prepare', 2);
    assert.deepEqual(votes.map((r) => [r.result, r.participant, r.attempt]), [['vote-commit', NAME, 1], ['vote-commit', NAME, 1]]);
    await publish('commit', 'tx1');
    await publish('commit', 'tx1', { attempt: 2 });
    const acks = await replyOf('tx1', 'commit', 2);
    assert.deepEqual(acks.map((r) => r.result).sort(), ['ack', 'ack']);
    assert.deepEqual(calls.filter((c) => c[1] === 'tx1'), [['prepare', 'tx1'], ['commit', 'tx1']]);
    await streamEmpty();
  });

  await t.test('a failed commit is redelivered after the retry delay until it succeeds', async () => {
    await publish('prepare', 'tx2');
    await replyOf('tx2', 'prepare');
    gate.commitFailures = 2;
    await publish('commit', 'tx2');
    const rs = await replyOf('tx2', 'commit', 3);
    assert.deepEqual(rs.map((r) => r.result), ['failed', 'failed', 'ack']);
    assert.equal(calls.filter((c) => c[0] === 'commit' && c[1] === 'tx2').length, 3);
    await streamEmpty();
  });

  await t.test('abort before prepare; commit with no record; a malformed command: answered and never redelivered', async () => {
    await publish('abort', 'tx3');
    assert.equal((await replyOf('tx3', 'abort'))[0].result, 'ack');
    await publish('prepare', 'tx3');
    assert.deepEqual((await replyOf('tx3', 'prepare')).map((r) => [r.result, r.reason]), [['vote-abort', 'aborted before prepare arrived']]);
    await publish('commit', 'tx4');
    assert.deepEqual((await replyOf('tx4', 'commit')).map((r) => r.result), ['failed']);
    await publish('prepare', 'tx5', { extra: { [P.Header.VERSION]: ['3'] } });
    const bad = await replyOf('tx5', 'prepare');
    assert.match(bad[0].reason, /unsupported protocol version/);
    await streamEmpty();
    assert.equal(calls.filter((c) => ['tx3', 'tx4', 'tx5'].includes(c[1])).length, 0);
  });

  await t.test('a command batch is answered with a reply batch', async () => {
    const mk = (txid, op) => ({ txid, op, participant: NAME, attempt: 1, replyTo: REPLY, deadline: null, step: '', payload: null });
    const m = batch.encodeCommandBatch(NAME, 'b-1', [mk('tx6', 'prepare'), mk('tx7', 'prepare'), mk('tx1', 'commit')]);
    await js.publish(batch.batchSubject(NAME, 'b1'), m.body, { headers: toHeaders(m.header) });
    await waitFor(() => replies.filter((r) => r.inBatch).length === 3, 10_000, () => 'three replies in a batch');
    assert.deepEqual(replies.filter((r) => r.inBatch).map((r) => [r.txid, r.op, r.result]), [['tx6', 'prepare', 'vote-commit'], ['tx7', 'prepare', 'vote-commit'], ['tx1', 'commit', 'ack']]);
    assert.equal(p.stats().batches, 1);
    await streamEmpty();
  });

  await t.test('a read-only vote: vote-read-only, its duplicate the same, commit and abort acked, no handler call but the first prepare', async () => {
    await publish('prepare', 'ro1', { payload: Buffer.from('ro') });
    assert.deepEqual((await replyOf('ro1', 'prepare')).map((r) => [r.result, r.reason]), [['vote-read-only', '']]);
    await publish('prepare', 'ro1', { attempt: 2, payload: Buffer.from('ro') });
    assert.deepEqual((await replyOf('ro1', 'prepare', 2)).map((r) => r.result), ['vote-read-only', 'vote-read-only']);
    await publish('commit', 'ro1');
    await publish('abort', 'ro1');
    assert.deepEqual((await replyOf('ro1', 'commit')).map((r) => r.result), ['ack']);
    assert.deepEqual((await replyOf('ro1', 'abort')).map((r) => r.result), ['ack']);
    assert.deepEqual(calls.filter((c) => c[1] === 'ro1'), [['prepare', 'ro1']]);
    assert.equal(p.state('ro1'), 'read-only');
    await streamEmpty();
  });

  await t.test('commit-one-phase: ack after prepare and commit, its duplicate acked; a failing commit is redelivered and calls commit only; the takeover probe votes abort; never in doubt', async () => {
    await publish('commit-one-phase', 'op1', { payload: Buffer.from('{"a":1}') });
    assert.deepEqual((await replyOf('op1', 'commit-one-phase')).map((r) => [r.result, r.reason]), [['ack', '']]);
    await publish('commit-one-phase', 'op1', { attempt: 2, payload: Buffer.from('{"a":1}') });
    assert.deepEqual((await replyOf('op1', 'commit-one-phase', 2)).map((r) => r.result), ['ack', 'ack']);
    assert.deepEqual(calls.filter((c) => c[1] === 'op1'), [['prepare', 'op1'], ['commit', 'op1']]);
    gate.commitFailures = 1;
    await publish('commit-one-phase', 'op2');
    assert.deepEqual((await replyOf('op2', 'commit-one-phase', 2)).map((r) => [r.result, r.reason]), [['failed', 'not now'], ['ack', '']]);
    assert.deepEqual(calls.filter((c) => c[1] === 'op2'), [['prepare', 'op2'], ['commit', 'op2'], ['commit', 'op2']]);
    await publish('commit-one-phase', 'op3', { attempt: 2, deadline: 1 });
    assert.deepEqual((await replyOf('op3', 'commit-one-phase')).map((r) => [r.result, r.reason]), [['vote-abort', 'deadline passed']]);
    await publish('commit-one-phase', 'op4', { payload: Buffer.from('no') });
    assert.deepEqual((await replyOf('op4', 'commit-one-phase')).map((r) => [r.result, r.reason]), [['vote-abort', 'refusing']]);
    assert.deepEqual(calls.filter((c) => c[1] === 'op3' || c[1] === 'op4'), [['prepare', 'op4']]);
    assert.deepEqual([p.state('op1'), p.state('op2'), p.state('op3'), p.state('op4')], ['committed', 'committed', 'aborted', 'aborted']);
    assert.ok(!p.proc.inDoubt().some((id) => id.startsWith('op')));
    assert.equal(p.stats().onePhases, 6);
    await streamEmpty();
  });

  await t.test('audit requests are answered from the record', async () => {
    const m = await nc.request(P.auditSubject(NAME), JSON.stringify({ ids: ['tx1', 'tx3', 'tx6', 'ro1', 'unknown', 'bad.id'] }), { timeout: 5000 });
    assert.deepEqual(m.json(), { participant: NAME, states: { tx1: 'committed', tx3: 'aborted', tx6: 'prepared', ro1: 'read-only', unknown: 'none' } });
    const e = await nc.request(P.auditSubject(NAME), 'not json', { timeout: 5000 });
    assert.match(e.json().error, /not valid JSON/);
  });

  await t.test('stop waits for a handler in flight and its reply', async () => {
    gate.prepareDelay = 400;
    await publish('prepare', 'tx8');
    await waitFor(() => calls.some((c) => c[1] === 'tx8'), 10_000, () => 'the prepare of tx8 to start');
    await p.stop();
    assert.equal((await replyOf('tx8', 'prepare', 1))[0].result, 'vote-commit');
    gate.prepareDelay = 0;
    assert.equal(p.state('tx8'), 'prepared');
  });

  await t.test('after a restart, a transaction in doubt is asked about and its outcome applied', async () => {
    const questions = [];
    const sub = nc.subscribe(P.API_OUTCOME, {
      callback: (err, m) => {
        const q = m.json();
        questions.push(q);
        m.respond(JSON.stringify(q.id === 'tx8' ? { outcome: 'commit' } : { outcome: 'pending' }));
      },
    });
    t.after(() => sub.unsubscribe());
    p = await start();
    // tx6 and tx7 were prepared before the restart, tx8 too
    await waitFor(() => p.state('tx8') === 'committed', 10_000, () => `tx8 committed through the outcome API: ${JSON.stringify(questions)}`);
    assert.ok(questions.some((q) => q.id === 'tx8' && q.participant === NAME && q.deadline_ms > Date.now() && q.asked_at_ms > 0));
    assert.deepEqual(calls.filter((c) => c[1] === 'tx8'), [['prepare', 'tx8'], ['commit', 'tx8']]);
    assert.deepEqual(p.stats().inDoubt, 2); // tx6 and tx7 stay: pending
    assert.deepEqual(p.proc.inDoubt().sort(), ['tx6', 'tx7']);
    assert.ok(!questions.some((q) => q.id === 'ro1'), 'a read-only transaction is never asked about');
    // a commit that arrives after all is a duplicate
    await publish('commit', 'tx8');
    assert.equal((await replyOf('tx8', 'commit'))[0].result, 'ack');
    assert.equal(calls.filter((c) => c[1] === 'tx8').length, 2);
    await p.stop();
  });
});

test('a transaction through a real coordinator commits and aborts', { timeout: 120_000 }, async (t) => {
  const srv = await startNatstx('server', ['--prepare-timeout', '5s']);
  t.after(() => srv.stop());
  const nc = await connect({ servers: srv.url });
  t.after(() => nc.close());
  const store = await FileStore.open(path.join(tempDir(), 'rec.jsonl'));
  const staged = new Map();
  const p = new Participant(nc, {
    name: 'jscoord',
    store,
    handler: {
      async prepare(tx, payload) {
        const v = JSON.parse(payload.toString());
        if (v.qty > 10) throw new Error('not enough stock');
        staged.set(tx.id, v);
      },
      async commit(tx) { staged.delete(tx.id); },
      async abort(tx) { staged.delete(tx.id); },
    },
  });
  await p.start();
  t.after(() => p.stop());
  const begin = async (qty) => {
    const m = await nc.request('natstx.api.v1.begin', JSON.stringify({ participants: [{ name: 'jscoord', payload: Buffer.from(JSON.stringify({ qty })).toString('base64') }], wait: true }), { timeout: 20_000 });
    return m.json();
  };
  const ok = await begin(3);
  assert.equal(ok.status.state, 'committed', JSON.stringify(ok));
  assert.equal(p.state(ok.status.id), 'committed');
  const no = await begin(30);
  assert.equal(no.status.state, 'aborted', JSON.stringify(no));
  assert.equal(no.status.participants[0].reason, 'not enough stock');
  assert.equal(p.state(no.status.id), 'aborted');
  assert.equal(staged.size, 0);
});
