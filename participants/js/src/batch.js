'use strict';
// Batches of commands and of replies (protocol 4, Go messages/batch.go). A
// batch message carries Natstx-Version, Natstx-Batch (the item count) and,
// for commands, Natstx-Participant; its body is the items one after another,
// each framed as
//
//   <header bytes> <body bytes>\r\n<header lines><body>
//
// with header lines "Name: value\r\n", one per value, names sorted. Each
// item is handled exactly as if it had come alone.

const {
  Header, VERSION, COMMAND_PREFIX, MalformedError, checkVersion, single, replyHeader, replyBody, commandHeader,
} = require('./protocol');

/** Most items one batch may hold. */
const MAX_BATCH = 256;

const CRLF = Buffer.from('\r\n');

/**
 * @param {Record<string,string[]>} h
 * @returns {boolean} whether a message with headers h is a batch
 */
function isBatch(h) {
  return Object.prototype.hasOwnProperty.call(h, Header.BATCH) && h[Header.BATCH].length > 0;
}

/**
 * A batch item: the headers and body it would carry alone.
 * @typedef {object} BatchItem
 * @property {Record<string,string[]>} header
 * @property {Buffer|null} body
 */

/**
 * Decodes a batch message's items; checks the version, the count and the
 * framing, not the items (Go messages.DecodeBatch).
 * @param {Record<string,string[]>} h
 * @param {Uint8Array|null} body
 * @returns {BatchItem[]}
 */
function decodeBatch(h, body) {
  checkVersion(h);
  const count = single(h, Header.BATCH, false);
  const n = /^[+-]?[0-9]+$/.test(count) ? Number(count) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_BATCH) {
    throw new MalformedError(`${Header.BATCH} ${JSON.stringify(count)} is not a count from 1 to ${MAX_BATCH}`);
  }
  let rest = body ? Buffer.from(body) : Buffer.alloc(0);
  const items = [];
  for (let i = 0; i < n; i++) {
    try {
      const [it, r] = decodeItem(rest);
      items.push(it);
      rest = r;
    } catch (e) {
      throw new MalformedError(`batch item ${i + 1} of ${n}: ${e.message}`);
    }
  }
  if (rest.length > 0) {
    throw new MalformedError(`${rest.length} bytes after the ${n} items ${Header.BATCH} announces`);
  }
  return items;
}

function decodeItem(b) {
  const nl = b.indexOf(CRLF);
  if (nl < 0) throw new Error('no framing line');
  const line = b.subarray(0, nl).toString('latin1');
  const rest = b.subarray(nl + 2);
  const sp = line.indexOf(' ');
  const hs = sp < 0 ? line : line.slice(0, sp);
  const bs = sp < 0 ? '' : line.slice(sp + 1);
  const num = /^[+-]?[0-9]+$/;
  const hl = num.test(hs) ? Number(hs) : NaN;
  const bl = num.test(bs) ? Number(bs) : NaN;
  if (sp < 0 || !Number.isSafeInteger(hl) || !Number.isSafeInteger(bl) || hl < 0 || bl < 0 || hl > rest.length || bl > rest.length - hl) {
    throw new Error(`framing line ${JSON.stringify(line)} is not two lengths within the ${rest.length} bytes left`);
  }
  const header = {};
  let head = rest.subarray(0, hl);
  while (head.length > 0) {
    const e = head.indexOf(CRLF);
    if (e < 0) throw new Error('a header line does not end with CRLF');
    const l = head.subarray(0, e).toString('utf8');
    head = head.subarray(e + 2);
    const c = l.indexOf(': ');
    if (c <= 0) throw new Error(`header line ${JSON.stringify(l)} is not "Name: value"`);
    const name = l.slice(0, c);
    (header[name] ||= []).push(l.slice(c + 2));
  }
  const item = { header, body: bl > 0 ? Buffer.from(rest.subarray(hl, hl + bl)) : null };
  return [item, rest.subarray(hl + bl)];
}

function encodeBatch(items, h) {
  if (items.length === 0 || items.length > MAX_BATCH) {
    throw new MalformedError(`a batch holds 1 to ${MAX_BATCH} items, not ${items.length}`);
  }
  const parts = [];
  for (const it of items) {
    let head = '';
    for (const name of Object.keys(it.header).sort()) {
      for (const v of it.header[name]) {
        if (/[:\r\n]/.test(name) || /[\r\n]/.test(v)) {
          throw new MalformedError(`header ${JSON.stringify(name)} of a batch item holds a line break or colon`);
        }
        head += `${name}: ${v}\r\n`;
      }
    }
    const hb = Buffer.from(head);
    const bb = it.body ? Buffer.from(it.body) : Buffer.alloc(0);
    parts.push(Buffer.from(`${hb.length} ${bb.length}\r\n`), hb, bb);
  }
  h[Header.VERSION] = [String(VERSION)];
  h[Header.BATCH] = [String(items.length)];
  return { header: h, body: Buffer.concat(parts) };
}

/**
 * Encodes replies as one reply batch message (Go messages.EncodeReplyBatch).
 * @param {import('./protocol').Reply[]} replies
 * @returns {{header: Record<string,string[]>, body: Buffer}}
 */
function encodeReplyBatch(replies) {
  return encodeBatch(replies.map((r) => ({ header: replyHeader(r), body: replyBody(r) })), {});
}

/**
 * Encodes commands, all for participant, as one batch message (Go
 * messages.EncodeCommandBatch); the coordinator does this, tests use it.
 * @param {string} participant
 * @param {string} id the batch message's Nats-Msg-Id
 * @param {import('./protocol').Command[]} cmds
 * @returns {{header: Record<string,string[]>, body: Buffer}}
 */
function encodeCommandBatch(participant, id, cmds) {
  const items = cmds.map((c) => {
    if (c.participant !== participant) {
      throw new MalformedError(`a batch for ${JSON.stringify(participant)} holds a command for ${JSON.stringify(c.participant)}`);
    }
    const h = commandHeader(c);
    delete h[Header.MSG_ID];
    return { header: h, body: c.payload };
  });
  return encodeBatch(items, { [Header.PARTICIPANT]: [participant], [Header.MSG_ID]: [id] });
}

/**
 * @param {string} participant
 * @param {string} id tells batches apart
 * @returns {string} the subject of a command batch for participant
 */
function batchSubject(participant, id) {
  return `${COMMAND_PREFIX}.${participant}.batch.${id}`;
}

/**
 * The participant a command batch's subject names (Go
 * messages.BatchParticipant), or null when subject is not of that form.
 * @param {string} subject
 * @returns {string|null}
 */
function batchParticipant(subject) {
  const prefix = `${COMMAND_PREFIX}.`;
  if (!subject.startsWith(prefix)) return null;
  const rest = subject.slice(prefix.length);
  const i = rest.indexOf('.batch.');
  if (i < 0) return null;
  const participant = rest.slice(0, i);
  const id = rest.slice(i + '.batch.'.length);
  if (participant === '' || id === '' || participant.includes('.') || id.includes('.')) return null;
  return participant;
}

module.exports = {
  MAX_BATCH, isBatch, decodeBatch, encodeReplyBatch, encodeCommandBatch, batchSubject, batchParticipant,
};
