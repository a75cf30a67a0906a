'use strict';
// The example participant's fault injection (NATSTX_CRASH_AT), without NATS.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { crashAt } = require('../examples/participant');

test('NATSTX_CRASH_AT accepts after-commit-one-phase-apply:N and refuses an unknown op', () => {
  assert.equal(crashAt(undefined), undefined);
  assert.equal(typeof crashAt('after-commit-one-phase-apply:2'), 'function');
  assert.equal(typeof crashAt('after-commit-apply:1'), 'function');
  assert.throws(() => crashAt('after-one-phase-apply:1'), /want .*after-commit-one-phase-apply:N/);
  assert.throws(() => crashAt('after-commit-one-phase-apply:0'), /N >= 1/);
});

test('NATSTX_CRASH_AT=after-commit-one-phase-apply:2 kills the process at the second commit-one-phase applied, not at other ops', () => {
  const example = path.join(__dirname, '..', 'examples', 'participant.js');
  const script = `
    const { crashAt } = require(${JSON.stringify(example)});
    const hook = crashAt('after-commit-one-phase-apply:2');
    (async () => {
      await hook({ op: 'commit-one-phase', txid: 'a' });
      await hook({ op: 'commit', txid: 'b' });
      await hook({ op: 'prepare', txid: 'c' });
      process.stdout.write('alive\\n');
      await hook({ op: 'commit-one-phase', txid: 'd' });
      process.stdout.write('not killed\\n');
    })();`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(res.signal, 'SIGKILL', res.stderr);
  assert.equal(res.stdout, 'alive\n');
  assert.match(res.stderr, /NATSTX_CRASH_AT: crashing after applying commit-one-phase of d/);
});
