'use strict';
// Connecting a participant to NATS as `natstx participant` does
// (cmd/natstx/connect.go): with its identity (a credentials file of `natstx
// auth init`, or a user and password), TLS (the CA of the server's
// certificate, a client certificate) and its own reply inbox prefix,
// _INBOX_natstx.participant.<name>: the only inboxes a participant's
// permissions let it subscribe to (docs/SECURITY.md), so the replies to its
// pull requests, which are its commands, reach no other identity. Without
// authentication the prefix is harmless.
//
// The settings have the flag names and NATSTX_* variables of the Go CLI:
//
//   --nats          NATSTX_NATS          server URLs, comma-separated
//   --creds         NATSTX_CREDS         credentials file (.creds)
//   --user          NATSTX_USER          user name (with --password)
//   --password      NATSTX_PASSWORD      password of --user
//   --tls-ca        NATSTX_TLS_CA        CA (PEM) of the server's certificate; requires TLS
//   --tls-cert      NATSTX_TLS_CERT      client certificate (PEM), with --tls-key
//   --tls-key       NATSTX_TLS_KEY       its private key (PEM)
//   --inbox-prefix  NATSTX_INBOX_PREFIX  reply inbox prefix; default the participant's
//
// A flag wins over its variable.

const fs = require('node:fs');
const { connect, credsAuthenticator } = require('@nats-io/transport-node');
const P = require('./protocol');
const { InvalidConfigError } = require('./errors');

/** Where natstx looks for NATS by default (`natstx server` listens there). */
const DEFAULT_NATS = 'nats://127.0.0.1:4222';

/** The prefix of every natstx identity's inboxes but the coordinator's (messages.InboxRoot). */
const INBOX_ROOT = '_INBOX_natstx';

/**
 * @param {string} name a participant's name
 * @returns {string} its inbox prefix, _INBOX_natstx.participant.<name> (messages.ParticipantInbox)
 */
function participantInbox(name) {
  return `${INBOX_ROOT}.participant.${name}`;
}

/** Each connection setting: its flag and its NATSTX_* variable, as the Go CLI names them. */
const CONNECT_SETTINGS = Object.freeze({
  nats: { flag: 'nats', env: 'NATSTX_NATS' },
  creds: { flag: 'creds', env: 'NATSTX_CREDS' },
  user: { flag: 'user', env: 'NATSTX_USER' },
  password: { flag: 'password', env: 'NATSTX_PASSWORD' },
  tlsCa: { flag: 'tls-ca', env: 'NATSTX_TLS_CA' },
  tlsCert: { flag: 'tls-cert', env: 'NATSTX_TLS_CERT' },
  tlsKey: { flag: 'tls-key', env: 'NATSTX_TLS_KEY' },
  inboxPrefix: { flag: 'inbox-prefix', env: 'NATSTX_INBOX_PREFIX' },
});

/**
 * @returns {Record<string, {type: 'string'}>} the connection flags, for
 * node:util parseArgs (without defaults: connectSettings applies the
 * variables, then the defaults)
 */
function connectFlags() {
  const out = {};
  for (const { flag } of Object.values(CONNECT_SETTINGS)) out[flag] = { type: 'string' };
  return out;
}

/**
 * The connection settings from parsed flags, then the NATSTX_* variables
 * (a flag given wins over its variable), then the defaults.
 * @param {Record<string, string|undefined>} flags parseArgs values, by flag name
 * @param {Record<string, string|undefined>} [env] default process.env
 * @returns {{nats: string, creds: string, user: string, password: string, tlsCa: string, tlsCert: string, tlsKey: string, inboxPrefix: string}}
 */
function connectSettings(flags = {}, env = process.env) {
  const s = {};
  for (const [k, { flag, env: v }] of Object.entries(CONNECT_SETTINGS)) {
    s[k] = flags[flag] !== undefined ? flags[flag] : (env[v] ?? '');
  }
  if (!s.nats) s.nats = DEFAULT_NATS;
  return s;
}

/** @private "--creds (NATSTX_CREDS)" */
function named(k) {
  const { flag, env } = CONNECT_SETTINGS[k];
  return `--${flag} (${env})`;
}

/** @private Reads a file the settings name, or throws an error naming the setting. */
function readSetting(k, file) {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new InvalidConfigError(`${named(k)} ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
}

/**
 * The nats.js connection options of participant name with settings (see
 * connectSettings; missing ones are empty): its servers, its identity, TLS,
 * and its inbox prefix (the settings' inboxPrefix, else the participant's,
 * _INBOX_natstx.participant.<name>). Files the settings name are read now,
 * so that a wrong path fails here, naming its setting; the credentials file
 * is read again at each reconnection (as the Go client does), so a renewed
 * one is used.
 * @param {string} name the participant's name
 * @param {object} settings
 * @returns {import('@nats-io/transport-node').NodeConnectionOptions}
 * @throws {InvalidConfigError} settings that do not go together, a bad name, or an unreadable file
 */
function natsOptions(name, settings = {}) {
  try {
    P.validateName('participant name', name);
  } catch (e) {
    throw new InvalidConfigError(e.message);
  }
  const s = {};
  for (const k of Object.keys(CONNECT_SETTINGS)) s[k] = settings[k] ? String(settings[k]) : '';
  if (!s.nats) s.nats = DEFAULT_NATS;
  if (s.creds && s.user) throw new InvalidConfigError(`${named('creds')} and ${named('user')} both name an identity; give one`);
  if (s.password && !s.user) throw new InvalidConfigError(`${named('password')} needs ${named('user')}`);
  if (!s.tlsCert !== !s.tlsKey) throw new InvalidConfigError(`${named('tlsCert')} and ${named('tlsKey')} go together`);
  const servers = s.nats.split(',').map((u) => u.trim()).filter((u) => u !== '');
  if (servers.length === 0) throw new InvalidConfigError(`${named('nats')}: no server URL`);
  const opts = { servers, inboxPrefix: s.inboxPrefix || participantInbox(name) };
  if (s.creds) {
    let last = readSetting('creds', s.creds);
    const file = s.creds;
    opts.authenticator = credsAuthenticator(() => {
      try {
        last = fs.readFileSync(file);
      } catch {
        // keep the credentials read last: the file is being replaced
      }
      return last;
    });
  }
  if (s.user) {
    opts.user = s.user;
    opts.pass = s.password;
  }
  if (s.tlsCa || s.tlsCert) {
    // Setting tls requires it: the server must speak TLS (nats.RootCAs).
    opts.tls = {};
    if (s.tlsCa) {
      readSetting('tlsCa', s.tlsCa);
      opts.tls.caFile = s.tlsCa;
    }
    if (s.tlsCert) {
      readSetting('tlsCert', s.tlsCert);
      readSetting('tlsKey', s.tlsKey);
      opts.tls.certFile = s.tlsCert;
      opts.tls.keyFile = s.tlsKey;
    }
  }
  return opts;
}

/**
 * Explains a failed connection as the Go CLI does: refused credentials,
 * failed TLS, or no server; the URLs are shown without user information.
 * @param {string[]} servers
 * @param {unknown} err
 * @returns {Error} with err as its cause
 */
function connectError(servers, err) {
  const shown = servers.map((u) => u.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:xxxxx@').replace(/\/\/[^/@:]*@/, '//xxxxx@')).join(',');
  const text = [err, err && err.cause].filter(Boolean).map((e) => `${e.name || ''} ${e.code || ''} ${e.message || e}`).join(' ');
  let hint;
  if (/authoriz|authentication/i.test(text)) {
    hint = `NATS at ${shown} refused this identity; pass the credentials of an identity it knows (--creds, or --user and --password; NATSTX_CREDS, NATSTX_USER, NATSTX_PASSWORD)`;
  } else if (/tls|x509|certificate|CERT_|SSL/i.test(text)) {
    hint = `TLS with NATS at ${shown} failed; check --tls-ca (NATSTX_TLS_CA: the CA of the server's certificate) and, if the server verifies clients, --tls-cert and --tls-key`;
  } else {
    hint = `cannot reach NATS at ${shown}; start one with 'natstx server', or point --nats (or NATSTX_NATS) at a running server`;
  }
  return new Error(`${hint}: ${err && err.message ? err.message : err}`, { cause: err });
}

/**
 * Connects participant name to NATS with settings (see natsOptions), plus
 * extra nats.js options (which win).
 * @param {string} name
 * @param {object} settings
 * @param {object} [extra] e.g. { name, maxReconnectAttempts: -1 }
 * @returns {Promise<import('@nats-io/transport-node').NatsConnection>}
 */
async function connectParticipant(name, settings, extra = {}) {
  const opts = { ...natsOptions(name, settings), ...extra };
  try {
    return await connect(opts);
  } catch (e) {
    throw connectError(opts.servers, e);
  }
}

module.exports = {
  DEFAULT_NATS, INBOX_ROOT, CONNECT_SETTINGS, participantInbox, connectFlags, connectSettings, natsOptions, connectError, connectParticipant,
};
