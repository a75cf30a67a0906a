'use strict';
// natstx participant SDK for Node.js. See docs/PARTICIPANTS.md ("JavaScript
// participants") and README.md beside this file.

const protocol = require('./protocol');
const batch = require('./batch');
const errors = require('./errors');
const { FileStore } = require('./store');
const { Processor, Settle, State, StepState, READ_ONLY, Defaults, silentLogger } = require('./processor');
const { Participant, jetStreamApiPrefix } = require('./runtime');
const conn = require('./connect');

module.exports = {
  Participant,
  jetStreamApiPrefix,
  Processor,
  FileStore,
  Settle,
  State,
  StepState,
  READ_ONLY,
  Defaults,
  silentLogger,
  refuse: errors.refuse,
  withCode: errors.withCode,
  RefusedError: errors.RefusedError,
  CodedError: errors.CodedError,
  Reason: errors.Reason,
  InvalidConfigError: errors.InvalidConfigError,
  StreamMissingError: errors.StreamMissingError,
  StoppedError: errors.StoppedError,
  StartedError: errors.StartedError,
  protocol,
  batch,
  participantInbox: conn.participantInbox,
  connectFlags: conn.connectFlags,
  connectSettings: conn.connectSettings,
  natsOptions: conn.natsOptions,
  connectParticipant: conn.connectParticipant,
  CONNECT_SETTINGS: conn.CONNECT_SETTINGS,
};
