#!/usr/bin/env node
'use strict';
// The example JavaScript participant: the seed's Service class (service.js),
// wrapped by one adapter (adapter.js), served by the SDK on NATS JetStream.
//
//   node examples/participant.js --name js-service --store js-service.jsonl \
//     --nats nats://127.0.0.1:4222 --success-rate 0.9
//
// Under the identities of `natstx auth init` (docs/SECURITY.md), it takes the
// connection flags and NATSTX_* variables of `natstx participant`:
//
//   NATSTX_CREDS=natstx-auth/participant-inventory.creds NATSTX_TLS_CA=natstx-tls/ca.pem \
//     node examples/participant.js --name inventory --nats tls://127.0.0.1:4222
//
// --creds, --user/--password, --tls-ca, --tls-cert/--tls-key and
// --inbox-prefix (NATSTX_CREDS, NATSTX_USER, NATSTX_PASSWORD, NATSTX_TLS_CA,
// NATSTX_TLS_CERT, NATSTX_TLS_KEY, NATSTX_INBOX_PREFIX; a flag wins over its
// variable). Its reply inboxes start with _INBOX_natstx.participant.<name>,
// the only ones its permissions allow, unless --inbox-prefix says otherwise.
// Its account there has no JetStream and imports natstx's under
// $JS.natstx.API: the SDK finds that out at start and logs it (api_prefix).
// It creates no consumer under those permissions: it waits until the
// coordinator has created natstx-<name> (before its first command to it),
// and prints its ready line once it consumes.
//
// It prints "participant NAME (js) ready" on standard output once it
// consumes, logs JSON lines on standard error, and on SIGINT or SIGTERM
// finishes the commands in flight, then exits 0.
//
// It serves two-phase commit (prepare, commit, abort, and commit-one-phase,
// the adapter's prepare and commit at once) and saga steps (action,
// compensate), both through the one adapter.
//
// Fault injection for tests: --drop-reply-rate R drops each reply with
// probability R (the command is still acknowledged, as when a reply is lost
// on the way), so the coordinator must re-send and the SDK answer the
// duplicate from its record. NATSTX_CRASH_AT=after-<op>-apply:N (op one of
// prepare, commit, abort, commit-one-phase, action, compensate; N >= 1)
// makes the process SIGKILL itself right after the N-th command of that
// operation is applied and recorded, before its reply and before the
// message is settled, as `natstx participant` does (docs/PROTOCOL.md,
// "Testing a participant"; `natstx conformance --start` uses it).

const { parseArgs } = require('node:util');
const { Participant, FileStore, connectFlags, connectSettings, connectParticipant } = require('../src');
const { ServiceAdapter } = require('./adapter');

const LEVELS = { debug: 0, info: 1, warn: 2, error: 3 };

/** The fault-injection variable, as `natstx participant` reads it. */
const ENV_CRASH_AT = 'NATSTX_CRASH_AT';

/**
 * Parses NATSTX_CRASH_AT into an afterApply hook, or undefined when unset.
 * @param {string|undefined} spec after-<op>-apply:N
 * @returns {((cmd: {op: string, txid: string}) => Promise<void>)|undefined}
 */
function crashAt(spec) {
  if (!spec) return undefined;
  const m = /^after-(prepare|commit|abort|commit-one-phase|action|compensate)-apply:([0-9]+)$/.exec(spec);
  const n = m ? Number(m[2]) : 0;
  if (!m || !Number.isSafeInteger(n) || n < 1) {
    throw new Error(`${ENV_CRASH_AT}=${JSON.stringify(spec)}: want after-prepare-apply:N, after-commit-apply:N, after-abort-apply:N, after-commit-one-phase-apply:N, after-action-apply:N or after-compensate-apply:N with N >= 1`);
  }
  const op = m[1];
  let seen = 0;
  return (cmd) => {
    if (cmd.op !== op || ++seen !== n) return Promise.resolve();
    process.stderr.write(`natstx js participant: ${ENV_CRASH_AT}: crashing after applying ${op} of ${cmd.txid}\n`);
    process.kill(process.pid, 'SIGKILL');
    return new Promise(() => {}); // never reply
  };
}

/**
 * A logger writing JSON lines on standard error from level on.
 * @param {string} level debug, info, warn or error
 * @param {string} name
 */
function jsonLogger(level, name) {
  const min = LEVELS[level] ?? LEVELS.info;
  const out = {};
  for (const [lvl, n] of Object.entries(LEVELS)) {
    out[lvl] = n < min ? () => {} : (msg, fields) => {
      process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level: lvl, participant: name, msg, ...fields }) + '\n');
    };
  }
  return out;
}

/**
 * Logs what NATS reports on the connection: errors the server sends (a
 * permissions violation names the subject refused) at warn, disconnections
 * and reconnections at info.
 * @param {import('@nats-io/transport-node').NatsConnection} nc
 * @param {ReturnType<typeof jsonLogger>} log
 */
async function watchConnection(nc, log) {
  try {
    for await (const s of nc.status()) {
      if (s.type === 'error') log.warn('NATS reported an error', { error: s.error && s.error.message ? s.error.message : String(s.error) });
      else if (s.type === 'disconnect' || s.type === 'reconnect') log.info(`NATS ${s.type}`, { server: s.server });
    }
  } catch {
    // the iterator ends with the connection
  }
}

async function main() {
  const { values: o } = parseArgs({
    options: {
      name: { type: 'string', default: 'js-service' },
      // --nats, --creds, --user, --password, --tls-ca, --tls-cert, --tls-key,
      // --inbox-prefix; their NATSTX_* variables apply in connectSettings.
      ...connectFlags(),
      store: { type: 'string' },
      'success-rate': { type: 'string', default: '1' },
      'drop-reply-rate': { type: 'string', default: '0' },
      'in-doubt-after': { type: 'string', default: '10000' },
      'ack-wait': { type: 'string', default: '30000' },
      'op-timeout': { type: 'string', default: '10000' },
      'retry-delay': { type: 'string', default: '200' },
      'log-level': { type: 'string', default: 'info' },
    },
  });
  const num = (k) => {
    const v = Number(o[k]);
    if (!Number.isFinite(v)) throw new Error(`--${k} ${o[k]} is not a number`);
    return v;
  };
  const log = jsonLogger(o['log-level'], o.name);
  const afterApply = crashAt(process.env[ENV_CRASH_AT]);
  const dropRate = num('drop-reply-rate');
  const nc = await connectParticipant(o.name, connectSettings(o), { name: `natstx-js-${o.name}`, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  log.info('connected', { server: nc.getServer(), inbox_prefix: nc.options.inboxPrefix });
  watchConnection(nc, log);
  const store = await FileStore.open(o.store || `${o.name}.jsonl`);
  const adapter = new ServiceAdapter(o.name, num('success-rate'), { info: (m) => log.info(m), warn: (m) => log.warn(m) });
  const p = new Participant(nc, {
    name: o.name,
    handler: adapter,
    sagaHandler: adapter,
    store,
    logger: log,
    inDoubtAfter: num('in-doubt-after'),
    ackWait: num('ack-wait'),
    opTimeout: num('op-timeout'),
    retryDelay: num('retry-delay'),
    dropReply: dropRate > 0 ? () => Math.random() < dropRate : undefined,
    afterApply,
  });
  await p.start();
  process.stdout.write(`participant ${o.name} (js) ready\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await p.stop();
    await nc.drain();
    const s = p.stats();
    process.stderr.write(`participant ${o.name} stopped: ${s.prepares} prepares, ${s.commits} commits, ${s.aborts} aborts, ${s.duplicates} duplicates, ${s.rejected} rejected, ${s.batches} batches, ${s.droppedReplies} replies dropped, ${adapter.lost} commits or compensations without data, ${s.actions} actions, ${s.compensations} compensations, ${s.onePhases} one-phase commits\n`);
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`natstx js participant: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
}

module.exports = { crashAt }; // for tests
