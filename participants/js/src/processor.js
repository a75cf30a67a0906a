'use strict';
// The transport-free core of a participant (Go participants/processor.go,
// processor_saga.go, batch.go, indoubt.go): it decodes a command, applies
// the idempotency rules with the durable record, calls the handler when
// they say so, and returns the answer: a reply to publish and how to settle
// the message. It also keeps the transactions in doubt and resolves them.
// Every rule is the Go SDK's with its in-memory record, except that the
// record here is durable (src/store.js): each change is on disk before the
// reply that depends on it is published.

const P = require('./protocol');
const { decodeBatch, encodeReplyBatch, batchParticipant } = require('./batch');
const {
  Reason, CODE_COMPENSATED_FIRST, InvalidConfigError, RefusedError, CodedError, errorText,
} = require('./errors');

const { Op, Result } = P;

/** The counter of each two-phase commit operation's commands. */
const OP_COUNTER = Object.freeze({
  [Op.PREPARE]: 'prepares', [Op.COMMIT]: 'commits', [Op.ABORT]: 'aborts', [Op.COMMIT_ONE_PHASE]: 'onePhases',
});

/** What a transport does with a command message after its reply. */
const Settle = Object.freeze({ ACK: 'ack', NAK: 'nak', TERM: 'term' });

/**
 * States of a transaction record. READ_ONLY (final, like COMMITTED and
 * ABORTED): prepare voted read-only; the participant holds nothing, and a
 * commit or abort, if one comes, changes nothing. A PREPARED record with
 * onePhase set (prepared by commit-one-phase, its commit not done yet) is
 * not in doubt: the participant decided to commit, and the command
 * delivered again calls commit (never prepare).
 */
const State = Object.freeze({
  NONE: 'none', PREPARED: 'prepared', COMMITTED: 'committed', ABORTED: 'aborted', READ_ONLY: 'read-only',
});

/**
 * What a two-phase commit handler's prepare returns (resolves with) to vote
 * read-only (protocol 6, Go participants.ReadOnly): its part of the
 * transaction changed nothing and holds nothing (nothing staged, no lock
 * kept; it must have released everything before it returns), so it needs
 * neither commit nor abort. The participant records the transaction
 * read-only and answers vote-read-only; the coordinator counts the vote as
 * a commit vote and sends no second phase, and neither the handler's commit
 * nor its abort is ever called for the transaction. Any other value prepare
 * resolves with votes commit; a throw votes abort.
 */
const READ_ONLY = Symbol.for('natstx.participant.read-only');

/** States of a saga step's record. */
const StepState = Object.freeze({
  NONE: 'none', DONE: 'done', REFUSED: 'refused', COMPENSATED: 'compensated', COMPENSATED_FIRST: 'compensated-first',
});

/** Defaults of the durations, in milliseconds. */
const Defaults = Object.freeze({
  concurrency: 256,
  ackWait: 30_000,
  opTimeout: 10_000,
  retention: 24 * 3600_000,
  retryDelay: 200,
  streamWait: 30_000,
  inDoubtAfter: 10_000,
});

const noop = () => {};
/** A logger that drops everything. */
const silentLogger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/** Error of the record store: the command is delivered again later. */
class StoreFailure extends Error {
  constructor(cause) {
    super(`natstx: record: ${errorText(cause)}`, { cause });
    this.name = 'StoreFailure';
  }
}

const isFinished = (s) => s === State.COMMITTED || s === State.ABORTED || s === State.READ_ONLY;

/**
 * Applies the defaults to cfg and checks it.
 * @param {object} cfg
 * @returns {object} the configuration with defaults
 */
function withDefaults(cfg) {
  const c = { ...cfg };
  for (const [k, v] of Object.entries(Defaults)) {
    if (c[k] === undefined || c[k] === 0) c[k] = v;
  }
  c.logger = c.logger || silentLogger;
  try {
    P.validateName('participant name', c.name);
  } catch (e) {
    throw new InvalidConfigError(`name: ${e.message}`);
  }
  if (!c.handler && !c.sagaHandler) throw new InvalidConfigError('set handler and/or sagaHandler');
  if (!c.store) throw new InvalidConfigError('store is missing (a FileStore, see FileStore.open)');
  for (const k of ['concurrency', 'ackWait', 'opTimeout', 'retention', 'retryDelay', 'streamWait']) {
    if (!(typeof c[k] === 'number' && c[k] > 0)) throw new InvalidConfigError(`${k} is ${c[k]}, it must be a positive number`);
  }
  if (typeof c.inDoubtAfter !== 'number') throw new InvalidConfigError('inDoubtAfter must be a number of milliseconds');
  if (c.opTimeout >= c.ackWait) {
    throw new InvalidConfigError(
      `opTimeout (${c.opTimeout}ms) must be shorter than ackWait (${c.ackWait}ms), or commands are redelivered while their handler still runs`);
  }
  return c;
}

/**
 * Processor is the transport-free core of a participant. Participant (the
 * runtime) feeds it from a JetStream consumer; tests feed it directly.
 */
class Processor {
  /**
   * @param {object} cfg see Participant's configuration; store must be an open FileStore
   */
  constructor(cfg) {
    this.cfg = withDefaults(cfg);
    this.log = this.cfg.logger;
    this.store = this.cfg.store;
    this.locks = new Map();
    /** @type {Map<string, {id: string, deadline: number|null, since: number}>} */
    this.doubt = new Map();
    this.lastSweep = this.now();
    this.counters = {
      prepares: 0, commits: 0, aborts: 0, onePhases: 0, duplicates: 0, rejected: 0, actions: 0, compensations: 0,
      unsupported: 0, malformed: 0, handlerErrors: 0, batches: 0, inDoubtQueries: 0, inDoubtResolved: 0, inDoubtContradicted: 0,
    };
  }

  /** @returns {number} the current time, Unix ms, from cfg.now if set */
  now() {
    return this.cfg.now ? this.cfg.now() : Date.now();
  }

  /** @returns {string} the participant name served */
  get name() {
    return this.cfg.name;
  }

  /** @returns {object} the counters, the records held and the transactions in doubt */
  stats() {
    return { ...this.counters, records: this.store.size, inDoubt: this.doubt.size };
  }

  /**
   * @param {string} txid
   * @returns {string} what the record says of transaction txid: none, prepared, committed, aborted or read-only
   */
  state(txid) {
    const r = this.store.get(txid);
    return (r && r.state) || State.NONE;
  }

  /**
   * @param {string} sagaId
   * @param {string} step
   * @returns {string} what the record says of the saga step
   */
  stepState(sagaId, step) {
    const r = this.store.get(sagaKey(sagaId, step));
    return (r && r.step) || StepState.NONE;
  }

  /**
   * @returns {string[]} the transactions voted commit on whose outcome has
   *   not arrived (never one prepared by commit-one-phase)
   */
  inDoubt() {
    return [...this.doubt.keys()];
  }

  /**
   * Fills the doubt set from the record after a start: every transaction
   * recorded prepared (by a two-phase prepare; not one prepared by
   * commit-one-phase, which is never in doubt) is in doubt, with the
   * deadline its prepare carried, from now on.
   * @returns {number} how many
   */
  loadPrepared() {
    const now = this.now();
    let n = 0;
    for (const [k, r] of this.store.entries()) {
      if (r.state === State.PREPARED && !r.onePhase) {
        this.doubtAdd(k, r.deadline || null, now);
        n++;
      }
    }
    if (n > 0) this.log.info('transactions found prepared at start; they are resolved if no outcome arrives', { count: n });
    return n;
  }

  /** @private */
  doubtAdd(txid, deadline, since) {
    const v = this.doubt.get(txid);
    if (!v) this.doubt.set(txid, { id: txid, deadline, since });
    else if (!v.deadline && deadline) v.deadline = deadline;
  }

  /** @private A transaction prepared by commit-one-phase is never in doubt. */
  doubtUpdate(txid, after, deadline, now) {
    const r = this.store.get(txid);
    if (after !== State.PREPARED || (r && r.onePhase)) this.doubt.delete(txid);
    else this.doubtAdd(txid, deadline, now);
  }

  /** @private Runs fn holding key's lock: one command per transaction (or saga step) at a time. */
  async withLock(key, fn) {
    const prev = this.locks.get(key) || Promise.resolve();
    let release;
    const mine = new Promise((r) => { release = r; });
    const chain = prev.then(() => mine);
    this.locks.set(key, chain);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(key) === chain) this.locks.delete(key);
    }
  }

  /**
   * Removes records that finished at least cfg.retention before now, and
   * returns how many. Prepared records and done saga steps stay.
   * @param {number} [now] Unix ms
   * @returns {Promise<number>}
   */
  async sweep(now = this.now()) {
    this.lastSweep = now;
    const old = [];
    for (const [k, r] of this.store.entries()) {
      if (this.locks.has(k) || !sweepable(r)) continue;
      if (now - (r.finishedAt || 0) >= this.cfg.retention) old.push([k, r]);
    }
    let n = 0;
    for (const [k, r] of old) {
      // Checked again: a command may have changed the record meanwhile (a
      // failed saga action done at a later attempt); a change enqueued after
      // this delete is written after it.
      if (this.locks.has(k) || this.store.get(k) !== r) continue;
      await this.store.delete(k);
      n++;
    }
    await this.store.compactIfWorth();
    return n;
  }

  /** @private */
  maybeSweep() {
    const now = this.now();
    if (now - this.lastSweep >= this.cfg.retention / 2) {
      this.sweep(now).catch((e) => this.log.warn('sweeping finished records failed', { error: errorText(e) }));
    }
  }

  /** @private Calls one handler method with a signal that ends after opTimeout; an error or throw is returned. */
  async call(fn) {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new Error(`handler call exceeded opTimeout (${this.cfg.opTimeout}ms)`)), this.cfg.opTimeout);
    try {
      await fn({ signal: ac.signal });
      return null;
    } catch (e) {
      this.counters.handlerErrors++;
      return e === undefined || e === null ? new Error('') : e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** @private Makes key's record durable, or throws StoreFailure. */
  async persist(key, rec) {
    try {
      await this.store.put(key, rec);
    } catch (e) {
      throw new StoreFailure(e);
    }
  }

  /**
   * An answer: the reply to publish on replyTo (none when replyTo is '')
   * and how to settle the message.
   * @typedef {object} Answer
   * @property {string} replyTo
   * @property {import('./protocol').Reply|null} reply
   * @property {string} settle ack, nak or term
   */

  /**
   * Processes one command message: its headers (names exactly as on the
   * wire), body and the subject it arrived on ('' if unknown). It awaits
   * respond(answer) while it still holds the transaction's lock, so a
   * redelivery of the same command sees the final record; respond publishes
   * the reply and settles the message.
   * @param {Record<string,string[]>} h
   * @param {Uint8Array|null} body
   * @param {string} subject
   * @param {(a: Answer) => (void|Promise<void>)} respond
   * @returns {Promise<void>}
   */
  handle(h, body, subject, respond) {
    return this.handleCommand(h, body, subject, false, respond);
  }

  /** @private handle; inDoubt marks a command made from an in-doubt answer. */
  async handleCommand(h, body, subject, inDoubt, respond) {
    this.maybeSweep();
    let cmd;
    try {
      cmd = P.decodeCommand(h, body);
      if (cmd.participant !== this.cfg.name) {
        throw new P.MalformedError(`command for participant ${JSON.stringify(cmd.participant)} reached participant ${JSON.stringify(this.cfg.name)}`);
      }
      if (subject && subject !== P.commandSubject(cmd.participant, cmd.txid)) {
        throw new P.MalformedError(`command for ${P.commandSubject(cmd.participant, cmd.txid)} arrived on subject ${JSON.stringify(subject)}`);
      }
    } catch (err) {
      await respond(this.malformedAnswer(h, subject, err));
      return;
    }
    if (P.isSaga(cmd.op)) {
      await this.handleSaga(cmd, respond);
      return;
    }
    this.counters[OP_COUNTER[cmd.op]]++;
    const fields = { txid: cmd.txid, op: cmd.op, attempt: cmd.attempt };
    if (!this.cfg.handler) {
      await respond(this.unsupportedAnswer(cmd, Reason.NO_TWO_PHASE_HANDLER, fields));
      return;
    }
    const tx = { id: cmd.txid, participant: cmd.participant, deadline: cmd.deadline, attempt: cmd.attempt };
    await this.withLock(cmd.txid, async () => {
      const now = this.now();
      let out;
      try {
        out = await this.decide(cmd, tx, now, fields);
      } catch (e) {
        if (!(e instanceof StoreFailure)) throw e;
        this.log.warn('recording failed; the command will be delivered again', { ...fields, error: e.message });
        out = { result: Result.FAILED, reason: e.message, then: Settle.NAK };
      }
      if (out.rejected && !inDoubt) {
        this.counters.rejected++;
        this.log.error('rejected command that contradicts the record', { ...fields, state: out.after, reason: out.reason });
      } else if (out.duplicate) {
        this.counters.duplicates++;
        this.log.debug('duplicate answered from the record', { ...fields, state: out.after, result: out.result });
      }
      if (out.applied && this.cfg.afterApply) await this.cfg.afterApply(cmd);
      if (out.after !== undefined) this.doubtUpdate(cmd.txid, out.after, cmd.deadline, now);
      await respond({
        replyTo: cmd.replyTo,
        reply: {
          txid: cmd.txid, op: cmd.op, participant: this.cfg.name, result: out.result,
          attempt: cmd.attempt, reason: P.truncate(out.reason || '', P.MAX_REASON_LEN),
        },
        settle: out.then || Settle.ACK,
      });
    });
  }

  /** @private The idempotency rules of one two-phase commit command (Go Processor.decide). */
  async decide(cmd, tx, now, fields) {
    const rec = this.store.get(cmd.txid);
    const state = (rec && rec.state) || State.NONE;
    const finish = (s, reason) => this.persist(cmd.txid, { state: s, reason, finishedAt: now });
    const dup = (out) => ({ ...out, duplicate: true, after: state });
    const reject = (reason) => ({ result: Result.FAILED, reason, then: Settle.TERM, rejected: true, after: state });
    switch (cmd.op) {
      case Op.PREPARE:
        switch (state) {
          case State.NONE: {
            const out = await this.prepareFresh(cmd, tx, now, fields, finish, false);
            if (out) return out;
            this.log.debug('voted commit', fields);
            return { result: Result.VOTE_COMMIT, applied: true, after: State.PREPARED };
          }
          case State.PREPARED:
          case State.COMMITTED:
            return dup({ result: Result.VOTE_COMMIT });
          case State.READ_ONLY:
            return dup({ result: Result.VOTE_READ_ONLY });
          default:
            return dup({ result: Result.VOTE_ABORT, reason: rec.reason || Reason.ABORTED });
        }
      case Op.COMMIT_ONE_PHASE:
        return this.decideOnePhase(cmd, tx, rec, now, fields, { finish, dup, reject });
      case Op.COMMIT:
        switch (state) {
          case State.PREPARED: {
            if (rec.onePhase) return reject(Reason.COMMIT_OF_ONE_PHASE);
            return this.commitPrepared(tx, fields, finish);
          }
          case State.COMMITTED:
          case State.READ_ONLY: // nothing to commit; a coordinator recovering its decision may send commit all the same
            return dup({ result: Result.ACK });
          case State.NONE:
            return reject(Reason.NO_RECORD);
          default:
            return reject(Reason.COMMIT_AFTER_ABORT);
        }
      default: // abort
        switch (state) {
          case State.NONE:
            await finish(State.ABORTED, Reason.ABORTED_BEFORE_PREPARE);
            this.log.info('abort before prepare: recorded, so a late prepare votes abort', fields);
            return { result: Result.ACK, after: State.ABORTED };
          case State.PREPARED: {
            if (rec.onePhase) return reject(Reason.ABORT_OF_ONE_PHASE);
            const err = await this.call((o) => this.cfg.handler.abort(tx, o));
            if (err) {
              this.log.warn('abort failed; it will be retried', { ...fields, error: errorText(err) });
              return { result: Result.FAILED, reason: errorText(err), then: Settle.NAK };
            }
            await finish(State.ABORTED, Reason.ABORTED);
            this.log.debug('aborted', fields);
            return { result: Result.ACK, applied: true, after: State.ABORTED };
          }
          case State.ABORTED:
          case State.READ_ONLY: // nothing to abort
            return dup({ result: Result.ACK });
          default:
            return reject(Reason.ABORT_AFTER_COMMIT);
        }
    }
  }

  /**
   * @private A prepare of either protocol for a transaction with no record
   * (Go Processor.prepareFresh): the deadline rule, then the handler's
   * prepare. Resolves to nothing when prepare voted commit (the record is
   * then prepared, on disk, for one phase if onePhase), else to the vote,
   * abort or read-only, recorded.
   */
  async prepareFresh(cmd, tx, now, fields, finish, onePhase) {
    if (tx.deadline !== null && now >= tx.deadline) {
      await finish(State.ABORTED, Reason.DEADLINE_PASSED);
      this.log.info('voted abort: deadline passed', { ...fields, deadline: tx.deadline });
      return { result: Result.VOTE_ABORT, reason: Reason.DEADLINE_PASSED, after: State.ABORTED };
    }
    let vote;
    const err = await this.call(async (o) => { vote = await this.cfg.handler.prepare(tx, cmd.payload, o); });
    if (!err && vote === READ_ONLY) {
      await finish(State.READ_ONLY, '');
      this.log.debug('voted read-only', fields);
      return { result: Result.VOTE_READ_ONLY, applied: true, after: State.READ_ONLY };
    }
    if (err) {
      const reason = errorText(err) || Reason.PREPARE_FAILED;
      await finish(State.ABORTED, P.truncate(reason, P.MAX_REASON_LEN));
      this.log.info('voted abort', { ...fields, reason });
      return { result: Result.VOTE_ABORT, reason, after: State.ABORTED };
    }
    await this.persist(cmd.txid, onePhase
      ? { state: State.PREPARED, onePhase: true, deadline: tx.deadline }
      : { state: State.PREPARED, deadline: tx.deadline });
    return null;
  }

  /**
   * @private The rules of commit-one-phase (Go Processor.decideOnePhase,
   * with a durable record): the handler's prepare, then at once its commit;
   * the participant decides the outcome alone. The record says "prepared,
   * one-phase" (state prepared, onePhase set) on disk before commit is
   * called, so that a commit that fails, or a crash, leaves it to the
   * command delivered again, which calls commit again and never prepare; it
   * is never in doubt.
   */
  async decideOnePhase(cmd, tx, rec, now, fields, { finish, dup, reject }) {
    const state = (rec && rec.state) || State.NONE;
    switch (state) {
      case State.NONE: {
        // (a passed deadline is also the probe of a coordinator taking the
        // transaction over: deadline 1, no payload)
        const out = await this.prepareFresh(cmd, tx, now, fields, finish, true);
        if (out) return out.result === Result.VOTE_READ_ONLY ? { ...out, result: Result.ACK } : out;
        break;
      }
      case State.PREPARED:
        if (!rec.onePhase) return reject(Reason.ONE_PHASE_OF_PREPARED);
        break; // its commit failed before (or the process stopped): commit again
      case State.COMMITTED:
      case State.READ_ONLY:
        return dup({ result: Result.ACK });
      default: // aborted
        return dup({ result: Result.VOTE_ABORT, reason: rec.reason || Reason.ABORTED });
    }
    return this.commitPrepared(tx, fields, finish);
  }

  /**
   * @private Calls commit for a prepared record, of either protocol, and
   * records it committed (Go Processor.commitPrepared); a commit that fails
   * is answered failed and the command comes again, the record still
   * prepared. (fields name the command's operation.)
   */
  async commitPrepared(tx, fields, finish) {
    const err = await this.call((o) => this.cfg.handler.commit(tx, o));
    if (err) {
      this.log.warn('commit failed; it will be retried', { ...fields, error: errorText(err) });
      return { result: Result.FAILED, reason: errorText(err), then: Settle.NAK };
    }
    await finish(State.COMMITTED, '');
    this.log.debug('committed', fields);
    return { result: Result.ACK, applied: true, after: State.COMMITTED };
  }

  /** @private A command of a kind this participant does not implement: failed, terminated. */
  unsupportedAnswer(cmd, reason, fields) {
    this.counters.unsupported++;
    this.log.warn('command of a kind this participant does not implement; terminated', { ...fields, reason });
    return {
      replyTo: cmd.replyTo,
      // commit-one-phase, which only this participant decides, is refused
      // for good (failed would have it re-sent for ever)
      reply: {
        txid: cmd.txid, op: cmd.op, participant: this.cfg.name,
        result: cmd.op === Op.COMMIT_ONE_PHASE ? Result.VOTE_ABORT : Result.FAILED, attempt: cmd.attempt, reason, step: cmd.step,
      },
      settle: Settle.TERM,
    };
  }

  /** @private A command that did not decode: answered failed when the headers say where and about what; terminated. */
  malformedAnswer(h, subject, cause) {
    this.counters.malformed++;
    const txid = P.first(h, P.Header.TXID) ?? '';
    this.log.warn('dropping malformed command', { subject, txid, error: errorText(cause) });
    const a = Number(P.first(h, P.Header.ATTEMPT));
    const attemptText = P.first(h, P.Header.ATTEMPT) ?? '';
    const attempt = /^[+-]?[0-9]+$/.test(attemptText) && Number.isSafeInteger(a) && a >= 1 ? a : 1;
    const cmd = {
      txid, op: P.first(h, P.Header.OP) ?? '', participant: this.cfg.name, attempt,
      replyTo: P.first(h, P.Header.REPLY_TO) ?? '', deadline: null, payload: null, step: '',
    };
    try {
      P.validateCommand(cmd);
    } catch {
      return { replyTo: '', reply: null, settle: Settle.TERM };
    }
    return {
      replyTo: cmd.replyTo,
      reply: {
        txid, op: cmd.op, participant: this.cfg.name, result: Result.FAILED, attempt,
        reason: P.truncate(errorText(cause), P.MAX_REASON_LEN),
      },
      settle: Settle.TERM,
    };
  }

  /** @private One well-formed action or compensate command (Go handleSaga). */
  async handleSaga(cmd, respond) {
    this.counters[cmd.op === Op.ACTION ? 'actions' : 'compensations']++;
    const fields = { txid: cmd.txid, op: cmd.op, step: cmd.step, attempt: cmd.attempt };
    if (!this.cfg.sagaHandler) {
      await respond(this.unsupportedAnswer(cmd, Reason.NO_SAGA_HANDLER, fields));
      return;
    }
    const st = { sagaId: cmd.txid, name: cmd.step, participant: cmd.participant, attempt: cmd.attempt, deadline: cmd.deadline };
    const key = sagaKey(cmd.txid, cmd.step);
    await this.withLock(key, async () => {
      const now = this.now();
      let out;
      try {
        out = cmd.op === Op.ACTION ? await this.sagaAction(key, st, cmd.payload, now) : await this.sagaCompensate(key, st, cmd.payload, now);
      } catch (e) {
        if (!(e instanceof StoreFailure)) throw e;
        // The handler's effect may be done: answer nothing (the attempt is
        // unknown to the coordinator) and have the command delivered again.
        this.log.warn('recording failed; no answer, the command will be delivered again', { ...fields, error: e.message });
        out = { result: '', then: Settle.NAK };
      }
      if (out.duplicate) {
        this.counters.duplicates++;
        this.log.debug('duplicate answered from the record', { ...fields, result: out.result, reason: out.reason });
      } else if (out.result === Result.REFUSED) {
        this.log.info('action refused', { ...fields, reason: out.reason, code: out.code });
      } else if (out.result === Result.FAILED) {
        this.log.warn('failed; the coordinator retries by the step\'s policy', { ...fields, reason: out.reason, code: out.code });
      }
      if (out.applied && this.cfg.afterApply) await this.cfg.afterApply(cmd);
      const a = { replyTo: '', reply: null, settle: out.then || Settle.ACK };
      if (out.result) {
        a.replyTo = cmd.replyTo;
        a.reply = {
          txid: cmd.txid, op: cmd.op, participant: this.cfg.name, result: out.result, attempt: cmd.attempt,
          reason: P.truncate(out.reason || '', P.MAX_REASON_LEN), step: cmd.step, code: P.validCode(out.code || ''),
        };
      }
      await respond(a);
    });
  }

  /** @private Go sagaAction. */
  async sagaAction(key, st, payload, now) {
    const r = this.store.get(key) || {};
    switch (r.step) {
      case StepState.DONE:
      case StepState.COMPENSATED:
        return { result: Result.ACK, duplicate: true };
      case StepState.REFUSED:
        return { result: Result.REFUSED, reason: r.reason, code: r.code, duplicate: true };
      case StepState.COMPENSATED_FIRST:
        return { result: Result.REFUSED, reason: Reason.COMPENSATED_FIRST, code: CODE_COMPENSATED_FIRST, duplicate: true };
    }
    if (st.attempt <= (r.failedAttempt || 0)) {
      return { result: Result.FAILED, reason: Reason.ATTEMPT_FAILED, duplicate: true };
    }
    const err = await this.call((o) => this.cfg.sagaHandler.action(st, payload, o));
    if (!err) {
      await this.persist(key, { ...r, step: StepState.DONE, reason: '', code: '', finishedAt: now });
      return { result: Result.ACK, applied: true };
    }
    if (err instanceof RefusedError) {
      const reason = P.truncate(err.reason || Reason.ACTION_FAILED, P.MAX_REASON_LEN);
      const code = P.validCode(err.code);
      await this.persist(key, { ...r, step: StepState.REFUSED, reason, code, finishedAt: now });
      return { result: Result.REFUSED, reason, code };
    }
    await this.persist(key, { ...r, failedAttempt: st.attempt, finishedAt: now });
    return { result: Result.FAILED, reason: errorText(err) || Reason.ACTION_FAILED, code: errorCode(err) };
  }

  /** @private Go sagaCompensate. */
  async sagaCompensate(key, st, payload, now) {
    const r = this.store.get(key) || {};
    switch (r.step || StepState.NONE) {
      case StepState.NONE:
        await this.persist(key, { ...r, step: StepState.COMPENSATED_FIRST, reason: '', code: '', finishedAt: now });
        return { result: Result.ACK, reason: 'null compensation: the action was never done' };
      case StepState.REFUSED:
        return { result: Result.ACK, reason: 'the action was refused: nothing to compensate' };
      case StepState.COMPENSATED:
      case StepState.COMPENSATED_FIRST:
        return { result: Result.ACK, duplicate: true };
    }
    const err = await this.call((o) => this.cfg.sagaHandler.compensate(st, payload, o));
    if (err) {
      let reason = errorText(err) || Reason.COMPENSATION_FAILED;
      if (err instanceof RefusedError) reason = Reason.COMPENSATION_REFUSED + (err.reason || Reason.COMPENSATION_FAILED);
      return { result: Result.FAILED, reason, code: P.validCode(errorCode(err)) };
    }
    await this.persist(key, { ...r, step: StepState.COMPENSATED, reason: '', code: '', finishedAt: now });
    return { result: Result.ACK, applied: true };
  }

  /**
   * A reply message a transport publishes after a batch.
   * @typedef {object} ReplyMessage
   * @property {string} subject
   * @property {Record<string,string[]>} header
   * @property {Buffer} body
   */

  /**
   * Processes a batch message: each command in it is handled by handle as
   * if it had come alone, each taking a slot from acquire (which resolves
   * to a release function, or to null when the transport is stopping); it
   * resolves once every started command is answered. Replies go out as one
   * message per run of answers to one reply subject, in the batch's order.
   * The message is acked when every answer says ack or term, delivered
   * again when any says nak, terminated when the batch cannot be read, is
   * not for this participant, or holds only malformed commands.
   * @param {Record<string,string[]>} h
   * @param {Uint8Array|null} body
   * @param {string} subject
   * @param {() => Promise<(() => void)|null>} acquire
   * @returns {Promise<{replies: ReplyMessage[], settle: string, stopped: boolean}>}
   */
  async handleBatch(h, body, subject, acquire) {
    let items;
    this.counters.batches++;
    try {
      items = decodeBatch(h, body);
      const to = P.first(h, P.Header.PARTICIPANT);
      if (to !== this.cfg.name) {
        throw new P.MalformedError(`a command batch for participant ${JSON.stringify(to ?? '')} reached participant ${JSON.stringify(this.cfg.name)}`);
      }
      if (subject && batchParticipant(subject) !== this.cfg.name) {
        throw new P.MalformedError(`a command batch for participant ${JSON.stringify(this.cfg.name)} arrived on subject ${JSON.stringify(subject)}`);
      }
    } catch (err) {
      this.counters.malformed++;
      this.log.warn('dropping malformed command batch', { subject, error: errorText(err) });
      return { replies: [], settle: Settle.TERM, stopped: false };
    }
    const answers = new Array(items.length);
    const running = [];
    let stopped = false;
    for (let i = 0; i < items.length; i++) {
      const release = await acquire();
      if (!release) {
        stopped = true;
        break;
      }
      const it = items[i];
      running.push(this.handle(it.header, it.body, '', (a) => { answers[i] = a; }).finally(release));
    }
    await Promise.all(running);
    if (stopped) return { replies: [], settle: Settle.TERM, stopped: true };
    let settle = Settle.TERM;
    const replies = [];
    let group = [];
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i];
      if (a.settle === Settle.NAK) settle = Settle.NAK;
      else if (a.settle === Settle.ACK && settle === Settle.TERM) settle = Settle.ACK;
      if (!a.replyTo) continue;
      group.push(a.reply);
      if (i + 1 < answers.length && answers[i + 1].replyTo === a.replyTo) continue;
      if (group.length === 1) {
        replies.push({ subject: a.replyTo, header: P.replyHeader(group[0]), body: P.replyBody(group[0]) });
      } else {
        const m = encodeReplyBatch(group);
        replies.push({ subject: a.replyTo, header: m.header, body: m.body });
      }
      group = [];
    }
    return { replies, settle, stopped: false };
  }

  /**
   * Asks, with ask, about every transaction in doubt for at least
   * cfg.inDoubtAfter (none when it is negative), in the order of their IDs,
   * and applies a commit or abort answer as if the command had arrived (the
   * same record and handler: a command that arrives after all is a
   * duplicate). A pending answer or an error leaves the transaction in
   * doubt; an answer that contradicts the record takes it out of the doubt
   * set with one error line (an operator must look). A transaction whose
   * outcome arrived while earlier questions waited is not asked about: once
   * a committed transaction's records expired, a coordinator presumes abort.
   * @param {(req: object, timeoutMs: number) => Promise<{outcome?: string, reason?: string}>} ask
   * @param {() => boolean} [stopped] ends the round early when it returns true
   * @returns {Promise<{asked: number, resolved: number}>}
   */
  async resolveInDoubt(ask, stopped = () => false) {
    let asked = 0;
    let resolved = 0;
    if (this.cfg.inDoubtAfter < 0 || !ask) return { asked, resolved };
    const timeout = Math.min(this.cfg.opTimeout, Math.max(this.cfg.inDoubtAfter, 1000));
    const now = this.now();
    const due = [...this.doubt.values()].filter((d) => now - d.since >= this.cfg.inDoubtAfter)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const d of due) {
      if (stopped()) break;
      if (!this.doubt.has(d.id)) continue; // decided while earlier questions waited
      const req = { id: d.id, participant: this.cfg.name, asked_at_ms: this.now() };
      if (d.deadline) req.deadline_ms = d.deadline;
      let resp;
      asked++;
      this.counters.inDoubtQueries++;
      try {
        resp = await ask(req, timeout);
      } catch (e) {
        this.log.warn('in doubt: asking the coordinators for the outcome failed; asking again later', { txid: d.id, error: errorText(e) });
        continue;
      }
      let op;
      if (resp.outcome === P.Outcome.COMMIT) op = Op.COMMIT;
      else if (resp.outcome === P.Outcome.ABORT) op = Op.ABORT;
      else {
        this.log.debug('in doubt: outcome still pending', { txid: d.id, reason: resp.reason });
        continue;
      }
      this.log.info('in doubt: applying the outcome the coordinator gave', { txid: d.id, op, reason: resp.reason });
      const cmd = { txid: d.id, op, participant: this.cfg.name, attempt: 1, replyTo: P.replySubject('in-doubt', this.cfg.name), deadline: null, step: '' };
      await this.handleCommand(P.commandHeader(cmd), null, '', true, (a) => {
        if (a.reply && a.reply.result === Result.ACK) {
          resolved++;
          this.counters.inDoubtResolved++;
        } else if (a.settle === Settle.TERM) {
          this.counters.inDoubtContradicted++;
          this.log.error('in doubt: the coordinators\' answer contradicts this participant\'s record; the transaction is no longer asked about and needs an operator', {
            txid: d.id, answer: resp.outcome, answer_reason: resp.reason, record: a.reply && a.reply.reason,
          });
        } else {
          this.log.warn('in doubt: applying the outcome failed; asking again later', { txid: d.id, result: a.reply && a.reply.result, reason: a.reply && a.reply.reason });
        }
      });
    }
    return { asked, resolved };
  }
}

/** @returns {string} the record key of a saga step ('/' is in no name) */
function sagaKey(sagaId, step) {
  return `${sagaId}/${step}`;
}

/** Whether a record may be forgotten once retention old (Go record.sweepable). */
function sweepable(r) {
  if (r.step === StepState.DONE) return false;
  return isFinished(r.state) || (r.step && r.step !== StepState.NONE) || (r.failedAttempt || 0) > 0;
}

/** The code a saga error carries (Go ErrorCode). */
function errorCode(err) {
  if (err instanceof RefusedError || err instanceof CodedError) return err.code;
  return '';
}

module.exports = { Processor, Settle, State, StepState, READ_ONLY, Defaults, silentLogger, withDefaults };
