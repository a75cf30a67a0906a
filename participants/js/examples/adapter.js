'use strict';
// The one adapter between the seed's Service class (service.js, unchanged)
// and the natstx participant SDK's Handler shape.
//
// What the seed's class cannot guarantee on its own, and who makes up for it:
//
// - It has a single staging area and a single `committed` flag per instance:
//   two transactions prepared at once overwrite each other's staged data,
//   and once one has committed, a later commit on the same instance commits
//   nothing. The adapter therefore keys state by transaction ID: one Service
//   instance per transaction, created at prepare and dropped at its outcome.
// - It keys nothing by transaction ID, so it is not idempotent across
//   transactions or against a repeated prepare: the SDK's durable record
//   answers duplicates (a duplicate prepare gets the same vote without the
//   handler; commit and abort apply once), so each method runs at most once
//   successfully per transaction in one process.
// - Its staged and committed data live in memory: a crash loses them. The
//   SDK's record survives (votes, outcomes, audit answers stay right), but
//   after a restart a commit for a transaction prepared before finds no
//   staged data here: the adapter logs it and acknowledges, and counts it in
//   `lost`. A real service keeps its staged data durably (e.g. in the
//   database the Go Barrier writes its record into).
// - Its commit and abort fail at random (successRate) even after a vote to
//   commit, which a real participant must not do for a business reason:
//   the SDK retries a failed commit or abort (NAK, redelivery after the
//   retry delay) until it succeeds, on the same Service instance, whose
//   staging area a failed attempt leaves intact.
// - It ignores cancellation: the SDK's `signal` (opTimeout) cannot stop it;
//   its latency (0-100 ms) is far below the default opTimeout (10 s).
// - It knows nothing of saga steps. The adapter makes a saga action a
//   local transaction of one Service instance (prepare, then commit, keyed
//   by saga and step), and its compensation the removal of what that action
//   committed. A Service failure fails the action's attempt (the
//   coordinator retries it with a new attempt, on a new instance: nothing of
//   the failed one is kept); a payload that is not JSON refuses it for good.
//   Compensations cannot fail here; one whose action's data a restart lost
//   is acknowledged and counted in `lost`, like such a commit.

const { Service } = require('./service');
const { refuse } = require('../src');

/**
 * ServiceAdapter adapts the seed's Service class to the SDK's Handler,
 * prepare(tx, payload), commit(tx), abort(tx), and to its saga handler,
 * action(step, payload), compensate(step, payload).
 */
class ServiceAdapter {
  /**
   * @param {string} name the name each Service instance gets
   * @param {number} successRate probability that one Service call succeeds
   * @param {{info: Function, warn: Function}} [log]
   */
  constructor(name, successRate = 1, log = console) {
    this.name = name;
    this.successRate = successRate;
    this.log = log;
    /** @type {Map<string, Service>} the Service instance of each prepared transaction */
    this.staged = new Map();
    /** @type {Map<string, object>} committed data by transaction ID (this process only) */
    this.committed = new Map();
    /** commits of transactions (and compensations of saga steps) whose data a restart lost */
    this.lost = 0;
    /** @type {Map<string, object>} data committed by saga actions, by "<saga>/<step>" (this process only) */
    this.actions = new Map();
  }

  /**
   * Parses a payload: JSON (an object; empty means {}).
   * @param {Buffer|null} payload
   */
  static data(payload) {
    return payload && payload.length > 0 ? JSON.parse(payload.toString('utf8')) : {};
  }

  /**
   * Stages the transaction's data: the payload, JSON (an object; empty means
   * {}). Resolves to vote commit; throws to vote abort.
   * @param {{id: string}} tx
   * @param {Buffer|null} payload
   */
  async prepare(tx, payload) {
    const data = ServiceAdapter.data(payload); // a bad payload votes abort, with the parse error as the reason
    const svc = new Service(this.name, this.successRate);
    await svc.prepare(tx.id, data);
    this.staged.set(tx.id, svc);
  }

  /**
   * Commits the staged data; throws to have the commit retried.
   * @param {{id: string}} tx
   */
  async commit(tx) {
    const svc = this.staged.get(tx.id);
    if (!svc) {
      this.lost++;
      this.log.warn(`${this.name}: commit of ${tx.id}: no staged data in this process (prepared before a restart; the seed's Service keeps it in memory only)`);
      return;
    }
    await svc.commit(tx.id);
    this.committed.set(tx.id, svc.data);
    this.staged.delete(tx.id);
  }

  /**
   * Discards the staged data; throws to have the abort retried.
   * @param {{id: string}} tx
   */
  async abort(tx) {
    const svc = this.staged.get(tx.id);
    if (!svc) return; // nothing staged in this process
    await svc.abort(tx.id);
    this.staged.delete(tx.id);
  }

  /**
   * Does a saga step's action: one Service instance prepares and commits
   * the payload (JSON; empty means {}). Resolves when done; throws to fail
   * this attempt (the coordinator retries); refuses for good a payload that
   * is not JSON.
   * @param {{sagaId: string, name: string}} step
   * @param {Buffer|null} payload
   */
  async action(step, payload) {
    const key = `${step.sagaId}/${step.name}`;
    let data;
    try {
      data = ServiceAdapter.data(payload);
    } catch (e) {
      throw refuse('bad-payload', `the action's payload is not JSON: ${e.message}`);
    }
    const svc = new Service(this.name, this.successRate);
    await svc.prepare(key, data);
    await svc.commit(key);
    this.actions.set(key, svc.data);
  }

  /**
   * Compensates a saga step's action: drops what it committed.
   * @param {{sagaId: string, name: string}} step
   */
  async compensate(step) {
    const key = `${step.sagaId}/${step.name}`;
    if (!this.actions.delete(key)) {
      this.lost++;
      this.log.warn(`${this.name}: compensation of ${key}: no data of its action in this process (done before a restart; the seed's Service keeps it in memory only)`);
    }
  }
}

module.exports = { ServiceAdapter };
