'use strict'
// exoservice-native: exoservices in Node on the Rust core. The API of
// exoservice-js (`bootstrap`), plus the `ExoService` class.

const { EventEmitter } = require('node:events')
const fs = require('node:fs')
const path = require('node:path')

const native = require('./lib/native')
const errors = require('./lib/errors')
const { encode, decode, message } = require('./lib/payload')

const { UsageError, StoppedError, call, settle } = errors

/** Default deadline of `request`, in milliseconds. */
const DEFAULT_REQUEST_TIMEOUT = 10000
/** Default time a reply handler waits for the next message of its activity. */
const DEFAULT_REPLY_HANDLER_TIMEOUT = 60000
/** Messages a reply handler may be behind before more are dropped. */
const REPLY_HANDLER_QUEUE = 256
/** Deliveries taken from the core per turn of the event loop, at most. */
const BATCH = 64
/** How often the connection state is looked at (for `online`/`offline`). */
const POLL_MS = 100
/** `waitOnline` without a deadline. */
const FOREVER_MS = 1e12

function text (err) {
  if (err instanceof Error) return err.stack || `${err.name}: ${err.message}`
  try {
    return `a non-error was thrown: ${typeof err === 'string' ? err : JSON.stringify(err)}`
  } catch {
    return `a non-error was thrown: ${String(err)}`
  }
}

function requestTimeout (opts, fallback) {
  const t = typeof opts === 'number' ? opts : (opts && opts.timeout)
  if (t === undefined || t === null) return fallback
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) {
    throw new UsageError(`the request timeout must be a number of milliseconds >= 0, got ${t}`)
  }
  return t
}

// Runs a before-all hook. It gets `done`, a function that also carries the
// hook's powers (`done.send`), so `(done) => ...`, `async () => ...` and
// `async ({ send }) => ...` all work. A hook that returns a Promise is ready
// when the Promise resolves (or `done()` is called first); otherwise, one
// that takes a parameter is ready at `done()`, one without at once.
function runHook (hook, powers) {
  return new Promise((resolve, reject) => {
    let settled = false
    const done = (err) => {
      if (settled) return
      settled = true
      if (err) reject(err instanceof Error ? err : new Error(String(err)))
      else resolve()
    }
    Object.assign(done, powers)
    let result
    try {
      result = hook(done, powers)
    } catch (e) {
      done(e)
      return
    }
    if (result && typeof result.then === 'function') {
      result.then(() => done(), (e) => done(e || new Error('the before-all hook was rejected')))
    } else if (hook.length === 0) {
      done()
    }
  })
}

/**
 * A service: a config (service.yml and the environment), handlers, and a
 * connection to ExoCom. Events: `online` (registered), `offline`
 * (connection lost, or closed), `error` (a handler failed; also logged),
 * `close` (drained and left, with the drain report).
 */
class ExoService extends EventEmitter {
  constructor (options = {}) {
    super()
    if (options === null || typeof options !== 'object') {
      throw new UsageError('ExoService options must be an object')
    }
    let configDir = options.configPath
    if (configDir !== undefined && configDir !== null) {
      if (typeof configDir !== 'string' || configDir === '') {
        throw new UsageError('configPath must be a path (the service directory or its service.yml)')
      }
      configDir = path.resolve(configDir)
      try {
        if (fs.statSync(configDir).isFile()) configDir = path.dirname(configDir)
      } catch {
        // A missing path is reported by the config reader, with its name.
      }
    }
    const port = options.exocomPort
    this._engine = call(() => new native.NativeEngine({
      configDir: configDir ?? undefined,
      role: options.role ?? undefined,
      exocomHost: options.exocomHost ?? undefined,
      exocomPort: port === undefined || port === null ? undefined : Number(port),
      receives: options.receives ?? undefined,
      sends: options.sends ?? undefined,
      concurrency: options.concurrency ?? undefined,
      drainTimeoutMs: options.drainTimeout ?? undefined
    }))
    this.requestTimeout = requestTimeout(options.requestTimeout, DEFAULT_REQUEST_TIMEOUT)
    this.replyHandlerTimeout = requestTimeout(options.replyHandlerTimeout, DEFAULT_REPLY_HANDLER_TIMEOUT)
    this._handleSignals = options.handleSignals !== false
    this._handlers = new Map()
    this._beforeAll = options.beforeAll
    this._state = 'new'
    this._online = false
    this._everOnline = false
    this._closing = null
    this._connecting = null
    this._poll = null
    this._signals = null
    if (options.handlers) {
      for (const [name, fn] of Object.entries(options.handlers)) this.handle(name, fn)
    }
  }

  /** The role this service registers as. */
  get role () { return this._engine.role }
  /** Where ExoCom runs. */
  get exocomHost () { return this._engine.exocomHost }
  /** ExoCom's port. */
  get exocomPort () { return this._engine.exocomPort }
  /** Message names this service receives. */
  get receives () { return this._engine.receives }
  /** Message names this service may send. */
  get sends () { return this._engine.sends }
  /** The config file that was read. */
  get configFile () { return this._engine.configFile }
  /** Whether the service is registered with the bus right now. */
  get online () { return this._online }
  /** 'new', 'starting', 'running', 'closing' or 'closed'. */
  get state () { return this._state }

  /**
   * Handles messages named `name` (declared under `receives`) with
   * `fn(payload, { reply, send, request, ... }, activityId)`; `fn` may
   * return a Promise.
   */
  handle (name, fn) {
    if (typeof name !== 'string' || name === '') throw new UsageError('a handler needs a message name')
    if (typeof fn !== 'function') throw new UsageError(`the handler for '${name}' must be a function`)
    if (this._state !== 'new') throw new UsageError(`cannot add the handler for '${name}': the service was started`)
    call(() => this._engine.handle(name))
    this._handlers.set(name, fn)
    return this
  }

  /** Sets the hook that runs before the service registers. */
  beforeAll (hook) {
    if (typeof hook !== 'function') throw new UsageError('beforeAll needs a function')
    if (this._state !== 'new') throw new UsageError('the service was started: too late for beforeAll')
    this._beforeAll = hook
    return this
  }

  /**
   * Runs the before-all hook, connects and registers; resolves once
   * registered (the `online` event). Reconnects by itself when the bus
   * goes away.
   */
  connect () {
    if (this._connecting) return this._connecting
    if (this._state !== 'new') return Promise.reject(new StoppedError('the service was closed'))
    this._state = 'starting'
    this._connecting = this._start()
    return this._connecting
  }

  async _start () {
    if (this._beforeAll) {
      await runHook(this._beforeAll, { send: (name, payload) => this.send(name, payload) })
    }
    if (this._state !== 'starting') throw new StoppedError('the service was closed while starting')
    call(() => this._engine.connect())
    this._state = 'running'
    if (this._handleSignals) this._listenForSignals()
    this._pulling = this._pull()
    const online = await settle(this._engine.waitOnline(FOREVER_MS))
    if (!online || this._state !== 'running') throw new StoppedError('the service was closed before it was online')
    this._online = true
    this._everOnline = true
    this.emit('online')
    this._poll = setInterval(() => this._watchConnection(), POLL_MS)
    this._poll.unref()
    return this
  }

  _watchConnection () {
    if (this._state !== 'running') return
    const up = this._engine.isConnected()
    if (up === this._online) return
    this._online = up
    this.emit(up ? 'online' : 'offline')
  }

  _listenForSignals () {
    const onSignal = (signal) => {
      if (this._closing) {
        // A second signal: leave now.
        process.exit(signal === 'SIGINT' ? 130 : 143)
      }
      process.stderr.write(`exoservice: ${signal}: stopping, finishing running handlers\n`)
      this.close().then(() => {
        // Leave unless the program listens for this signal itself.
        if (process.listenerCount(signal) === 0) process.exit()
      }, (e) => {
        process.stderr.write(`exoservice: stopping failed: ${text(e)}\n`)
        process.exit(1)
      })
    }
    this._signals = { SIGINT: () => onSignal('SIGINT'), SIGTERM: () => onSignal('SIGTERM') }
    for (const [sig, fn] of Object.entries(this._signals)) process.on(sig, fn)
  }

  _unlistenSignals () {
    if (!this._signals) return
    for (const [sig, fn] of Object.entries(this._signals)) process.removeListener(sig, fn)
    this._signals = null
  }

  // Pulls deliveries from the core until the service stops.
  async _pull () {
    for (;;) {
      let batch
      try {
        batch = await this._engine.nextBatch(BATCH)
      } catch (e) {
        process.stderr.write(`exoservice: cannot take messages: ${text(errors.fromNative(e))}\n`)
        return
      }
      if (batch.length === 0) return
      for (const d of batch) this._dispatch(d)
    }
  }

  _dispatch (d) {
    const name = d.name
    const handler = this._handlers.get(name)
    if (!handler) {
      d.done()
      return
    }
    const activityId = d.activityId
    let payload
    try {
      payload = decode(d.payload)
    } catch (e) {
      d.fail()
      d.done()
      this._handlerFailed(name, activityId, e)
      return
    }
    let result
    try {
      result = handler(payload, this._powers(d, name), activityId)
    } catch (e) {
      d.fail()
      d.done()
      this._handlerFailed(name, activityId, e)
      return
    }
    if (result && typeof result.then === 'function') {
      result.then(() => d.done(), (e) => {
        d.fail()
        d.done()
        this._handlerFailed(name, activityId, e)
      })
    } else {
      d.done()
    }
  }

  // What a handler gets: reply, send and request (usable destructured).
  _powers (d, name) {
    return {
      name,
      activityId: d.activityId,
      deliveryAttempt: d.deliveryAttempt,
      sender: d.sender,
      auth: decode(d.auth),
      isSecurity: d.isSecurity,
      reply: (replyName, payload) => {
        const json = encode(replyName, payload)
        call(() => d.reply(replyName, json))
      },
      send: (sendName, payload, replyHandler) => this._send(d, sendName, payload, replyHandler),
      request: (reqName, payload, opts) => this._request(d, reqName, payload, opts)
    }
  }

  _send (source, name, payload, replyHandler) {
    const json = encode(name, payload)
    if (replyHandler === undefined || replyHandler === null) {
      return call(() => source.send(name, json))
    }
    if (typeof replyHandler !== 'function') throw new UsageError('the reply handler must be a function')
    const watch = call(() => source.sendWatched(name, json, REPLY_HANDLER_QUEUE))
    this._follow(watch, replyHandler)
    return watch.activityId
  }

  // Calls `replyHandler(name, payload)` for each message of the activity,
  // until none came for `replyHandlerTimeout` or the service closes.
  async _follow (watch, replyHandler) {
    for (;;) {
      let json
      try {
        json = await watch.next(this.replyHandlerTimeout)
      } catch {
        return
      }
      if (json == null) return
      const m = message(json)
      try {
        const r = replyHandler(m.name, m.payload, { activityId: m.activityId, auth: m.auth })
        if (r && typeof r.then === 'function') {
          r.then(null, (e) => this._handlerFailed(`reply to activity ${m.activityId}`, m.activityId, e, true))
        }
      } catch (e) {
        this._handlerFailed(`reply to activity ${m.activityId}`, m.activityId, e, true)
      }
    }
  }

  _request (source, name, payload, opts) {
    let pending
    const site = new Error()
    let timeout
    try {
      timeout = requestTimeout(opts, this.requestTimeout)
      const json = encode(name, payload)
      const auth = opts && typeof opts === 'object' ? opts.auth : undefined
      if (auth === undefined) {
        pending = call(() => source.request(name, json, timeout))
      } else if (source !== this._engine) {
        throw new UsageError("a handler's request carries the handled message's auth; the auth option is for the service's own request")
      } else {
        const authJson = encode(name, auth)
        pending = call(() => source.request(name, json, timeout, authJson))
      }
    } catch (e) {
      return Promise.reject(e)
    }
    const full = Boolean(opts && typeof opts === 'object' && opts.full)
    return settle(pending, site, { messageName: name, timeout }).then((json) => {
      const m = message(json)
      return full ? m : m.payload
    })
  }

  _handlerFailed (name, activityId, err, isReply) {
    const what = isReply ? `the reply handler (${name})` : `the handler for '${name}' (activity ${activityId})`
    process.stderr.write(`exoservice: ${what} failed: ${text(err)}\n`)
    if (this.listenerCount('error') > 0) {
      const e = err instanceof Error ? err : new Error(text(err))
      try {
        e.messageName = name
        e.activityId = activityId
      } catch {}
      this.emit('error', e)
    }
  }

  /**
   * Sends `name` (declared under `sends`) in a new activity; returns the
   * activity id. With `replyHandler`, calls it as `(messageName, payload)`
   * for each message of that activity.
   */
  send (name, payload, replyHandler) {
    if (this._state === 'closed') throw new StoppedError('the service is closed')
    return this._send(this._engine, name, payload, replyHandler)
  }

  /**
   * Sends `name` and resolves with the payload of the first message of its
   * activity (the whole message with `{ full: true }`); rejects with a
   * `TimeoutError` after `timeout` ms. `{ auth }` sends the request with
   * that auth (any JSON value), which a reply carries back.
   */
  request (name, payload, opts) {
    if (this._state === 'closed') return Promise.reject(new StoppedError('the service is closed'))
    return this._request(this._engine, name, payload, opts)
  }

  /**
   * Stops taking messages, lets running handlers finish (up to the drain
   * deadline), sends what waits, and leaves the bus. Resolves with the
   * drain report; then nothing of the service keeps the process alive.
   */
  close () {
    if (this._closing) return this._closing
    const was = this._state
    this._state = 'closing'
    this._closing = (async () => {
      this._engine.stop()
      const report = await settle(this._engine.drain())
      if (this._pulling) await this._pulling
      if (this._poll) clearInterval(this._poll)
      this._poll = null
      this._unlistenSignals()
      this._state = 'closed'
      if (this._online) {
        this._online = false
        this.emit('offline')
      }
      this.emit('close', report)
      return report
    })()
    if (was === 'new') this._connecting = Promise.reject(new StoppedError('the service was closed'))
    if (this._connecting) this._connecting.catch(() => {})
    return this._closing
  }
}

// The directory of the service's config: the working directory (as
// exoservice-js), else the main script's directory or one above it.
function findServiceDir () {
  const has = (dir) => fs.existsSync(path.join(dir, 'service.yml')) || fs.existsSync(path.join(dir, 'config.yml'))
  const candidates = [process.cwd()]
  const main = require.main && require.main.filename
  if (main) {
    let dir = path.dirname(main)
    for (let i = 0; i < 3; i++) {
      candidates.push(dir)
      dir = path.dirname(dir)
    }
  }
  return candidates.find(has) || process.cwd()
}

function fatal (err, service) {
  const msg = err instanceof errors.ExoError && err.code !== 'EXO_USAGE' ? err.message : text(err)
  process.stderr.write(`exoservice: ${msg}\n`)
  process.exitCode = 1
  if (service) service.close().catch(() => {})
}

/**
 * Starts a service the exoservice-js way: one handler per message name,
 * plus an optional `beforeAll(done)` hook. The config is the service.yml
 * of the working directory (or `options.configPath`). A start-up error is
 * printed and makes the process exit with code 1. Returns the service.
 */
function bootstrap (handlers, options = {}) {
  if (handlers === null || typeof handlers !== 'object') {
    throw new UsageError('bootstrap needs an object of handlers, one per message name')
  }
  const { beforeAll, ...byName } = handlers
  let service
  try {
    service = new ExoService({ ...options, configPath: options.configPath ?? findServiceDir() })
    if (beforeAll !== undefined) service.beforeAll(beforeAll)
    for (const [name, fn] of Object.entries(byName)) service.handle(name, fn)
  } catch (e) {
    fatal(e)
    return undefined
  }
  service.connect().catch((e) => {
    // Closed (by a signal or the program) before it was online: no error.
    if (service.state === 'closing' || service.state === 'closed') return
    fatal(e, service)
  })
  return service
}

module.exports = {
  bootstrap,
  ExoService,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_REPLY_HANDLER_TIMEOUT,
  ExoError: errors.ExoError,
  ConfigError: errors.ConfigError,
  UndeclaredError: errors.UndeclaredError,
  NotReceivedError: errors.NotReceivedError,
  DuplicateHandlerError: errors.DuplicateHandlerError,
  TimeoutError: errors.TimeoutError,
  BufferFullError: errors.BufferFullError,
  ConnectionError: errors.ConnectionError,
  PayloadError: errors.PayloadError,
  UsageError: errors.UsageError,
  StoppedError: errors.StoppedError
}
