'use strict';
// Who creates the durable consumer (docs/PROTOCOL.md, "Who creates the
// consumer"), and through which JetStream API, against a real NATS server
// (`natstx nats`): a participant binds to a consumer that exists (updating
// settings that differ), through its account's own JetStream API; under the
// accounts of `natstx auth init` it reaches natstx's JetStream under
// $JS.natstx.API, is refused creating its consumer, waits until the
// coordinator creates it, then works; in an account with JetStream, an
// identity that may not ask for the account's information uses JetStream's
// own API.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { connect, credsAuthenticator, headers } = require('@nats-io/transport-node');
const { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, JetStreamApiError } = require('@nats-io/jetstream');
const { Participant, FileStore, StoppedError, participantInbox, jetStreamApiPrefix } = require('../src');
const P = require('../src/protocol');
const { startNatstx, authInit, waitFor, tempDir, createCommandStream } = require('./helpers');

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
  assert.equal(p.apiPrefix, '$JS.API', 'an account with JetStream: its own API');
  assert.ok(log.lines.some((l) => l.msg === 'JetStream API: this account\'s own' && l.api_prefix === '$JS.API'), JSON.stringify(log.lines));
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

/** The errors the server reported on nc (permissions violations among them), as they come. */
function serverErrors(nc) {
  const out = [];
  (async () => {
    for await (const s of nc.status()) if (s.type === 'error') out.push(s.error && s.error.message ? s.error.message : String(s.error));
  })().catch(() => {});
  return out;
}

test('under natstx\'s accounts, a participant reaches JetStream under $JS.natstx.API, is refused creating its consumer, waits until it is created, then works', { timeout: 180_000 }, async (t) => {
  // The identities of `natstx auth init`: the coordinator in the NATSTX
  // account, which has JetStream; the participants in NATSTX_PARTICIPANTS,
  // which has none and imports natstx's JetStream API under $JS.natstx.API.
  // A participant may look up and read its own consumer, not create or
  // update it.
  const dir = tempDir();
  const { conf, creds } = authInit(dir, ['jslocked', 'jsnever']);
  const srv = await startNatstx('nats', ['--nats-config', conf]);
  t.after(() => { fs.rmSync(dir, { recursive: true, force: true }); return srv.stop(); });
  const as = async (id, inboxPrefix) => {
    const nc = await connect({ servers: srv.url, authenticator: credsAuthenticator(fs.readFileSync(creds(id))), inboxPrefix });
    t.after(() => nc.close());
    return nc;
  };
  const admin = await as('coordinator');
  const part = await as('participant-jslocked', participantInbox('jslocked'));
  const refused = serverErrors(part);
  const jsm = await jetstreamManager(admin);
  await createCommandStream(jsm);

  // The participants' account has no JetStream of its own: the server
  // answers JetStream's own API there with "JetStream not enabled for
  // account" (10039), which tells the participant to use the prefix.
  await assert.rejects(jetstreamManager(part, { timeout: 2000 }), (e) => e.cause instanceof JetStreamApiError && e.cause.code === P.JS_NOT_ENABLED_FOR_ACCOUNT);
  assert.equal(await jetStreamApiPrefix(part), P.JETSTREAM_API_PREFIX);
  assert.equal(P.JETSTREAM_API_PREFIX, '$JS.natstx.API');
  assert.equal(await jetStreamApiPrefix(admin), P.JETSTREAM_API);

  // The permissions work: the participant's own attempt to create its
  // consumer, under the prefix, is refused.
  const pjsm = await jetstreamManager(part, { checkAPI: false, apiPrefix: P.JETSTREAM_API_PREFIX, timeout: 1000 });
  await assert.rejects(pjsm.consumers.add(P.COMMAND_STREAM, coordinatorConsumer('jslocked')), /Permissions Violation for Publish to "\$JS\.natstx\.API\.CONSUMER\.CREATE\.NATSTX_CMD\.natstx-jslocked\./);
  await assert.rejects(jsm.consumers.info(P.COMMAND_STREAM, 'natstx-jslocked'), (e) => e.status === 404);

  const name = 'jslocked';
  const log = recordingLogger();
  const p = new Participant(part, { name, handler, store: await FileStore.open(path.join(dir, 'rec.jsonl')), ackWait: 5000, opTimeout: 2000, logger: log });
  t.after(() => p.stop());
  let started = false;
  const t0 = Date.now();
  const starting = p.start().then(() => { started = true; });
  const refusal = 'creating the durable consumer was refused by the NATS permissions';
  await waitFor(() => log.lines.some((l) => l.msg.startsWith(refusal)), 30_000, () => `the refusal logged: ${JSON.stringify(log.lines)}`);
  // Refused at once (a permissions violation), not after a request's
  // timeout (nats.js's 5 s).
  assert.ok(Date.now() - t0 < 4000, `the refusal came ${Date.now() - t0}ms after start`);
  assert.ok(log.lines.some((l) => l.msg.startsWith('JetStream API: natstx\'s, imported') && l.api_prefix === '$JS.natstx.API'), JSON.stringify(log.lines));
  assert.equal(p.apiPrefix, '$JS.natstx.API');
  assert.equal(started, false, 'start waits while the consumer does not exist');
  await assert.rejects(jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`), (e) => e.status === 404);

  // The coordinator creates it, with the protocol's defaults.
  await jsm.consumers.add(P.COMMAND_STREAM, coordinatorConsumer(name));
  await starting;
  assert.ok(log.lines.some((l) => l.msg === 'the durable consumer exists now'), JSON.stringify(log.lines));
  // Its ack wait differs; the update is refused too: logged, used as it is.
  assert.ok(log.lines.some((l) => l.level === 'warn' && /updating it was refused/.test(l.msg) && /ack_wait/.test(l.differences)), JSON.stringify(log.lines));
  assert.equal((await jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`)).config.ack_wait, 30_000 * 1e6);
  // It consumes (pulls under the prefix, acknowledgements on $JS.ACK) and
  // replies across the accounts.
  assert.equal(await prepareAnswered(admin, name, 'l1'), 'vote-commit');
  assert.equal(p.state('l1'), 'prepared');
  await waitFor(async () => (await jsm.consumers.info(P.COMMAND_STREAM, `natstx-${name}`)).num_ack_pending === 0, 10_000, () => 'the prepare acknowledged');
  assert.equal((await jsm.streams.info(P.COMMAND_STREAM)).state.messages, 0, 'the acknowledged command left the work queue');
  // The only refusals: creating and updating its own consumer.
  const own = '"$JS.natstx.API.CONSUMER.CREATE.NATSTX_CMD.natstx-jslocked.';
  assert.ok(refused.length > 0 && refused.every((e) => e.includes(own)), JSON.stringify(refused));

  // Stopped while it waits for a consumer that never comes: start fails with StoppedError.
  const q = new Participant(await as('participant-jsnever', participantInbox('jsnever')), { name: 'jsnever', handler, store: await FileStore.open(path.join(dir, 'never.jsonl')), ackWait: 5000, opTimeout: 2000, logger: recordingLogger() });
  const never = q.start();
  const outcome = never.then(() => 'started', (e) => e);
  await waitFor(() => q.stopping || q.wakers.size > 0, 30_000, () => 'the second participant to wait');
  await q.stop();
  const e = await outcome;
  assert.ok(e instanceof StoppedError, `start after stop: ${e}`);
});

test('in an account with JetStream, an identity that may not ask for the account\'s JetStream information uses JetStream\'s own API', { timeout: 120_000 }, async (t) => {
  // One account, with JetStream, and users (as before natstx's accounts):
  // the participant's user may not publish $JS.API.INFO, nor create
  // consumers.
  const dir = tempDir();
  const conf = path.join(dir, 'nats.conf');
  fs.writeFileSync(conf, `authorization {
  users = [
    { user: admin, password: admin-pw }
    { user: part, password: part-pw, permissions: {
        publish: { allow: [">"], deny: ["$JS.API.INFO", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"] }
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

  await assert.rejects(jetstreamManager(part, { timeout: 2000 }), /Permissions Violation for Publish to "\$JS\.API\.INFO"/);
  assert.equal(await jetStreamApiPrefix(part), '$JS.API');
  assert.equal(await jetStreamApiPrefix(admin), '$JS.API');

  const name = 'jsnoinfo';
  await jsm.consumers.add(P.COMMAND_STREAM, { ...coordinatorConsumer(name), ack_wait: 5000 * 1e6 });
  const log = recordingLogger();
  const p = new Participant(part, { name, handler, store: await FileStore.open(path.join(dir, 'rec.jsonl')), ackWait: 5000, opTimeout: 2000, logger: log });
  await p.start();
  t.after(() => p.stop());
  assert.equal(p.apiPrefix, '$JS.API');
  assert.ok(!log.lines.some((l) => /updat|creat/.test(l.msg)), JSON.stringify(log.lines));
  assert.equal(await prepareAnswered(admin, name, 'n1'), 'vote-commit');
});
