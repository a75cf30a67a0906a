'use strict';
// Connecting as `natstx participant` does (src/connect.js): the connection
// flags and NATSTX_* variables, the participant's own inbox prefix, and a
// participant under the identities of `natstx auth init` (natstx's NATS
// accounts) against a real coordinator: with its credentials and inbox
// prefix it reaches natstx's JetStream under $JS.natstx.API, waits for the
// consumer the coordinator creates and commits; with the NATS default inbox
// prefix its permissions refuse it.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { connect, credsAuthenticator } = require('@nats-io/transport-node');
const { jetstreamManager, JetStreamApiError } = require('@nats-io/jetstream');
const { Participant, FileStore, InvalidConfigError, jetStreamApiPrefix } = require('../src');
const P = require('../src/protocol');
const C = require('../src/connect');
const { startNatstx, authInit, tempDir, waitFor } = require('./helpers');

test('connectSettings: a flag wins over its NATSTX_* variable, which wins over the default', () => {
  const env = { NATSTX_CREDS: '/env.creds', NATSTX_TLS_CA: '/env-ca.pem', NATSTX_NATS: 'nats://env:4222', NATSTX_INBOX_PREFIX: '_INBOX_env' };
  const { values } = parseArgs({ args: ['--tls-ca', '/flag-ca.pem', '--user', 'u'], options: C.connectFlags() });
  const s = C.connectSettings(values, env);
  assert.deepEqual(s, {
    nats: 'nats://env:4222', creds: '/env.creds', user: 'u', password: '', tlsCa: '/flag-ca.pem', tlsCert: '', tlsKey: '', inboxPrefix: '_INBOX_env',
  });
  assert.equal(C.connectSettings({}, {}).nats, C.DEFAULT_NATS);
  // Every Go connection flag, with the variable natstx reads for it.
  assert.deepEqual(Object.values(C.CONNECT_SETTINGS).map((v) => `${v.flag}=${v.env}`), [
    'nats=NATSTX_NATS', 'creds=NATSTX_CREDS', 'user=NATSTX_USER', 'password=NATSTX_PASSWORD',
    'tls-ca=NATSTX_TLS_CA', 'tls-cert=NATSTX_TLS_CERT', 'tls-key=NATSTX_TLS_KEY', 'inbox-prefix=NATSTX_INBOX_PREFIX',
  ]);
});

test('natsOptions: the participant\'s inbox prefix, credentials, TLS, and settings that do not go together', () => {
  const dir = tempDir();
  const file = (n) => {
    const p = path.join(dir, n);
    fs.writeFileSync(p, 'x');
    return p;
  };
  const plain = C.natsOptions('inventory', { nats: 'nats://a:1, nats://b:2' });
  assert.deepEqual(plain, { servers: ['nats://a:1', 'nats://b:2'], inboxPrefix: '_INBOX_natstx.participant.inventory' });
  assert.equal(C.participantInbox('inventory'), '_INBOX_natstx.participant.inventory');
  assert.equal(C.natsOptions('inventory', { inboxPrefix: '_INBOX' }).inboxPrefix, '_INBOX');
  assert.deepEqual(C.natsOptions('x', {}).servers, [C.DEFAULT_NATS]);

  const ca = file('ca.pem');
  const withCA = C.natsOptions('inventory', { creds: file('p.creds'), tlsCa: ca });
  assert.equal(typeof withCA.authenticator, 'function');
  assert.deepEqual(withCA.tls, { caFile: ca });
  const cert = C.natsOptions('inventory', { tlsCert: file('c.pem'), tlsKey: file('k.pem') });
  assert.deepEqual(cert.tls, { certFile: path.join(dir, 'c.pem'), keyFile: path.join(dir, 'k.pem') });
  assert.deepEqual(C.natsOptions('inventory', { user: 'u', password: 'p' }), {
    servers: [C.DEFAULT_NATS], inboxPrefix: '_INBOX_natstx.participant.inventory', user: 'u', pass: 'p',
  });

  const bad = (settings, re, name = 'inventory') => assert.throws(() => C.natsOptions(name, settings), (e) => e instanceof InvalidConfigError && re.test(e.message), JSON.stringify(settings));
  bad({ creds: path.join(dir, 'none.creds') }, /--creds \(NATSTX_CREDS\) .*none\.creds: no such file/);
  bad({ tlsCa: path.join(dir, 'none.pem') }, /--tls-ca \(NATSTX_TLS_CA\) .*none\.pem: no such file/);
  bad({ creds: file('q.creds'), user: 'u' }, /both name an identity/);
  bad({ password: 'p' }, /--password \(NATSTX_PASSWORD\) needs --user/);
  bad({ tlsCert: file('c2.pem') }, /--tls-cert \(NATSTX_TLS_CERT\) and --tls-key \(NATSTX_TLS_KEY\) go together/);
  bad({}, /participant name is empty/, '');
  bad({}, /participant name "a\.>"/, 'a.>');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('connectError says what to check, without the password', () => {
  const e = C.connectError(['nats://u:secret@127.0.0.1:1'], Object.assign(new Error("'Authorization Violation'"), { name: 'AuthorizationError' }));
  assert.match(e.message, /refused this identity.*--creds/);
  assert.match(e.message, /nats:\/\/u:xxxxx@127\.0\.0\.1:1/);
  assert.doesNotMatch(e.message, /secret/);
  assert.match(C.connectError(['tls://h:1'], Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' })).message, /TLS with NATS at tls:\/\/h:1 failed; check --tls-ca/);
  assert.match(C.connectError(['nats://h:1'], new Error('ECONNREFUSED')).message, /cannot reach NATS at nats:\/\/h:1/);
});

test('under the identities of natstx auth init, a participant connected as itself waits for its consumer and commits', { timeout: 180_000 }, async (t) => {
  const dir = tempDir();
  const { conf, creds } = authInit(dir, ['jsauth']);
  const srv = await startNatstx('server', ['--nats-config', conf, '--creds', creds('coordinator'), '--prepare-timeout', '60s']);
  t.after(() => { fs.rmSync(dir, { recursive: true, force: true }); return srv.stop(); });

  // Without credentials, the server refuses; the error says so.
  await assert.rejects(C.connectParticipant('jsauth', { nats: srv.url }, { maxReconnectAttempts: 0 }), /refused this identity/);

  // The NATS default inbox prefix: the participant may not subscribe there,
  // so no JetStream request gets an answer, not even the one that tells the
  // API prefix.
  const wrong = await C.connectParticipant('jsauth', { nats: srv.url, creds: creds('participant-jsauth'), inboxPrefix: '_INBOX' });
  t.after(() => wrong.close());
  await assert.rejects(jetStreamApiPrefix(wrong, { timeout: 2000 }), /Permissions Violation for Subscription to "_INBOX\./);
  const wjsm = await jetstreamManager(wrong, { checkAPI: false, apiPrefix: P.JETSTREAM_API_PREFIX, timeout: 2000 });
  await assert.rejects(wjsm.streams.info('NATSTX_CMD'), /Permissions Violation for Subscription to "_INBOX\./);

  // As the participant: its credentials, its own inbox prefix (by default).
  const nc = await C.connectParticipant('jsauth', { nats: srv.url, creds: creds('participant-jsauth') });
  t.after(() => nc.close());
  assert.equal(nc.options.inboxPrefix, '_INBOX_natstx.participant.jsauth');
  // Its account, NATSTX_PARTICIPANTS, has no JetStream: JetStream's own API
  // answers so (10039); natstx's is imported under $JS.natstx.API.
  await assert.rejects(jetstreamManager(nc, { timeout: 2000 }), (e) => e.cause instanceof JetStreamApiError && e.cause.code === P.JS_NOT_ENABLED_FOR_ACCOUNT);
  const njsm = await jetstreamManager(nc, { checkAPI: false, apiPrefix: P.JETSTREAM_API_PREFIX, timeout: 2000 });
  assert.equal((await njsm.streams.info('NATSTX_CMD')).config.name, 'NATSTX_CMD');
  const lines = [];
  const at = (level) => (msg, fields) => lines.push({ level, msg, ...fields });
  const p = new Participant(nc, {
    name: 'jsauth',
    store: await FileStore.open(path.join(dir, 'rec.jsonl')),
    handler: {
      async prepare(tx, payload) {
        if (JSON.parse(payload.toString()).qty > 10) throw new Error('not enough stock');
      },
      async commit() {},
      async abort() {},
    },
    logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') },
  });
  t.after(() => p.stop());
  let started = false;
  const starting = p.start().then(() => { started = true; });
  // It may not create its consumer: refused, it waits for the coordinator.
  await waitFor(() => lines.some((l) => l.msg.startsWith('creating the durable consumer was refused by the NATS permissions')), 30_000, () => `the refusal: ${JSON.stringify(lines)}`);
  assert.equal(started, false);
  assert.equal(p.apiPrefix, '$JS.natstx.API');

  // The operator begins transactions; the coordinator creates the consumer.
  const op = await connect({ servers: srv.url, authenticator: credsAuthenticator(fs.readFileSync(creds('operator'))), inboxPrefix: '_INBOX_natstx.operator' });
  t.after(() => op.close());
  const begin = async (qty) => {
    const m = await op.request('natstx.api.v1.begin', JSON.stringify({ participants: [{ name: 'jsauth', payload: Buffer.from(JSON.stringify({ qty })).toString('base64') }], wait: true }), { timeout: 90_000 });
    return m.json();
  };
  const ok = await begin(1);
  await starting;
  assert.equal(ok.status.state, 'committed', JSON.stringify(ok));
  assert.equal(p.state(ok.status.id), 'committed');
  const no = await begin(30);
  assert.equal(no.status.state, 'aborted', JSON.stringify(no));
  assert.equal(p.state(no.status.id), 'aborted');
  assert.ok(!lines.some((l) => l.msg.startsWith('created the durable consumer')), JSON.stringify(lines));
});
