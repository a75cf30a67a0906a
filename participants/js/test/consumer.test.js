'use strict';
// Who creates the durable consumer (docs/PROTOCOL.md, "Who creates the
// consumer"), against a real NATS server (`natstx nats`): a participant
// binds to a consumer that exists (updating settings that differ), and one
// whose permissions refuse creating consumers (as under `natstx auth init`)
// waits until the consumer is created for it, then works.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { connect, headers } = require('@nats-io/transport-node');
const { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } = require('@nats-io/jetstream');
const { Participant, FileStore, StoppedError } = require('../src');
const P = require('../src/protocol');
const { startNatstx, waitFor, tempDir, createCommandStream } = require('./helpers');

/** A logger keeping every line, for the test to look at. */
function recordingLogger() {
  const lines = [];
  const at = (level) => (msg, fields) => lines.push({ level, msg, ...fields });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const handler = { async prepare() {}, async commit() {}, async abort() {} };

/** The consumer as the coordinator creates it: the protocol's defaults. */
function coordinatorConsumer(name) {
  return {
    durable_name: `natstx-${name}`,
    description: `natstx commands for participant ${name}`,
    filter_subject: `natstx.cmd.${name}.>`,
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.Explicit,
    ack_wait: 30_000 * 1e6,
    max_ack_pending: 512,
  };
}

/** Publishes a prepare for name and resolves to its reply's result. */
async function prepareAnswered(nc, name, txid) {
  const reply = `natstx.reply.t1.${name}`;
  const sub = nc.subscribe(reply, { max: 1 });
  const c = { txid, op: 'prepare', participant: name, attempt: 1, replyTo: reply, deadline: Date.now() + 60_000, step: '', payload: null };
  const h = headers();
  for (const [k, vs] of Object.entries(P.commandHeader(c))) for (const v of vs) h.append(k, v);
  await jetstream(nc).publish(P.commandSubject(name, txid), undefined, { headers: h });
  const timer = setTimeout(() => sub.unsubscribe(), 10_000);
  for await (const m of sub) {
    clearTimeout(timer);
    return P.decodeReply(m.headers.toRecord(), m.data).result;
  }
  throw new Error(`no reply to the prepare of ${txid} within 10s`);
}

test('a consumer that exists already is bound to, and updated when its settings differ', { timeout: 120_000 }, async (t) => {
  const srv = await startNatstx('nats');
  t.after(() => srv.stop());
  const nc = await connect({ servers: srv.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await createCommandStream(jsm);
  const name = 'jsbound';
  const made = await jsm.consumers.add(P.COMMAND_STREAM, coordinatorConsumer(name));

  const log = recordingLogger();
  const p = new Participant(nc, { name, handler, store: await FileStore.open(path.join(tempDir(), 'rec.jsonl')), ackWait: 5000, opTimeout: 2000, logger: log });
  await p.start();
  t.after(() => p.stop());
  const ci = await jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`);
  assert.equal(ci.created, made.created, 'the same consumer, not a new one');
  assert.equal(ci.config.ack_wait, 5000 * 1e6, 'updated to the participant\'s ack wait');
  assert.equal(ci.config.max_ack_pending, 512);
  assert.ok(log.lines.some((l) => l.msg.startsWith('updated the durable consumer') && /ack_wait/.test(l.differences)), JSON.stringify(log.lines));
  assert.ok(!log.lines.some((l) => l.msg.startsWith('created')), 'it did not create one');
  assert.equal(await prepareAnswered(nc, name, 'b1'), 'vote-commit');

  // A second instance with the same settings binds without updating.
  const log2 = recordingLogger();
  const p2 = new Participant(nc, { name, handler, store: await FileStore.open(path.join(tempDir(), 'rec.jsonl')), ackWait: 5000, opTimeout: 2000, logger: log2 });
  await p2.start();
  t.after(() => p2.stop());
  assert.ok(!log2.lines.some((l) => /updat|creat/.test(l.msg)), JSON.stringify(log2.lines));
});

test('a participant that may not create consumers waits until its consumer is created, then works', { timeout: 180_000 }, async (t) => {
  // The participant's user may do anything but create or update consumers,
  // as a natstx auth init participant identity may not.
  const dir = tempDir();
  const conf = path.join(dir, 'nats.conf');
  fs.writeFileSync(conf, `authorization {
  users = [
    { user: admin, password: admin-pw }
    { user: part, password: part-pw, permissions: {
        publish: { allow: [">"], deny: ["$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"] }
        subscribe: { allow: [">"] } } }
  ]
}
`);
  const srv = await startNatstx('nats', ['--nats-config', conf]);
  t.after(() => { fs.rmSync(dir, { recursive: true, force: true }); return srv.stop(); });
  const admin = await connect({ servers: srv.url, user: 'admin', pass: 'admin-pw' });
  t.after(() => admin.close());
  const part = await connect({ servers: srv.url, user: 'part', pass: 'part-pw' });
  t.after(() => part.close());
  const jsm = await jetstreamManager(admin);
  await createCommandStream(jsm);

  // The permissions work: the participant's own attempt is refused.
  const pjsm = await jetstreamManager(part, { timeout: 1000 });
  await assert.rejects(pjsm.consumers.add(P.COMMAND_STREAM, coordinatorConsumer('probe')));
  await assert.rejects(jsm.consumers.info(P.COMMAND_STREAM, 'natstx-probe'), (e) => e.status === 404);

  const name = 'jslocked';
  const log = recordingLogger();
  const p = new Participant(part, { name, handler, store: await FileStore.open(path.join(dir, 'rec.jsonl')), ackWait: 5000, opTimeout: 2000, logger: log });
  t.after(() => p.stop());
  let started = false;
  const starting = p.start().then(() => { started = true; });
  await waitFor(() => log.lines.some((l) => l.msg.startsWith('creating the durable consumer was refused by the NATS permissions')), 30_000, () => `the refusal logged: ${JSON.stringify(log.lines)}`);
  assert.equal(started, false, 'start waits while the consumer does not exist');
  await assert.rejects(jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`), (e) => e.status === 404);

  // The coordinator creates it, with the protocol's defaults.
  await jsm.consumers.add(P.COMMAND_STREAM, coordinatorConsumer(name));
  await starting;
  assert.ok(log.lines.some((l) => l.msg === 'the durable consumer exists now'), JSON.stringify(log.lines));
  // Its ack wait differs; the update is refused too: logged, used as it is.
  assert.ok(log.lines.some((l) => l.level === 'warn' && /updating it was refused/.test(l.msg) && /ack_wait/.test(l.differences)), JSON.stringify(log.lines));
  assert.equal((await jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`)).config.ack_wait, 30_000 * 1e6);
  assert.equal(await prepareAnswered(admin, name, 'l1'), 'vote-commit');
  assert.equal(p.state('l1'), 'prepared');

  // Stopped while it waits for a consumer that never comes: start fails with StoppedError.
  const q = new Participant(part, { name: 'jsnever', handler, store: await FileStore.open(path.join(dir, 'never.jsonl')), ackWait: 5000, opTimeout: 2000, logger: recordingLogger() });
  const never = q.start();
  const outcome = never.then(() => 'started', (e) => e);
  await waitFor(() => q.stopping || q.wakers.size > 0, 30_000, () => 'the second participant to wait');
  await q.stop();
  const e = await outcome;
  assert.ok(e instanceof StoppedError, `start after stop: ${e}`);
});
