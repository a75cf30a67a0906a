'use strict';
// The example's one adapter (examples/adapter.js) around the seed's Service:
// its saga steps, without NATS.
const test = require('node:test');
const assert = require('node:assert/strict');
const { ServiceAdapter } = require('../examples/adapter');
const { RefusedError } = require('../src');

const quiet = { info() {}, warn() {} };

test('a saga action commits its payload through a Service; its compensation drops it', async (t) => {
  t.mock.method(console, 'log', () => {}); // the seed's Service logs every call
  const a = new ServiceAdapter('svc', 1, quiet);
  const step = { sagaId: 'trip-1', name: 'book' };
  await a.action(step, Buffer.from('{"seat":"12A"}'));
  assert.deepEqual(a.actions.get('trip-1/book'), { seat: '12A' });
  await a.compensate(step, null);
  assert.equal(a.actions.has('trip-1/book'), false);
  assert.equal(a.lost, 0);
  await a.compensate({ sagaId: 'trip-2', name: 'book' }, null); // its action's data is not in this process
  assert.equal(a.lost, 1);
});

test('a saga action with a payload that is not JSON is refused for good; a failing Service fails the attempt', async (t) => {
  t.mock.method(console, 'log', () => {});
  t.mock.method(console, 'error', () => {});
  const a = new ServiceAdapter('svc', 1, quiet);
  await assert.rejects(a.action({ sagaId: 's', name: 'x' }, Buffer.from('not json')), (e) => e instanceof RefusedError && e.code === 'bad-payload');
  const never = new ServiceAdapter('svc', 0, quiet); // success rate 0, and the draw is 0.5: every call fails
  t.mock.method(Math, 'random', () => 0.5);
  await assert.rejects(never.action({ sagaId: 's', name: 'y' }, null), (e) => !(e instanceof RefusedError) && /Prepare failed/.test(e.message));
  assert.equal(never.actions.size, 0);
});
