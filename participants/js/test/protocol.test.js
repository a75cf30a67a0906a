'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const P = require('../src/protocol');
const B = require('../src/batch');

const H = P.Header;
function cmdHeaders(over = {}) {
  const h = {
    [H.VERSION]: ['6'], [H.TXID]: ['tx-1'], [H.OP]: ['prepare'], [H.PARTICIPANT]: ['pay'],
    [H.ATTEMPT]: ['2'], [H.REPLY_TO]: ['natstx.reply.c1.pay'], [H.DEADLINE]: ['1700000000000'],
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete h[k];
    else h[k] = v;
  }
  return h;
}

test('decodeCommand reads every field of a well-formed command', () => {
  const c = P.decodeCommand(cmdHeaders(), Buffer.from('{"x":1}'));
  assert.deepEqual(c, {
    txid: 'tx-1', op: 'prepare', participant: 'pay', attempt: 2, replyTo: 'natstx.reply.c1.pay',
    deadline: 1700000000000, step: '', payload: Buffer.from('{"x":1}'),
  });
  assert.equal(P.decodeCommand(cmdHeaders({ [H.DEADLINE]: undefined }), null).deadline, null);
});

test('decodeCommand rejects what the Go decoder rejects', () => {
  const bad = [
    [{ [H.VERSION]: ['4'] }, P.VersionError, /Natstx-Version is "4"/],
    [{ [H.VERSION]: ['5'] }, P.VersionError, /Natstx-Version is "5", this build speaks 6/],
    [{ [H.VERSION]: undefined }, P.MalformedError, /header Natstx-Version is missing/],
    [{ [H.TXID]: undefined }, P.MalformedError, /header Natstx-Txid is missing/],
    [{ [H.TXID]: ['a', 'a'] }, P.MalformedError, /appears 2 times/],
    [{ [H.DEADLINE]: ['1', '2'] }, P.MalformedError, /Natstx-Deadline appears 2 times/],
    [{ 'natstx-txid': ['tx-1'], [H.TXID]: undefined }, P.MalformedError, /Natstx-Txid is missing/], // names are case-sensitive
    [{ [H.ATTEMPT]: ['x'] }, P.MalformedError, /is not a number/],
    [{ [H.ATTEMPT]: ['0'] }, P.MalformedError, /attempt 0 is below 1/],
    [{ [H.DEADLINE]: ['-5'] }, P.MalformedError, /not a positive Unix time/],
    [{ [H.OP]: ['explode'] }, P.MalformedError, /unknown operation/],
    [{ [H.TXID]: ['a.b'] }, P.InvalidNameError, /use only letters/],
    [{ [H.REPLY_TO]: ['natstx.reply.*'] }, P.MalformedError, /reply subject/],
    [{ [H.REPLY_TO]: ['natstx..x'] }, P.MalformedError, /empty token/],
    [{ [H.STEP]: ['s1'] }, P.MalformedError, /only saga operations do/],
    [{ [H.OP]: ['action'] }, P.MalformedError, /saga step is empty/],
  ];
  for (const [over, type, re] of bad) {
    assert.throws(() => P.decodeCommand(cmdHeaders(over), null), (e) => e instanceof type && re.test(e.message), JSON.stringify(over));
  }
  assert.throws(() => P.decodeCommand(cmdHeaders({ [H.OP]: ['commit'] }), Buffer.from('x')), /commit carries a payload/);
  assert.equal(P.decodeCommand(cmdHeaders({ [H.OP]: ['action'], [H.STEP]: ['reserve'] }), null).step, 'reserve');
});

test('reply headers and body are those of the Go Reply', () => {
  const r = { txid: 't', op: 'action', participant: 'p', result: 'refused', attempt: 3, reason: 'é'.repeat(600), step: 's', code: 'no-stock' };
  assert.deepEqual(P.replyHeader(r), {
    'Natstx-Version': ['6'], 'Natstx-Txid': ['t'], 'Natstx-Op': ['action'], 'Natstx-Participant': ['p'],
    'Natstx-Result': ['refused'], 'Natstx-Attempt': ['3'], 'Natstx-Step': ['s'], 'Natstx-Code': ['no-stock'],
  });
  const body = P.replyBody(r);
  assert.equal(body.length, 1024); // 512 two-byte characters, none split
  assert.equal(body.toString('utf8'), 'é'.repeat(512));
  assert.equal(P.truncate('aé', 2), 'a');
  assert.equal(P.validCode('bad code'), '');
  assert.equal(P.validCode('x'.repeat(65)), '');
  assert.equal(P.validCode('ok-1'), 'ok-1');
});

test('a batch encodes as the Go framing and decodes back', () => {
  const cmds = [
    { txid: 'a', op: 'prepare', participant: 'pay', attempt: 1, replyTo: 'natstx.reply.c.pay', deadline: 5, step: '', payload: Buffer.from('{}') },
    { txid: 'b', op: 'commit', participant: 'pay', attempt: 2, replyTo: 'natstx.reply.c.pay', deadline: null, step: '', payload: null },
  ];
  const m = B.encodeCommandBatch('pay', 'batch-1', cmds);
  assert.deepEqual(m.header, { 'Natstx-Participant': ['pay'], 'Nats-Msg-Id': ['batch-1'], 'Natstx-Version': ['6'], 'Natstx-Batch': ['2'] });
  // The first item exactly as messages.EncodeCommandBatch writes it: header
  // lines sorted by name, no Nats-Msg-Id inside.
  const head1 = 'Natstx-Attempt: 1\r\nNatstx-Deadline: 5\r\nNatstx-Op: prepare\r\nNatstx-Participant: pay\r\n'
    + 'Natstx-Reply-To: natstx.reply.c.pay\r\nNatstx-Txid: a\r\nNatstx-Version: 6\r\n';
  assert.ok(m.body.toString().startsWith(`${head1.length} 2\r\n${head1}{}`));
  const items = B.decodeBatch(m.header, m.body);
  assert.equal(items.length, 2);
  assert.deepEqual(P.decodeCommand(items[0].header, items[0].body), cmds[0]);
  assert.deepEqual(P.decodeCommand(items[1].header, items[1].body), cmds[1]);

  const bad = [
    [{ ...m.header, 'Natstx-Batch': ['3'] }, m.body, /batch item 3 of 3/],
    [{ ...m.header, 'Natstx-Batch': ['1'] }, m.body, /bytes after the 1 items/],
    [{ ...m.header, 'Natstx-Batch': ['0'] }, m.body, /not a count from 1 to 256/],
    [m.header, Buffer.from('5 0\r\nabc'), /not two lengths/],
    [m.header, Buffer.concat([Buffer.from('4 0\r\nab\r\n')]), /not "Name: value"/],
  ];
  for (const [h, body, re] of bad) assert.throws(() => B.decodeBatch(h, body), re);

  const rb = B.encodeReplyBatch([{ txid: 'a', op: 'prepare', participant: 'pay', result: 'vote-commit', attempt: 1 }, { txid: 'b', op: 'commit', participant: 'pay', result: 'ack', attempt: 2 }]);
  const ri = B.decodeBatch(rb.header, rb.body);
  assert.equal(P.decodeReply(ri[1].header, ri[1].body).result, 'ack');
  assert.equal(B.batchParticipant('natstx.cmd.pay.batch.x1'), 'pay');
  assert.equal(B.batchParticipant('natstx.cmd.pay.tx1'), null);
  assert.equal(B.batchParticipant('natstx.cmd.pay.batch.x.y'), null);
});

test('the protocol version is 6: commands, replies and batches carry Natstx-Version 6', () => {
  assert.equal(P.VERSION, 6);
  const r = { txid: 't', op: 'prepare', participant: 'p', result: 'vote-read-only', attempt: 1 };
  assert.deepEqual(P.replyHeader(r)[H.VERSION], ['6']);
  assert.deepEqual(P.commandHeader({ txid: 't', op: 'commit', participant: 'p', attempt: 1, replyTo: 'natstx.reply.c.p', deadline: null, step: '' })[H.VERSION], ['6']);
  assert.throws(() => P.decodeReply({ ...P.replyHeader(r), [H.VERSION]: ['5'] }, null), P.VersionError);
});

test('decodeReply accepts vote-read-only, with an empty body, only as the answer to prepare', () => {
  const reply = (op, result, extra = {}) => ({ txid: 't', op, participant: 'p', result, attempt: 2, ...extra });
  const ok = P.decodeReply(P.replyHeader(reply('prepare', 'vote-read-only')), Buffer.alloc(0));
  assert.deepEqual([ok.op, ok.result, ok.reason], ['prepare', P.Result.VOTE_READ_ONLY, '']);
  assert.equal(P.Result.VOTE_READ_ONLY, 'vote-read-only');
  assert.ok(P.isVote('vote-read-only') && P.isVote('vote-commit') && P.isVote('vote-abort') && !P.isVote('ack'));
  for (const [op, step] of [['commit', ''], ['abort', ''], ['action', 's'], ['compensate', 's']]) {
    const r = reply(op, 'vote-read-only', { step });
    assert.throws(() => P.decodeReply(P.replyHeader(r), null), (e) => e instanceof P.MalformedError && new RegExp(`${op} is answered with an ack, not "vote-read-only"`).test(e.message), op);
    assert.throws(() => P.validateReply(r), P.MalformedError, op);
  }
  // the other cross-field rules of Go Reply.Validate
  assert.throws(() => P.validateReply(reply('commit', 'vote-commit')), /commit is answered with an ack, not "vote-commit"/);
  assert.throws(() => P.validateReply(reply('prepare', 'ack')), /prepare is answered with a vote, not "ack"/);
  assert.throws(() => P.validateReply(reply('compensate', 'refused', { step: 's' })), /only an action can be refused, not compensate/);
  assert.throws(() => P.validateReply(reply('prepare', 'vote-maybe')), /unknown result "vote-maybe"/);
  for (const r of [reply('prepare', 'vote-commit'), reply('prepare', 'vote-abort', { reason: 'no' }), reply('prepare', 'failed'), reply('commit', 'ack'), reply('action', 'refused', { step: 's', code: 'x' })]) {
    P.validateReply(r);
  }
});

test('decodeCommand accepts commit-one-phase with a payload and a deadline, and without either (the takeover probe); it is a two-phase operation that votes and carries a payload, and a step is refused', () => {
  const c = P.decodeCommand(cmdHeaders({ [H.OP]: ['commit-one-phase'] }), Buffer.from('{"x":1}'));
  assert.deepEqual(c, {
    txid: 'tx-1', op: 'commit-one-phase', participant: 'pay', attempt: 2, replyTo: 'natstx.reply.c1.pay',
    deadline: 1700000000000, step: '', payload: Buffer.from('{"x":1}'),
  });
  assert.equal(P.Op.COMMIT_ONE_PHASE, 'commit-one-phase');
  const probe = P.decodeCommand(cmdHeaders({ [H.OP]: ['commit-one-phase'], [H.DEADLINE]: ['1'] }), null);
  assert.deepEqual([probe.deadline, probe.payload], [1, null]);
  assert.equal(P.decodeCommand(cmdHeaders({ [H.OP]: ['commit-one-phase'], [H.DEADLINE]: undefined }), null).deadline, null);
  assert.ok(P.isTwoPhase('commit-one-phase') && !P.isSaga('commit-one-phase') && P.carriesPayload('commit-one-phase'));
  assert.ok(P.votes('commit-one-phase') && P.votes('prepare') && !P.votes('commit') && !P.votes('abort') && !P.votes('action'));
  assert.throws(() => P.decodeCommand(cmdHeaders({ [H.OP]: ['commit-one-phase'], [H.STEP]: ['s1'] }), null), /only saga operations do/);
  assert.throws(() => P.decodeCommand(cmdHeaders({ [H.OP]: ['abort'] }), Buffer.from('x')), /abort carries a payload; only prepare, commit-one-phase, action and compensate do/);
  // a command the SDK encodes decodes back
  const enc = { txid: 'o', op: 'commit-one-phase', participant: 'p', attempt: 1, replyTo: 'natstx.reply.c.p', deadline: 5, step: '' };
  assert.deepEqual(P.decodeCommand(P.commandHeader(enc), Buffer.from('y')), { ...enc, payload: Buffer.from('y') });
});

test('validateReply of commit-one-phase: ack, vote-abort and failed are valid; vote-commit, vote-read-only and refused are malformed', () => {
  const reply = (result, extra = {}) => ({ txid: 't', op: 'commit-one-phase', participant: 'p', result, attempt: 1, ...extra });
  for (const r of [reply('ack'), reply('vote-abort', { reason: 'out of stock' }), reply('failed', { reason: 'disk full' })]) {
    P.validateReply(r);
    const back = P.decodeReply(P.replyHeader(r), P.replyBody(r));
    assert.deepEqual([back.op, back.result, back.reason], ['commit-one-phase', r.result, r.reason || '']);
  }
  for (const result of ['vote-commit', 'vote-read-only', 'refused']) {
    assert.throws(() => P.validateReply(reply(result)), (e) => e instanceof P.MalformedError
      && e.message === `natstx: malformed message: commit-one-phase is answered with ack, vote-abort or failed, not "${result}"`, result);
    assert.throws(() => P.decodeReply(P.replyHeader(reply(result)), null), P.MalformedError, result);
  }
  assert.throws(() => P.validateReply(reply('ack', { step: 's' })), /only saga operations do/);
  // the rules of the other operations are unchanged
  assert.throws(() => P.validateReply({ ...reply('vote-abort'), op: 'commit' }), /commit is answered with an ack, not "vote-abort"/);
  assert.throws(() => P.validateReply({ ...reply('ack'), op: 'prepare' }), /prepare is answered with a vote, not "ack"/);
});
