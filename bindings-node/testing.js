'use strict'
// require('exoservice-native/testing'): the core's mock bus, for tests of
// services. It listens on 127.0.0.1 (a free port), records every message
// that services send it, and sends them what a test asks.

const native = require('./lib/native')
const { call, settle, UsageError } = require('./lib/errors')
const { encode, message } = require('./lib/payload')

function ms (timeout, fallback) {
  const t = timeout === undefined || timeout === null ? fallback : timeout
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) {
    throw new UsageError(`a timeout must be a number of milliseconds >= 0, got ${t}`)
  }
  return t
}

/** A mock ExoCom (see the README's "Testing"). */
class MockBus {
  constructor (inner) {
    if (!(inner instanceof native.NativeMockBus)) {
      throw new UsageError('use `await MockBus.start()` to make a mock bus')
    }
    this._bus = inner
  }

  /** Starts a mock bus on a free port of 127.0.0.1 (or on `port`). */
  static async start (port) {
    const inner = await settle(native.NativeMockBus.start(port ?? undefined), new Error())
    return new MockBus(inner)
  }

  /** The port it listens on (the service's EXOCOM_PORT). */
  get port () { return this._bus.port }
  /** `ws://127.0.0.1:PORT/services`. */
  get url () { return this._bus.url }

  /** The roles registered and connected. */
  roles () { return call(() => this._bus.roles()) }
  /** How many connections are registered as `role`. */
  instances (role) { return call(() => this._bus.instances(role)) }

  /** Resolves once a service registered as `role` (TimeoutError after `timeout` ms). */
  waitForRegistration (role, timeout) {
    return settle(call(() => this._bus.waitForRegistration(role, ms(timeout, 5000))), new Error())
  }

  /** Sends `name` with `payload` to the service registered as `role`; resolves with the message as sent. */
  async sendToService (role, name, payload) {
    const json = await settle(call(() => this._bus.sendToService(role, name, encode(name, payload))), new Error())
    return message(json)
  }

  /** Sends a whole message (`{ name, payload, activityId, auth, isSecurity, ... }`) to `role`. */
  async sendMessage (role, msg) {
    if (!msg || typeof msg.name !== 'string') throw new UsageError('a message needs a name')
    const json = await settle(call(() => this._bus.sendMessage(role, JSON.stringify(msg))), new Error())
    return message(json)
  }

  /** Resolves with the first received `name` not returned before (TimeoutError after `timeout` ms). */
  async waitFor (name, timeout) {
    const json = await settle(call(() => this._bus.waitFor(name, ms(timeout, 5000))), new Error())
    return message(json)
  }

  /** Every message received since the start or the last reset(). */
  received () { return call(() => this._bus.received()).map(message) }
  /** Forgets the received messages and the automatic replies. */
  reset () { call(() => this._bus.reset()) }

  /** Answers every `requestName` at once with `replyName` and `payload`, in the request's activity. */
  mockReply (requestName, replyName, payload) {
    call(() => this._bus.mockReply(requestName, replyName, encode(replyName, payload)))
  }

  /** Stops the mock (connections drop as with a killed bus). */
  shutdown () { return settle(this._bus.shutdown()) }
}

module.exports = { MockBus }
