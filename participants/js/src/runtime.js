'use strict';
// Participant: consumes one participant's commands from the durable
// JetStream consumer natstx-<name> on stream NATSTX_CMD (the same consumer,
// with the same settings, as the Go runtime's participants/runtime.go, so Go
// and JavaScript instances of one participant can share it; it binds to the
// consumer the coordinator created, or creates it when its permissions
// allow: docs/PROTOCOL.md, "Who creates the consumer"), hands them to a
// Processor, publishes the replies, settles the messages, answers audits,
// resolves transactions in doubt, and stops gracefully. It reaches
// JetStream through its account's own API, or, in an account that imports
// natstx's (the participants' account of `natstx auth init`), under
// $JS.natstx.API (jetStreamApiPrefix; protocol.js JETSTREAM_API_PREFIX).

const { headers: natsHeaders, NoRespondersError, PermissionViolationError } = require('@nats-io/transport-node');
const { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, JetStreamApiError } = require('@nats-io/jetstream');

const P = require('./protocol');
const { isBatch } = require('./batch');
const { Processor, Settle, withDefaults } = require('./processor');
const { StreamMissingError, StoppedError, StartedError, errorText } = require('./errors');

/** How long one pull request waits, and how often the server shows it is alive (Go PullExpiry, PullHeartbeat). */
const PULL_EXPIRY_MS = 3000;
const PULL_HEARTBEAT_MS = 1000;
/** Most transactions one audit request may ask about. */
const MAX_AUDIT_IDS = 10_000;
/** The back-off of the wait for a consumer the participant may not create. */
const CONSUMER_WAIT_MIN_MS = 250;
const CONSUMER_WAIT_MAX_MS = 5000;

/**
 * @param {unknown} e
 * @returns {boolean} whether e, or an error it was caused by, is a NATS permissions violation
 */
function isPermissionError(e) {
  for (let c = e, i = 0; c && i < 5; c = c.cause, i++) {
    if (c instanceof PermissionViolationError) return true;
  }
  return false;
}

/**
 * @param {unknown} e
 * @returns {unknown[]} e and the errors it was caused by (at most 5)
 */
function causes(e) {
  const out = [];
  for (let c = e; c && out.length < 5; c = c.cause) out.push(c);
  return out;
}

/**
 * Tells which JetStream API prefix reaches natstx's streams from nc's
 * account, as the Go side does (messages/jsconnect): it asks for the
 * account's JetStream information ($JS.API.INFO) once.
 * - An answer, or another error from JetStream (say, a limit): the account
 *   has JetStream, natstx's streams are its own: P.JETSTREAM_API.
 * - "JetStream not enabled for account" (err_code 10039), which the server
 *   itself answers in an account without JetStream: the account imports
 *   natstx's API (the participants' account of `natstx auth init`):
 *   P.JETSTREAM_API_PREFIX.
 * - Its publication refused by the identity's permissions (nats.js fails
 *   the request at once): an identity that may not ask, in an account with
 *   JetStream, as is every account that does not import natstx's API (the
 *   participants of `natstx auth init` may ask): P.JETSTREAM_API.
 * - Anything else is thrown: no JetStream on the server (no responders), a
 *   timeout, or a reply inbox the permissions refuse (a wrong inbox prefix).
 * @param {import('@nats-io/transport-node').NatsConnection} nc
 * @param {{timeout?: number}} [opts] the request's timeout (nats.js's default 5 s)
 * @returns {Promise<string>} the prefix, without a trailing dot
 */
async function jetStreamApiPrefix(nc, opts = {}) {
  const jsm = await jetstreamManager(nc, { ...opts, checkAPI: false, apiPrefix: P.JETSTREAM_API });
  try {
    await jsm.getAccountInfo();
    return P.JETSTREAM_API;
  } catch (e) {
    const api = causes(e).filter((c) => c instanceof JetStreamApiError);
    if (api.some((c) => c.code === P.JS_NOT_ENABLED_FOR_ACCOUNT)) return P.JETSTREAM_API_PREFIX;
    if (api.length > 0) return P.JETSTREAM_API;
    if (causes(e).some((c) => c instanceof PermissionViolationError && c.operation === 'publish' && c.subject === `${P.JETSTREAM_API}.INFO`)) {
      return P.JETSTREAM_API;
    }
    throw e;
  }
}

/**
 * Lists how a consumer's settings (as JetStream reports them) differ from
 * want's, as "name: have -> want"; the description is not compared.
 * @param {object} have
 * @param {object} want
 * @returns {string[]}
 */
function consumerDiff(have, want) {
  const out = [];
  for (const k of ['filter_subject', 'deliver_policy', 'ack_policy', 'ack_wait', 'max_ack_pending']) {
    if (have[k] !== want[k]) out.push(`${k}: ${JSON.stringify(have[k] ?? null)} -> ${JSON.stringify(want[k])}`);
  }
  if (Array.isArray(have.filter_subjects) && have.filter_subjects.length > 0) {
    out.push(`filter_subjects: ${JSON.stringify(have.filter_subjects)} -> none`);
  }
  return out;
}

/**
 * Converts a record of header values to NATS headers, names kept exactly.
 * @param {Record<string,string[]>} rec
 */
function toHeaders(rec) {
  const h = natsHeaders();
  for (const [k, vs] of Object.entries(rec)) for (const v of vs) h.append(k, v);
  return h;
}

/**
 * The answer to one audit request (the body of Go serveAudit's reply): the
 * record's state of each well-formed transaction ID asked about (none,
 * prepared, committed, aborted or read-only; an ID that is not a valid name
 * is left out), or an error when the request is not a JSON object with a
 * list ids of at most MAX_AUDIT_IDS.
 * @param {{name: string, state: (txid: string) => string}} proc the Processor
 * @param {Uint8Array|null} data the request's body
 * @returns {{participant: string, states?: Record<string,string>, error?: string}}
 */
function auditResponse(proc, data) {
  const resp = { participant: proc.name };
  let req;
  try {
    req = JSON.parse(Buffer.from(data || []).toString('utf8')) ?? {};
    if (typeof req !== 'object' || Array.isArray(req) || (req.ids !== undefined && req.ids !== null && !Array.isArray(req.ids))) {
      throw new Error('ids is not a list');
    }
  } catch (e) {
    resp.error = `audit request is not valid JSON: ${errorText(e)}`;
    return resp;
  }
  const ids = req.ids || [];
  if (ids.length > MAX_AUDIT_IDS) {
    resp.error = `audit request asks about ${ids.length} transactions; the limit is ${MAX_AUDIT_IDS}`;
    return resp;
  }
  resp.states = {};
  for (const id of ids) {
    try {
      P.validateName('transaction ID', id);
    } catch {
      continue;
    }
    resp.states[id] = proc.state(id);
  }
  return resp;
}

/**
 * A participant runtime. Create it with new Participant(nc, config), then
 * start(); stop() ends it. It runs once.
 *
 * config:
 * - name: the participant's name, as coordinators address it (required).
 * - handler: { prepare(tx, payload, {signal}), commit(tx, {signal}), abort(tx, {signal}) },
 *   each async; resolving succeeds (prepare: votes commit), throwing fails
 *   (prepare: votes abort with the error's message as the reason; commit,
 *   abort: the command is delivered again after retryDelay). prepare
 *   resolving with READ_ONLY votes read-only: its part changed nothing and
 *   holds nothing (everything released before it returns); the record says
 *   read-only, and neither commit nor abort is called for the transaction.
 *   A commit-one-phase command (the transaction's only participant) calls
 *   prepare and, when it votes commit, commit at once: ack when commit
 *   succeeds, vote-abort when prepare throws, ack (read-only) for READ_ONLY;
 *   a commit that throws is called again (never prepare) when the command
 *   comes again.
 * - sagaHandler: { action(step, payload, {signal}), compensate(step, payload, {signal}) }
 *   (optional); throw refuse(code, reason) to refuse an action for good.
 * - store: an open FileStore, the durable record (required).
 * - concurrency (256), ackWait (30000 ms), opTimeout (10000 ms), retention
 *   (24 h, how long finished records answer duplicates), retryDelay (200 ms),
 *   streamWait (30000 ms), inDoubtAfter (10000 ms; negative never).
 * - logger: { debug, info, warn, error }(message, fields); default silent.
 * - afterApply(cmd): called after a command's effect is recorded, before its
 *   reply (fault injection).
 * - dropReply(reply): for fault injection: return true to not publish this
 *   reply, as if it were lost on the way (the message is still settled).
 * - now(): the clock of decisions, Unix ms; default Date.now.
 */
class Participant {
  /**
   * @param {import('@nats-io/transport-node').NatsConnection} nc
   * @param {object} config see the class description
   */
  constructor(nc, config) {
    this.cfg = withDefaults(config);
    this.nc = nc;
    this.log = this.cfg.logger;
    this.proc = new Processor(this.cfg);
    this.started = false;
    this.stopping = false;
    this.stopped = null;
    this.inflight = new Set();
    this.slots = 0;
    this.waiting = [];
    this.timers = [];
    this.resolving = null;
    this.droppedReplies = 0;
    /**
     * The JetStream API prefix start found (jetStreamApiPrefix): '$JS.API',
     * or '$JS.natstx.API' in an account that imports natstx's; null before.
     * @type {string|null}
     */
    this.apiPrefix = null;
    /** @type {Set<() => void>} ends the pauses of start when stop is called */
    this.wakers = new Set();
  }

  /** @returns {string} the participant's name */
  get name() {
    return this.cfg.name;
  }

  /** @returns {object} the counters (see Processor.stats), and droppedReplies (fault injection) */
  stats() {
    return { ...this.proc.stats(), droppedReplies: this.droppedReplies };
  }

  /**
   * @param {string} txid
   * @returns {string} what the record says of txid: none, prepared, committed, aborted or read-only
   */
  state(txid) {
    return this.proc.state(txid);
  }

  /**
   * @param {string} sagaId
   * @param {string} step
   * @returns {string} what the record says of a saga step
   */
  stepState(sagaId, step) {
    return this.proc.stepState(sagaId, step);
  }

  /**
   * Tells which JetStream API reaches natstx's streams (jetStreamApiPrefix:
   * the account's own, or natstx's under $JS.natstx.API where the account
   * imports it; logged at info, kept in apiPrefix), waits up to streamWait
   * for the command stream (the coordinator declares it), makes sure of the
   * durable consumer (see ensureConsumer: it binds to the consumer if it
   * exists, creates it if not, and if it may not create it, waits until the
   * coordinator has, for as long as it takes or until stop), starts
   * consuming, answers audits and starts the janitor (record sweeps,
   * in-doubt questions).
   * @returns {Promise<void>}
   */
  async start() {
    if (this.stopping) throw new StoppedError();
    if (this.started) throw new StartedError();
    this.started = true;
    const jsm = await this.waitStream();
    const durable = P.consumerName(this.cfg.name);
    await this.ensureConsumer(jsm, durable);
    if (this.stopping) throw new StoppedError();
    const consumer = await jetstream(this.nc, { apiPrefix: this.apiPrefix }).consumers.get(P.COMMAND_STREAM, durable);
    this.messages = await consumer.consume({
      max_messages: this.cfg.concurrency,
      expires: PULL_EXPIRY_MS,
      idle_heartbeat: PULL_HEARTBEAT_MS,
      callback: (m) => this.onMessage(m),
    });
    this.watchStatus(this.messages);
    this.proc.loadPrepared();
    this.audit = this.nc.subscribe(P.auditSubject(this.cfg.name), {
      queue: P.AUDIT_QUEUE,
      callback: (err, m) => {
        if (!err) this.answerAudit(m);
      },
    });
    const sweepEvery = Math.min(Math.max(this.cfg.retention / 2, 10), 60_000);
    this.timers.push(setInterval(() => {
      this.proc.sweep().then((n) => {
        if (n > 0) this.log.debug('removed finished transaction records', { count: n });
      }, (e) => this.log.warn('sweeping finished records failed', { error: errorText(e) }));
    }, sweepEvery));
    if (this.cfg.inDoubtAfter > 0) {
      this.timers.push(setInterval(() => this.resolveRound(), Math.max(this.cfg.inDoubtAfter / 2, 10)));
    }
    this.log.info('participant started', { concurrency: this.cfg.concurrency });
  }

  /**
   * @returns {object} the settings of the participant's durable consumer
   * (docs/PROTOCOL.md, "The consumer"), without its name
   */
  consumerSettings() {
    return {
      description: `natstx commands for participant ${this.cfg.name}`,
      filter_subject: P.participantFilter(this.cfg.name),
      deliver_policy: DeliverPolicy.All,
      ack_policy: AckPolicy.Explicit,
      ack_wait: this.cfg.ackWait * 1e6,
      max_ack_pending: 2 * this.cfg.concurrency,
    };
  }

  /**
   * @private Makes sure the durable consumer exists (docs/PROTOCOL.md, "Who
   * creates the consumer"): looks it up; creates it if it is not there; if
   * creating it is refused (a participant's permissions under `natstx auth
   * init` do not allow it), waits for the coordinator to create it, looking
   * it up again with a back-off until it exists or stop() is called. A
   * consumer whose settings differ from this participant's is updated; if
   * the update is refused, it is logged and the consumer used as it is.
   */
  async ensureConsumer(jsm, durable) {
    const want = this.consumerSettings();
    let ci = await this.lookUpConsumer(jsm, durable);
    if (!ci) {
      try {
        await jsm.consumers.add(P.COMMAND_STREAM, { durable_name: durable, ...want });
        this.log.info('created the durable consumer', { consumer: durable });
        return;
      } catch (e) {
        // Another instance, or the coordinator, may have created it meanwhile.
        ci = await this.lookUpConsumer(jsm, durable);
        if (!ci) {
          // JetStream answered, and said no: a bad configuration (say, an
          // overlapping consumer on the work-queue stream), not permissions.
          if (e instanceof JetStreamApiError) {
            throw new Error(`natstx: participant ${this.cfg.name}: creating consumer ${durable}: ${errorText(e)}`, { cause: e });
          }
          // Refused by the NATS permissions (nats.js fails the request at
          // once), or no answer at all: the coordinator creates it.
          this.log.warn(isPermissionError(e)
            ? 'creating the durable consumer was refused by the NATS permissions (as under natstx auth init); waiting for the coordinator to create it'
            : 'could not create the durable consumer; waiting for the coordinator to create it', { consumer: durable, error: errorText(e) });
          ci = await this.waitConsumer(jsm, durable);
          this.log.info('the durable consumer exists now', { consumer: durable });
        }
      }
    }
    const diff = consumerDiff(ci.config || {}, want);
    if (diff.length === 0) return;
    const fixed = diff.filter((d) => d.startsWith('deliver_policy') || d.startsWith('ack_policy'));
    if (fixed.length > 0) {
      this.log.warn('the durable consumer has settings that cannot be changed after its creation; using it as it is', { consumer: durable, differences: fixed.join(', ') });
    }
    if (fixed.length === diff.length) return;
    const changes = { ...want };
    delete changes.deliver_policy; // fixed at creation
    delete changes.ack_policy;
    try {
      await jsm.consumers.update(P.COMMAND_STREAM, durable, changes);
      this.log.info('updated the durable consumer to this participant\'s settings', { consumer: durable, differences: diff.join(', ') });
    } catch (e) {
      this.log.warn('the durable consumer\'s settings differ from this participant\'s and updating it was refused; using it as it is', {
        consumer: durable, differences: diff.join(', '), error: errorText(e),
      });
    }
  }

  /** @private The consumer's info, or null if it does not exist. */
  async lookUpConsumer(jsm, durable) {
    try {
      return await jsm.consumers.info(P.COMMAND_STREAM, durable);
    } catch (e) {
      if (e instanceof JetStreamApiError && e.status === 404) return null;
      throw e;
    }
  }

  /**
   * @private Looks the consumer up with a back-off (250 ms doubling to 5 s)
   * until it exists; throws StoppedError once stop() is called.
   */
  async waitConsumer(jsm, durable) {
    let pause = CONSUMER_WAIT_MIN_MS;
    for (;;) {
      if (this.stopping) throw new StoppedError();
      await this.pause(pause);
      if (this.stopping) throw new StoppedError();
      try {
        const ci = await this.lookUpConsumer(jsm, durable);
        if (ci) return ci;
      } catch (e) {
        this.log.debug('looking the durable consumer up', { consumer: durable, error: errorText(e) });
      }
      pause = Math.min(2 * pause, CONSUMER_WAIT_MAX_MS);
    }
  }

  /** @private Sleeps ms, or less if stop() is called meanwhile. */
  pause(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.wakers.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  /**
   * @private Tells the JetStream API prefix (once it gets an answer: see
   * jetStreamApiPrefix), then polls for the command stream, until it exists
   * or streamWait passes; returns the JetStream manager under that prefix.
   * The manager does not check the API itself (nats.js's checkAPI): that
   * would ask <prefix>.INFO, which the participants' account does not
   * import.
   */
  async waitStream() {
    const end = Date.now() + this.cfg.streamWait;
    let last = null;
    let jsm = null;
    for (;;) {
      try {
        if (!jsm) {
          const prefix = await jetStreamApiPrefix(this.nc);
          jsm = await jetstreamManager(this.nc, { checkAPI: false, apiPrefix: prefix });
          this.apiPrefix = prefix;
          this.log.info(prefix === P.JETSTREAM_API
            ? 'JetStream API: this account\'s own'
            : 'JetStream API: natstx\'s, imported into this account (it has no JetStream of its own)', { api_prefix: prefix });
        }
        await jsm.streams.info(P.COMMAND_STREAM);
        return jsm;
      } catch (e) {
        last = e;
      }
      if (this.stopping) throw new StoppedError();
      if (Date.now() >= end) {
        if (!jsm) {
          throw new StreamMissingError(`participant ${this.cfg.name}: no answer about this account's JetStream within ${this.cfg.streamWait}ms; is natstx's server, or a NATS server with JetStream, running there? (last error: ${errorText(last)})`);
        }
        throw new StreamMissingError(`participant ${this.cfg.name}: stream ${P.COMMAND_STREAM} did not appear within ${this.cfg.streamWait}ms; start the natstx coordinator, which declares it (last error: ${errorText(last)})`);
      }
      await this.pause(Math.min(250, this.cfg.streamWait));
    }
  }

  /** @private Logs the consumer's notifications that matter. */
  async watchStatus(messages) {
    try {
      for await (const s of messages.status()) {
        if (s.type === 'heartbeats_missed' || s.type === 'consumer_not_found' || s.type === 'stream_not_found' || s.type === 'consumer_deleted') {
          this.log.warn('consuming commands', { status: s.type, data: s.count ?? s.name ?? undefined });
        }
      }
    } catch {
      // the iterator ends when consuming stops
    }
  }

  /** @private Runs one in-doubt round unless one is running. */
  resolveRound() {
    if (this.resolving || this.stopping) return;
    this.resolving = this.proc.resolveInDoubt((req, timeout) => this.ask(req, timeout), () => this.stopping)
      .catch((e) => this.log.warn('in doubt: round failed', { error: errorText(e) }))
      .finally(() => { this.resolving = null; });
  }

  /** @private Asks the coordinators' queue group how a transaction ended. */
  async ask(req, timeout) {
    let m;
    try {
      m = await this.nc.request(P.API_OUTCOME, JSON.stringify(req), { timeout });
    } catch (e) {
      if (e instanceof NoRespondersError || (e && e.cause instanceof NoRespondersError)) throw new Error('no coordinator is running');
      throw e;
    }
    let resp;
    try {
      resp = m.json();
    } catch (e) {
      throw new Error(`unreadable answer: ${errorText(e)}`);
    }
    if (resp.error) throw new Error(resp.error);
    return resp;
  }

  /** @private Answers one audit request (Go serveAudit). */
  answerAudit(m) {
    const resp = auditResponse(this.proc, m.data);
    if (resp.error) this.log.warn('bad audit request', { error: resp.error });
    m.respond(JSON.stringify(resp));
  }

  /** @private Takes a handler slot; resolves to its release, or null when stopping. */
  acquire() {
    if (this.stopping) return Promise.resolve(null);
    if (this.slots < this.cfg.concurrency) {
      this.slots++;
      return Promise.resolve(() => this.release());
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** @private */
  release() {
    const next = this.waiting.shift();
    if (next) next(() => this.release());
    else this.slots--;
  }

  /** @private Tracks a promise of work in flight until it settles. */
  track(p) {
    this.inflight.add(p);
    p.finally(() => this.inflight.delete(p));
  }

  /** @private The consume callback: never runs handler work itself. */
  onMessage(msg) {
    if (this.stopping) {
      this.handBack(msg);
      return;
    }
    const h = msg.headers ? msg.headers.toRecord() : {};
    if (isBatch(h)) {
      this.track(this.processBatch(msg, h));
      return;
    }
    this.track((async () => {
      const release = await this.acquire();
      if (!release) {
        this.handBack(msg);
        return;
      }
      try {
        await this.process(msg, h);
      } finally {
        release();
      }
    })().catch((e) => this.log.error('handling a command failed', { subject: msg.subject, error: errorText(e) })));
  }

  /** @private Hands a message received during stop back to JetStream, for another instance now. */
  handBack(msg) {
    try {
      msg.nak();
    } catch (e) {
      this.log.debug('handing a command back', { subject: msg.subject, error: errorText(e) });
    }
  }

  /** @private Publishes one reply message; returns false if it could not. */
  publish(subject, header, body, reply) {
    if (reply && this.cfg.dropReply && this.cfg.dropReply(reply)) {
      this.droppedReplies++;
      this.log.info('fault injection: reply dropped', { txid: reply.txid, op: reply.op, result: reply.result });
      return true;
    }
    try {
      this.nc.publish(subject, body, { headers: toHeaders(header) });
      return true;
    } catch (e) {
      this.log.warn('publishing reply; the command will be delivered again', { reply_to: subject, error: errorText(e) });
      return false;
    }
  }

  /** @private Handles one command message end to end. */
  async process(msg, h) {
    await this.proc.handle(h, msg.data, msg.subject, (a) => {
      let settle = a.settle;
      if (a.replyTo && a.reply) {
        if (!this.publish(a.replyTo, P.replyHeader(a.reply), P.replyBody(a.reply), a.reply) && settle === Settle.ACK) settle = Settle.NAK;
      }
      this.dispose(msg, settle);
    });
  }

  /** @private Handles a batch message: each command takes a slot; one settle for the message. */
  async processBatch(msg, h) {
    try {
      const ba = await this.proc.handleBatch(h, msg.data, msg.subject, () => this.acquire());
      if (ba.stopped) {
        this.handBack(msg);
        return;
      }
      let settle = ba.settle;
      for (const m of ba.replies) {
        // A dropped reply batch is lost whole, as a lost message would be.
        const probe = m.header[P.Header.BATCH] ? null : { txid: m.header[P.Header.TXID][0], op: m.header[P.Header.OP][0], result: m.header[P.Header.RESULT][0] };
        const ok = probe ? this.publish(m.subject, m.header, m.body, probe)
          : this.publish(m.subject, m.header, m.body, { batch: true, txid: '', op: '', result: '' });
        if (!ok && settle === Settle.ACK) settle = Settle.NAK;
      }
      this.dispose(msg, settle);
    } catch (e) {
      this.log.error('handling a command batch failed', { subject: msg.subject, error: errorText(e) });
    }
  }

  /** @private Acknowledges, naks (after retryDelay) or terminates a message. */
  dispose(msg, settle) {
    try {
      if (settle === Settle.ACK) msg.ack();
      else if (settle === Settle.NAK) msg.nak(this.cfg.retryDelay);
      else msg.term();
    } catch (e) {
      this.log.warn('settling the command message', { subject: msg.subject, error: errorText(e) });
    }
  }

  /**
   * Stops consuming, waits for every in-flight handler call to finish and
   * reply, stops the janitor and closes the record. Messages received while
   * stopping are handed back to JetStream. Safe to call more than once, and
   * before start. The NATS connection stays open: it is the caller's.
   * @returns {Promise<void>}
   */
  stop() {
    if (!this.stopped) this.stopped = this.doStop();
    return this.stopped;
  }

  /** @private */
  async doStop() {
    this.stopping = true;
    for (const w of [...this.wakers]) w();
    for (const t of this.timers) clearInterval(t);
    for (const w of this.waiting.splice(0)) w(null);
    if (this.audit) this.audit.unsubscribe();
    if (this.messages) await this.messages.close();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    if (this.resolving) await this.resolving;
    try {
      await this.nc.flush();
    } catch {
      // the connection is closed: nothing left to flush
    }
    await this.cfg.store.close();
    if (this.started) this.log.info('participant stopped');
  }
}

module.exports = {
  Participant, jetStreamApiPrefix, auditResponse, toHeaders, consumerDiff, PULL_EXPIRY_MS, PULL_HEARTBEAT_MS, MAX_AUDIT_IDS, CONSUMER_WAIT_MIN_MS, CONSUMER_WAIT_MAX_MS,
};
