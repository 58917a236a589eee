'use strict'
// The errors of exoservice: one class per code, all `ExoError`s.

/** The base class: every error of the framework has a `code`. */
class ExoError extends Error {
  constructor (message, props) {
    super(message)
    this.name = new.target.name
    this.code = new.target.code || 'EXO_ERROR'
    if (props) Object.assign(this, props)
  }
}
ExoError.code = 'EXO_ERROR'

function define (name, code) {
  const cls = { [name]: class extends ExoError {} }[name]
  cls.code = code
  return cls
}

const ConfigError = define('ConfigError', 'EXO_CONFIG')
const UndeclaredError = define('UndeclaredError', 'EXO_UNDECLARED')
const NotReceivedError = define('NotReceivedError', 'EXO_NOT_RECEIVED')
const DuplicateHandlerError = define('DuplicateHandlerError', 'EXO_DUPLICATE_HANDLER')
const TimeoutError = define('TimeoutError', 'EXO_TIMEOUT')
const BufferFullError = define('BufferFullError', 'EXO_BUFFER_FULL')
const ConnectionError = define('ConnectionError', 'EXO_CONNECTION')
const PayloadError = define('PayloadError', 'EXO_PAYLOAD')
const UsageError = define('UsageError', 'EXO_USAGE')
const StoppedError = define('StoppedError', 'EXO_STOPPED')

const byCode = {}
for (const cls of [ConfigError, UndeclaredError, NotReceivedError, DuplicateHandlerError,
  TimeoutError, BufferFullError, ConnectionError, PayloadError, UsageError, StoppedError]) {
  byCode[cls.code] = cls
}

// The native addon throws `Error('EXO_CODE: text')`; this makes it the
// matching class (other errors pass through unchanged).
function fromNative (err, props) {
  const m = err && typeof err.message === 'string' && /^(EXO_[A-Z_]+): ([\s\S]*)$/.exec(err.message)
  if (!m) return err
  const Cls = byCode[m[1]] || ExoError
  return new Cls(m[2], props)
}

// Runs a native call, turning its error into an ExoError.
function call (fn) {
  try {
    return fn()
  } catch (e) {
    throw fromNative(e)
  }
}

// Awaits a native promise, turning its rejection into an ExoError. `site`
// (an Error made at the call) gives the error the caller's stack.
function settle (promise, site, props) {
  return promise.then(null, (e) => {
    const err = fromNative(e, props)
    if (site && err instanceof ExoError && site.stack) {
      err.stack = `${err.name}: ${err.message}\n${site.stack.split('\n').slice(1).join('\n')}`
    }
    throw err
  })
}

module.exports = {
  ExoError,
  ConfigError,
  UndeclaredError,
  NotReceivedError,
  DuplicateHandlerError,
  TimeoutError,
  BufferFullError,
  ConnectionError,
  PayloadError,
  UsageError,
  StoppedError,
  fromNative,
  call,
  settle
}
