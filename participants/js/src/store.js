'use strict';
// The durable idempotency record of a JavaScript participant: a journal file
// of JSON lines, one per change of one record, each made durable (written
// and fsynced) before the reply it justifies is published. Changes queued
// while a sync runs are written and synced together (group commit). At open
// the journal is replayed (the last line of a key wins) and rewritten with
// only the live records; a line torn by a crash at the end of the file is
// dropped (its reply was never sent, so the command comes again).
//
// One process owns a journal file at a time: instances of one participant
// that share the work each keep their own file (see docs/PARTICIPANTS.md).

const fs = require('node:fs');
const fsp = require('node:fs/promises');
const path = require('node:path');

/**
 * A record: what the participant knows about one transaction (key: its ID)
 * or one saga step (key: "<saga ID>/<step>").
 * @typedef {object} StoredRecord
 * @property {string} [state] none, prepared, committed, aborted or read-only
 * @property {boolean} [onePhase] with state prepared: prepared by
 *   commit-one-phase, its commit not done yet (never in doubt; the command
 *   delivered again calls commit)
 * @property {string} [reason] the abort or refusal reason a duplicate is answered with
 * @property {number} [finishedAt] Unix ms when the record became final
 * @property {number} [deadline] the transaction's deadline from prepare, Unix ms
 * @property {string} [step] a saga step's state
 * @property {string} [code] a refusal's code
 * @property {number} [failedAttempt] highest action attempt answered failed
 */

/**
 * FileStore is a durable map from key to record, kept in a journal file and
 * in memory. Create it with FileStore.open.
 */
class FileStore {
  /** @private */
  constructor(file, fh, records) {
    this.file = file;
    this.fh = fh;
    /** @type {Map<string, StoredRecord>} */
    this.records = records;
    this.garbage = 0; // journal lines that no longer carry a live record
    this.queue = [];
    this.flushing = null;
    this.closed = false;
  }

  /**
   * Opens (creating if needed) the journal at file, replays it, and rewrites
   * it compactly.
   * @param {string} file
   * @returns {Promise<FileStore>}
   */
  static async open(file) {
    await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
    const records = new Map();
    let text = '';
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    const lines = text.split('\n');
    // A complete line ends with '\n': the last element is '' or a torn line.
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (line === '') continue;
      let entry;
      try {
        entry = JSON.parse(line);
      } catch (e) {
        if (i === lines.length - 1) break; // torn by a crash mid-write: never acknowledged
        throw new Error(`natstx: record journal ${file}: line ${i + 1} is not JSON (${e.message}); the file is damaged`);
      }
      if (entry.del) records.delete(entry.k);
      else records.set(entry.k, entry.v);
    }
    await writeCompact(file, records);
    const fh = await fsp.open(file, 'a');
    return new FileStore(file, fh, records);
  }

  /**
   * @param {string} key
   * @returns {StoredRecord|undefined} the record of key, if any
   */
  get(key) {
    return this.records.get(key);
  }

  /** @returns {number} how many records are held */
  get size() {
    return this.records.size;
  }

  /** @returns {IterableIterator<[string, StoredRecord]>} every record */
  entries() {
    return this.records.entries();
  }

  /**
   * Makes key's record durable; the in-memory map changes only once it is.
   * @param {string} key
   * @param {StoredRecord} rec
   * @returns {Promise<void>}
   */
  put(key, rec) {
    return this.enqueue({ k: key, v: rec }, () => {
      if (this.records.has(key)) this.garbage++;
      this.records.set(key, rec);
    });
  }

  /**
   * Forgets key's record durably.
   * @param {string} key
   * @returns {Promise<void>}
   */
  delete(key) {
    return this.enqueue({ k: key, del: true }, () => {
      if (this.records.delete(key)) this.garbage += 2;
    });
  }

  /**
   * Rewrites the journal with only the live records when it holds more dead
   * lines than live ones (and at least min of them).
   * @param {number} [min]
   * @returns {Promise<boolean>} whether it rewrote the journal
   */
  async compactIfWorth(min = 1000) {
    if (this.garbage < min || this.garbage < this.records.size) return false;
    await this.enqueue(null, null, true);
    return true;
  }

  /** @private */
  enqueue(entry, apply, compact = false) {
    if (this.closed) return Promise.reject(new Error('natstx: record store closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ entry, apply, compact, resolve, reject });
      if (!this.flushing) this.flushing = this.flush();
    });
  }

  /** @private */
  async flush() {
    try {
      while (this.queue.length > 0) {
        const idx = this.queue.findIndex((q) => q.compact);
        const batch = this.queue.splice(0, idx === 0 ? 1 : idx < 0 ? this.queue.length : idx);
        if (batch[0].compact) {
          try {
            await this.fh.close();
            await writeCompact(this.file, this.records);
            this.fh = await fsp.open(this.file, 'a');
            this.garbage = 0;
            batch[0].resolve();
          } catch (e) {
            batch[0].reject(e);
          }
          continue;
        }
        try {
          const text = batch.map((q) => JSON.stringify(q.entry) + '\n').join('');
          await this.fh.appendFile(text, 'utf8');
          await this.fh.datasync();
        } catch (e) {
          for (const q of batch) q.reject(e);
          continue;
        }
        for (const q of batch) {
          q.apply();
          q.resolve();
        }
      }
    } finally {
      this.flushing = null;
    }
  }

  /**
   * Waits for pending writes and closes the journal.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.closed) return;
    if (this.flushing) await this.flushing;
    this.closed = true;
    await this.fh.close();
  }
}

/** Writes records to file atomically: a temporary file, fsync, rename, fsync of the directory. */
async function writeCompact(file, records) {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w');
  try {
    let chunk = '';
    for (const [k, v] of records) {
      chunk += JSON.stringify({ k, v }) + '\n';
      if (chunk.length > 1 << 20) {
        await fh.writeFile(chunk, 'utf8');
        chunk = '';
      }
    }
    if (chunk) await fh.writeFile(chunk, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  const dir = fs.openSync(path.dirname(path.resolve(file)), 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
}

module.exports = { FileStore };
