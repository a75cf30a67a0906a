'use strict';
// Test helpers: the natstx binary (built once per test file from this
// repository, or NATSTX_BIN), a real NATS server (`natstx nats`) or
// coordinator (`natstx server`) on a free loopback port, the identities of
// `natstx auth init` (natstx's three NATS accounts), and bounded waits.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');

const REPO = path.resolve(__dirname, '..', '..', '..');

let bin = null;
/** @returns {string} the path of a natstx binary built from this repository */
function natstxBin() {
  if (process.env.NATSTX_BIN) return process.env.NATSTX_BIN;
  if (bin) return bin;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'natstx-js-bin-'));
  bin = path.join(dir, 'natstx');
  execFileSync('go', ['build', '-o', bin, './cmd/natstx'], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 });
  return bin;
}

/** @returns {Promise<number>} a free TCP port on 127.0.0.1 */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** @returns {string} a new temporary directory */
function tempDir(prefix = 'natstx-js-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Starts `natstx nats` (kind 'nats': NATS with JetStream only) or `natstx
 * server` (kind 'server': a coordinator on its embedded NATS), on loopback,
 * and waits (at most 60 s) for its ready line.
 * @param {'nats'|'server'} kind
 * @param {string[]} [extra] more flags
 * @returns {Promise<{url: string, dir: string, stop: () => Promise<void>, output: () => string}>}
 */
async function startNatstx(kind, extra = []) {
  const port = await freePort();
  const dir = tempDir();
  const args = [kind, '--nats-listen', `127.0.0.1:${port}`, '--data-dir', path.join(dir, 'data'), ...extra];
  if (kind === 'server') args.push('--log-level', 'warn');
  const child = spawn(natstxBin(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((r) => child.once('exit', r));
  const marker = kind === 'server' ? ' ready on ' : ' listening on ';
  await waitFor(() => out.includes(marker), 60_000, () => `natstx ${kind} not ready: ${out}`, () => child.exitCode !== null);
  return {
    url: `nats://127.0.0.1:${port}`,
    dir,
    output: () => out,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `natstx auth init` into dir/natstx-auth for participants: the server
 * configuration with natstx's accounts (NATSTX with JetStream,
 * NATSTX_PARTICIPANTS and NATSTX_OPERATORS without, importing what they
 * need) and a credentials file per identity.
 * @param {string} dir
 * @param {string[]} participants
 * @returns {{conf: string, creds: (id: string) => string}} the server
 * configuration's path, and the path of identity id's credentials
 * ('coordinator', 'operator', 'participant-<name>')
 */
function authInit(dir, participants) {
  const auth = path.join(dir, 'natstx-auth');
  execFileSync(natstxBin(), ['auth', 'init', '--dir', auth, '--participants', participants.join(',')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
  return { conf: path.join(auth, 'nats-auth.conf'), creds: (id) => path.join(auth, `${id}.creds`) };
}

/**
 * Waits until cond() is true, polling every 20 ms, for at most ms.
 * @param {() => boolean|Promise<boolean>} cond
 * @param {number} ms
 * @param {() => string} [what] describes the failure
 * @param {() => boolean} [abort] fails at once when it returns true
 */
async function waitFor(cond, ms, what = () => 'condition', abort = () => false) {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (abort()) throw new Error(`gave up waiting: ${what()}`);
    if (Date.now() > end) throw new Error(`timed out after ${ms}ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Creates the command stream as the coordinator declares it
 * (orchestrator.CommandStreamConfig), for tests without a coordinator.
 * @param {import('@nats-io/jetstream').JetStreamManager} jsm
 */
async function createCommandStream(jsm) {
  await jsm.streams.add({
    name: 'NATSTX_CMD',
    subjects: ['natstx.cmd.>'],
    retention: 'workqueue',
    storage: 'file',
    num_replicas: 1,
    max_age: 24 * 3600 * 1e9,
    duplicate_window: 120 * 1e9,
    discard: 'old',
  });
}

module.exports = { REPO, natstxBin, freePort, tempDir, startNatstx, authInit, waitFor, createCommandStream };
