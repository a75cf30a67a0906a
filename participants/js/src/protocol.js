'use strict';
// The natstx wire protocol, version 6, as the Go package messages defines it
// (messages/protocol.go, messages/subjects.go): header names, operations,
// results, subjects, and the decoding and validation rules of commands and
// replies. Header names are case-sensitive and each appears at most once.

/**
 * Protocol version this SDK speaks; it travels in Natstx-Version, and a
 * message of another version is refused. Version 6 added the read-only vote
 * (Result.VOTE_READ_ONLY) and one-phase commit (Op.COMMIT_ONE_PHASE).
 */
const VERSION = 6;
const VERSION_TEXT = String(VERSION);

/** Header names (case-sensitive). */
const Header = Object.freeze({
  VERSION: 'Natstx-Version',
  TXID: 'Natstx-Txid',
  OP: 'Natstx-Op',
  PARTICIPANT: 'Natstx-Participant',
  DEADLINE: 'Natstx-Deadline',
  ATTEMPT: 'Natstx-Attempt',
  REPLY_TO: 'Natstx-Reply-To',
  RESULT: 'Natstx-Result',
  STEP: 'Natstx-Step',
  CODE: 'Natstx-Code',
  BATCH: 'Natstx-Batch',
  MSG_ID: 'Nats-Msg-Id',
});

/** Operations of commands. */
const Op = Object.freeze({
  PREPARE: 'prepare',
  COMMIT: 'commit',
  ABORT: 'abort',
  /**
   * since protocol 6, sent instead of prepare to the only participant of a
   * transaction: do the work and commit it at once. The participant decides
   * the outcome alone: it answers ack (committed), vote-abort (it will never
   * commit) or failed (not finished now; the command comes again), and is
   * sent neither commit nor abort. It carries the payload, as prepare does.
   */
  COMMIT_ONE_PHASE: 'commit-one-phase',
  ACTION: 'action',
  COMPENSATE: 'compensate',
});

/** Results of replies. */
const Result = Object.freeze({
  /** answers prepare: the participant can do its part and holds it until the outcome */
  VOTE_COMMIT: 'vote-commit',
  /**
   * answers prepare, or commit-one-phase: the participant cannot do its part
   * (it will never commit); the reason says why
   */
  VOTE_ABORT: 'vote-abort',
  /**
   * answers prepare (since protocol 6): the participant's part changed
   * nothing and holds nothing, so it needs neither commit nor abort; the
   * coordinator counts it as a commit vote and sends it no second phase.
   * Body empty.
   */
  VOTE_READ_ONLY: 'vote-read-only',
  /** done; to commit-one-phase: done and committed (or read-only: nothing to commit) */
  ACK: 'ack',
  FAILED: 'failed',
  REFUSED: 'refused',
});

/** Bounds of names (participants, transaction IDs, instances). */
const MAX_NAME_LEN = 128;
/** Bound of a reply's reason, in UTF-8 bytes. */
const MAX_REASON_LEN = 1024;
/** Bound of a reply's code. */
const MAX_CODE_LEN = 64;

const COMMAND_PREFIX = 'natstx.cmd';
const REPLY_PREFIX = 'natstx.reply';
/** The JetStream stream holding commands. */
const COMMAND_STREAM = 'NATSTX_CMD';
/** JetStream's own API prefix: natstx's streams in the account of the connection. */
const JETSTREAM_API = '$JS.API';
/**
 * Where an account without JetStream of its own reaches natstx's JetStream
 * API (Go messages.JetStreamAPIPrefix): the participants' account of a
 * secure deployment (`natstx auth init`: NATSTX_PARTICIPANTS) imports it
 * from the NATSTX account under this prefix, so that
 * `$JS.natstx.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-<name>` there is
 * `$JS.API.CONSUMER.MSG.NEXT.NATSTX_CMD.natstx-<name>` in NATSTX.
 * Acknowledgements keep their subjects (`$JS.ACK.NATSTX_CMD.>`). A client
 * knows to use it when the server answers the account-information request
 * (`$JS.API.INFO`) with JS_NOT_ENABLED_FOR_ACCOUNT; Participant.start asks
 * once, as the Go side does (messages/jsconnect).
 */
const JETSTREAM_API_PREFIX = '$JS.natstx.API';
/** JetStream's err_code of "JetStream not enabled for account". */
const JS_NOT_ENABLED_FOR_ACCOUNT = 10039;
/** Subject the coordinators answer in-doubt questions on. */
const API_OUTCOME = 'natstx.api.v1.outcome';
/** Queue group in which the instances of a participant answer audits. */
const AUDIT_QUEUE = 'natstx-audit';

/** Outcomes of an in-doubt answer. */
const Outcome = Object.freeze({ COMMIT: 'commit', ABORT: 'abort', PENDING: 'pending' });

/**
 * Error of a message that is not a well-formed natstx command or reply; its
 * message starts as the Go ErrMalformed's does.
 */
class MalformedError extends Error {
  /** @param {string} detail what is wrong */
  constructor(detail) {
    super(`natstx: malformed message: ${detail}`);
    this.name = 'MalformedError';
  }
}

/** Error of a message of another protocol version. */
class VersionError extends Error {
  /** @param {string} detail what is wrong */
  constructor(detail) {
    super(`natstx: unsupported protocol version: ${detail}`);
    this.name = 'VersionError';
  }
}

/** Error of a name that is empty, too long or has a character not allowed. */
class InvalidNameError extends Error {
  /** @param {string} detail what is wrong */
  constructor(detail) {
    super(`natstx: invalid name: ${detail}`);
    this.name = 'InvalidNameError';
  }
}

/** @param {string} o @returns {boolean} whether o is a two-phase commit operation (commit-one-phase included) */
function isTwoPhase(o) {
  return o === Op.PREPARE || o === Op.COMMIT || o === Op.ABORT || o === Op.COMMIT_ONE_PHASE;
}

/** @param {string} o @returns {boolean} whether o is a saga operation */
function isSaga(o) {
  return o === Op.ACTION || o === Op.COMPENSATE;
}

/** @param {string} r @returns {boolean} whether result r answers prepare: vote-commit, vote-abort or vote-read-only */
function isVote(r) {
  return r === Result.VOTE_COMMIT || r === Result.VOTE_ABORT || r === Result.VOTE_READ_ONLY;
}

/** @param {string} o @returns {boolean} whether a command of operation o may carry a payload: prepare, commit-one-phase, action and compensate */
function carriesPayload(o) {
  return o === Op.PREPARE || o === Op.COMMIT_ONE_PHASE || isSaga(o);
}

/**
 * @param {string} o
 * @returns {boolean} whether o asks a participant for its vote (Go Op.Votes):
 *   prepare and commit-one-phase, whose answer decides the transaction
 */
function votes(o) {
  return o === Op.PREPARE || o === Op.COMMIT_ONE_PHASE;
}

const NAME_RE = /^[A-Za-z0-9_-]*$/;

/**
 * Checks that s can be a participant name, transaction ID, instance name or
 * saga step: 1 to 128 characters from [A-Za-z0-9_-].
 * @param {string} what names the field in the error
 * @param {string} s
 * @throws {InvalidNameError}
 */
function validateName(what, s) {
  if (typeof s !== 'string' || s === '') {
    throw new InvalidNameError(`${what} is empty`);
  }
  const len = Buffer.byteLength(s);
  if (len > MAX_NAME_LEN) {
    throw new InvalidNameError(`${what} is ${len} bytes long, the limit is ${MAX_NAME_LEN}`);
  }
  if (!NAME_RE.test(s)) {
    const i = [...s].findIndex((c) => !NAME_RE.test(c));
    throw new InvalidNameError(
      `${what} ${JSON.stringify(s)} has ${JSON.stringify([...s][i])} at character ${i}; use only letters, digits, '-' and '_'`,
    );
  }
}

/**
 * Checks that s is a subject a reply can be published to: dot-separated
 * non-empty tokens, no wildcards, no white space or control characters.
 * @param {string} what
 * @param {string} s
 * @throws {MalformedError}
 */
function validateSubject(what, s) {
  if (s === '') throw new MalformedError(`${what} is empty`);
  const b = Buffer.from(s);
  if (b.length > 4 * MAX_NAME_LEN) throw new MalformedError(`${what} is ${b.length} bytes long`);
  let prev = 0x2e;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c === 0x2e && prev === 0x2e) throw new MalformedError(`${what} ${JSON.stringify(s)} has an empty token`);
    if (c === 0x2a || c === 0x3e || c <= 0x20 || c === 0x7f) {
      throw new MalformedError(`${what} ${JSON.stringify(s)} has byte ${c} at byte ${i}`);
    }
    prev = c;
  }
  if (prev === 0x2e) throw new MalformedError(`${what} ${JSON.stringify(s)} ends with '.'`);
}

/** @returns {string} the subject of participant's commands about txid */
function commandSubject(participant, txid) {
  return `${COMMAND_PREFIX}.${participant}.${txid}`;
}

/** @returns {string} the filter of every command for participant */
function participantFilter(participant) {
  return `${COMMAND_PREFIX}.${participant}.>`;
}

/** @returns {string} the reply subject of participant towards coordinator instance */
function replySubject(instance, participant) {
  return `${REPLY_PREFIX}.${instance}.${participant}`;
}

/** @returns {string} the durable consumer shared by every instance of participant */
function consumerName(participant) {
  return `natstx-${participant}`;
}

/** @returns {string} the subject participant answers audit requests on */
function auditSubject(participant) {
  return `natstx.audit.${participant}`;
}

/** @returns {string} the Nats-Msg-Id of a command (see Go messages.MsgID) */
function msgID(txid, op, participant, attempt) {
  return `${txid}.${op}.${participant}.${attempt}`;
}

// Go's strconv.Atoi / ParseInt(s, 10, 64): an optional sign and decimal
// digits, within 64 bits.
const INT_RE = /^[+-]?[0-9]+$/;
function parseInt64(s) {
  if (!INT_RE.test(s)) return null;
  const v = BigInt(s);
  if (v > 9223372036854775807n || v < -9223372036854775808n) return null;
  return v;
}

/**
 * Returns the one value of header name in h (a record of arrays of values,
 * keys exactly as on the wire): undefined when absent and optional.
 * @param {Record<string,string[]>} h
 * @param {string} name
 * @param {boolean} optional
 * @returns {string|undefined}
 */
function single(h, name, optional) {
  const vs = Object.prototype.hasOwnProperty.call(h, name) ? h[name] : undefined;
  if (!vs || vs.length === 0) {
    if (optional) return undefined;
    throw new MalformedError(`header ${name} is missing`);
  }
  if (vs.length > 1) throw new MalformedError(`header ${name} appears ${vs.length} times`);
  return vs[0];
}

/** @returns {string|undefined} the first value of header name, if any */
function first(h, name) {
  const vs = Object.prototype.hasOwnProperty.call(h, name) ? h[name] : undefined;
  return vs && vs.length > 0 ? vs[0] : undefined;
}

/**
 * Checks the Natstx-Version header: present once, and VERSION ("6").
 * @param {Record<string,string[]>} h
 */
function checkVersion(h) {
  const v = single(h, Header.VERSION, false);
  if (v !== VERSION_TEXT) {
    throw new VersionError(`${Header.VERSION} is ${JSON.stringify(v)}, this build speaks ${VERSION}`);
  }
}

function validateStep(op, step) {
  if (isSaga(op)) {
    try {
      validateName('saga step', step);
    } catch (e) {
      throw new MalformedError(`${op}: ${e.message}`);
    }
  } else if (step) {
    throw new MalformedError(`${op} carries header ${Header.STEP}; only saga operations do`);
  }
}

/**
 * A command: what a coordinator asks one participant to do for one
 * transaction.
 * @typedef {object} Command
 * @property {string} txid
 * @property {string} op
 * @property {string} participant
 * @property {number|null} deadline Unix milliseconds, null for none
 * @property {number} attempt from 1
 * @property {string} replyTo
 * @property {Buffer|null} payload
 * @property {string} step saga step, '' for two-phase commit
 */

/**
 * Validates every field of a command (Go Command.Validate).
 * @param {Command} c
 */
function validateCommand(c) {
  validateName('transaction ID', c.txid);
  validateName('participant', c.participant);
  if (!isTwoPhase(c.op) && !isSaga(c.op)) throw new MalformedError(`unknown operation ${JSON.stringify(c.op)}`);
  if (!(c.attempt >= 1)) throw new MalformedError(`attempt ${c.attempt} is below 1`);
  validateSubject('reply subject', c.replyTo);
  if (c.deadline !== null && c.deadline <= 0) throw new MalformedError(`deadline ${c.deadline} is not after 1970-01-01`);
  if (!carriesPayload(c.op) && c.payload && c.payload.length > 0) {
    throw new MalformedError(`${c.op} carries a payload; only prepare, commit-one-phase, action and compensate do`);
  }
  validateStep(c.op, c.step);
}

/**
 * Decodes and validates a command from its headers and body (Go
 * messages.DecodeCommand).
 * @param {Record<string,string[]>} h headers, names exactly as on the wire
 * @param {Uint8Array|null} body
 * @returns {Command}
 */
function decodeCommand(h, body) {
  checkVersion(h);
  const txid = single(h, Header.TXID, false);
  const op = single(h, Header.OP, false);
  const participant = single(h, Header.PARTICIPANT, false);
  const attemptText = single(h, Header.ATTEMPT, false);
  const replyTo = single(h, Header.REPLY_TO, false);
  const deadlineText = single(h, Header.DEADLINE, true) ?? '';
  const step = single(h, Header.STEP, true) ?? '';
  const attempt = parseInt64(attemptText);
  if (attempt === null) throw new MalformedError(`${Header.ATTEMPT} ${JSON.stringify(attemptText)} is not a number`);
  let deadline = null;
  if (deadlineText !== '') {
    const ms = parseInt64(deadlineText);
    if (ms === null || ms <= 0n) {
      throw new MalformedError(`${Header.DEADLINE} ${JSON.stringify(deadlineText)} is not a positive Unix time in milliseconds`);
    }
    deadline = Number(ms);
  }
  const c = {
    txid, op, participant, attempt: Number(attempt), replyTo, deadline, step,
    payload: body && body.length > 0 ? Buffer.from(body) : null,
  };
  validateCommand(c);
  return c;
}

/**
 * Headers of a command, all but its payload (Go Command.Header).
 * @param {Command} c
 * @returns {Record<string,string[]>}
 */
function commandHeader(c) {
  const h = {
    [Header.VERSION]: [VERSION_TEXT],
    [Header.TXID]: [c.txid],
    [Header.OP]: [c.op],
    [Header.PARTICIPANT]: [c.participant],
    [Header.ATTEMPT]: [String(c.attempt)],
    [Header.REPLY_TO]: [c.replyTo],
    [Header.MSG_ID]: [msgID(c.txid, c.op, c.participant, c.attempt) + (c.step ? `.${c.step}` : '')],
  };
  if (c.deadline) h[Header.DEADLINE] = [String(c.deadline)];
  if (c.step) h[Header.STEP] = [c.step];
  return h;
}

/**
 * A reply: a participant's answer to one command.
 * @typedef {object} Reply
 * @property {string} txid
 * @property {string} op
 * @property {string} participant
 * @property {string} result
 * @property {number} attempt
 * @property {string} [reason]
 * @property {string} [step]
 * @property {string} [code]
 */

/**
 * Headers of a reply (Go Reply.Header); its reason travels in the body.
 * @param {Reply} r
 * @returns {Record<string,string[]>}
 */
function replyHeader(r) {
  const h = {
    [Header.VERSION]: [VERSION_TEXT],
    [Header.TXID]: [r.txid],
    [Header.OP]: [r.op],
    [Header.PARTICIPANT]: [r.participant],
    [Header.RESULT]: [r.result],
    [Header.ATTEMPT]: [String(r.attempt)],
  };
  if (r.step) h[Header.STEP] = [r.step];
  if (r.code) h[Header.CODE] = [r.code];
  return h;
}

/**
 * Body of a reply: its reason, cut to MAX_REASON_LEN bytes.
 * @param {Reply} r
 * @returns {Buffer}
 */
function replyBody(r) {
  return Buffer.from(truncate(r.reason || '', MAX_REASON_LEN));
}

/**
 * Validates every field of a reply (Go Reply.Validate): names, operation,
 * result, the result fitting the operation (prepare is answered with a vote,
 * vote-commit, vote-abort or vote-read-only; commit-one-phase with ack,
 * vote-abort or failed; no other operation with a vote; only an action is
 * refused), step, code, attempt and reason.
 * @param {Reply} r
 * @throws {MalformedError|InvalidNameError}
 */
function validateReply(r) {
  validateName('transaction ID', r.txid);
  validateName('participant', r.participant);
  if (!isTwoPhase(r.op) && !isSaga(r.op)) throw new MalformedError(`unknown operation ${JSON.stringify(r.op)}`);
  if (!Object.values(Result).includes(r.result)) throw new MalformedError(`unknown result ${JSON.stringify(r.result)}`);
  if (r.op === Op.PREPARE && (r.result === Result.ACK || r.result === Result.REFUSED)) {
    throw new MalformedError(`prepare is answered with a vote, not ${JSON.stringify(r.result)}`);
  }
  if (r.op === Op.COMMIT_ONE_PHASE) {
    if (r.result === Result.VOTE_COMMIT || r.result === Result.VOTE_READ_ONLY || r.result === Result.REFUSED) {
      throw new MalformedError(`commit-one-phase is answered with ack, vote-abort or failed, not ${JSON.stringify(r.result)}`);
    }
  } else if (r.op !== Op.PREPARE && isVote(r.result)) {
    throw new MalformedError(`${r.op} is answered with an ack, not ${JSON.stringify(r.result)}`);
  } else if (r.result === Result.REFUSED && r.op !== Op.ACTION) {
    throw new MalformedError(`only an action can be refused, not ${r.op}`);
  }
  validateStep(r.op, r.step || '');
  if (r.code) {
    const len = Buffer.byteLength(r.code);
    if (len > MAX_CODE_LEN) throw new MalformedError(`${Header.CODE} is ${len} bytes long, the limit is ${MAX_CODE_LEN}`);
    try {
      validateName(Header.CODE, r.code);
    } catch (e) {
      throw new MalformedError(e.message);
    }
  }
  if (!(r.attempt >= 1)) throw new MalformedError(`attempt ${r.attempt} is below 1`);
  const reasonLen = Buffer.byteLength(r.reason || '');
  if (reasonLen > MAX_REASON_LEN) throw new MalformedError(`reason is ${reasonLen} bytes long, the limit is ${MAX_REASON_LEN}`);
}

/**
 * Decodes and validates a reply from its headers and body (Go
 * messages.DecodeReply, validateReply included); for tests and tools.
 * @param {Record<string,string[]>} h
 * @param {Uint8Array|null} body
 * @returns {Reply}
 */
function decodeReply(h, body) {
  checkVersion(h);
  const r = {
    txid: single(h, Header.TXID, false),
    op: single(h, Header.OP, false),
    participant: single(h, Header.PARTICIPANT, false),
    result: single(h, Header.RESULT, false),
    attempt: 0,
    step: single(h, Header.STEP, true) ?? '',
    code: single(h, Header.CODE, true) ?? '',
    reason: body ? Buffer.from(body).toString('utf8') : '',
  };
  const a = single(h, Header.ATTEMPT, false);
  const n = parseInt64(a);
  if (n === null || n < 1n) throw new MalformedError(`${Header.ATTEMPT} ${JSON.stringify(a)} is not a positive number`);
  r.attempt = Number(n);
  validateReply(r);
  return r;
}

/**
 * Cuts s to at most n UTF-8 bytes without splitting a character.
 * @param {string} s
 * @param {number} n
 * @returns {string}
 */
function truncate(s, n) {
  if (n <= 0) return '';
  const b = Buffer.from(s);
  if (b.length <= n) return s;
  let i = n;
  while (i > 0 && (b[i] & 0xc0) === 0x80) i--;
  return b.subarray(0, i).toString('utf8');
}

/**
 * Returns code if a reply may carry it, else '' (Go validCode).
 * @param {string} code
 * @returns {string}
 */
function validCode(code) {
  if (!code || Buffer.byteLength(code) > MAX_CODE_LEN) return '';
  try {
    validateName('code', code);
  } catch {
    return '';
  }
  return code;
}

module.exports = {
  VERSION, Header, Op, Result, Outcome,
  MAX_NAME_LEN, MAX_REASON_LEN, MAX_CODE_LEN,
  COMMAND_PREFIX, REPLY_PREFIX, COMMAND_STREAM, API_OUTCOME, AUDIT_QUEUE,
  JETSTREAM_API, JETSTREAM_API_PREFIX, JS_NOT_ENABLED_FOR_ACCOUNT,
  MalformedError, VersionError, InvalidNameError,
  isTwoPhase, isSaga, isVote, votes, carriesPayload,
  validateName, validateSubject, validateCommand, validateReply,
  commandSubject, participantFilter, replySubject, consumerName, auditSubject, msgID,
  single, first, checkVersion, decodeCommand, commandHeader,
  replyHeader, replyBody, decodeReply, truncate, validCode,
};
