'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { FileStore } = require('../src');
const { tempDir } = require('./helpers');

test('records are durable, replayed last-wins, compacted, and a damaged middle line is an error', async () => {
  const f = path.join(tempDir(), 'sub', 'rec.jsonl');
  const s = await FileStore.open(f);
  await Promise.all([s.put('a', { state: 'prepared' }), s.put('b', { state: 'prepared' }), s.put('c', { state: 'aborted' })]);
  await s.put('a', { state: 'committed' });
  await s.delete('c');
  assert.equal(fs.readFileSync(f, 'utf8').trim().split('\n').length, 5);
  assert.equal(await s.compactIfWorth(1), true);
  assert.equal(fs.readFileSync(f, 'utf8').trim().split('\n').length, 2);
  await s.put('d', { state: 'aborted' });
  await s.close();
  await assert.rejects(s.put('e', {}), /closed/);

  const again = await FileStore.open(f);
  assert.deepEqual([...again.entries()], [['a', { state: 'committed' }], ['b', { state: 'prepared' }], ['d', { state: 'aborted' }]]);
  await again.close();

  fs.writeFileSync(f, '{"k":"a","v":{}}\n{oops\n{"k":"b","v":{}}\n');
  await assert.rejects(FileStore.open(f), /line 2 is not JSON/);
});
