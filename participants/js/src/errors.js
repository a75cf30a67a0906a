'use strict';
// Errors and the reasons the SDK answers with by itself, without the handler;
// the texts are those of the Go SDK (participants/errors.go, saga.go), so a
// coordinator's logs and `natstx tx status` read the same for either SDK.

/** Reasons of replies the SDK decides by itself. */
const Reason = Object.freeze({
  DEADLINE_PASSED: 'deadline passed',
  ABORTED_BEFORE_PREPARE: 'aborted before prepare arrived',
  ABORTED: 'aborted by the coordinator',
  PREPARE_FAILED: 'prepare failed',
  NO_RECORD: 'commit for a transaction this participant has no record of',
  COMMIT_AFTER_ABORT: 'commit after abort',
  ABORT_AFTER_COMMIT: 'abort after commit',
  COMMIT_OF_ONE_PHASE: 'commit of a one-phase transaction',
  ABORT_OF_ONE_PHASE: 'abort of a one-phase transaction',
  ONE_PHASE_OF_PREPARED: 'one-phase commit of a transaction prepared for two-phase commit',
  COMPENSATED_FIRST: 'compensated before the action arrived: the action is never done',
  ATTEMPT_FAILED: 'this attempt was answered failed already; a later attempt may do the action',
  ACTION_FAILED: 'action failed',
  COMPENSATION_FAILED: 'compensation failed',
  COMPENSATION_REFUSED: 'a compensation cannot be refused; answered failed, to be retried: ',
  NO_SAGA_HANDLER: 'this participant does not implement saga steps (no saga handler)',
  NO_TWO_PHASE_HANDLER: 'this participant does not implement two-phase commit (saga steps only)',
});

/** Code of a refusal because the compensation came first. */
const CODE_COMPENSATED_FIRST = 'compensated-first';

/** Error of a bad configuration; the message names the field. */
class InvalidConfigError extends Error {
  /** @param {string} detail */
  constructor(detail) {
    super(`natstx: invalid participant config: ${detail}`);
    this.name = 'InvalidConfigError';
  }
}

/** Error of start when the command stream did not appear in time. */
class StreamMissingError extends Error {
  /** @param {string} detail */
  constructor(detail) {
    super(`natstx: command stream missing: ${detail}`);
    this.name = 'StreamMissingError';
  }
}

/** Error of start on a participant stopped before or during it. */
class StoppedError extends Error {
  constructor() {
    super('natstx: participant runtime stopped');
    this.name = 'StoppedError';
  }
}

/** Error of start on a participant already started (it runs once). */
class StartedError extends Error {
  constructor() {
    super('natstx: participant runtime already started');
    this.name = 'StartedError';
  }
}

/**
 * A saga action's refusal for good (make one with refuse): the action is
 * never done, the saga compensates, a duplicate gets the same refusal.
 */
class RefusedError extends Error {
  /**
   * @param {string} code classifies the refusal ('' for none)
   * @param {string} reason the reply's reason
   */
  constructor(code, reason) {
    super(code ? `refused (${code}): ${reason}` : `refused: ${reason}`);
    this.name = 'RefusedError';
    this.code = code || '';
    this.reason = reason || '';
  }
}

/**
 * A saga failure "for now" with a code (make one with withCode): answered
 * failed with the code, which the step's retry policy may list as never
 * retried.
 */
class CodedError extends Error {
  /**
   * @param {string} code
   * @param {Error} err the failure; its message is the reply's reason
   */
  constructor(code, err) {
    super(err ? err.message : code, { cause: err });
    this.name = 'CodedError';
    this.code = code;
  }
}

/**
 * Returns the error a saga action throws to refuse the step for good.
 * @param {string} code e.g. "out-of-stock"; '' for none
 * @param {string} reason
 * @returns {RefusedError}
 */
function refuse(code, reason) {
  return new RefusedError(code, reason);
}

/**
 * Returns err with a code, or null for a null err.
 * @param {string} code
 * @param {Error|null} err
 * @returns {CodedError|null}
 */
function withCode(code, err) {
  return err ? new CodedError(code, err) : null;
}

/**
 * The text of a thrown value, as the reason of a reply.
 * @param {unknown} err
 * @returns {string}
 */
function errorText(err) {
  if (err instanceof Error) return err.message;
  if (err === undefined || err === null) return '';
  return String(err);
}

module.exports = {
  Reason, CODE_COMPENSATED_FIRST,
  InvalidConfigError, StreamMissingError, StoppedError, StartedError,
  RefusedError, CodedError, refuse, withCode, errorText,
};
