'use strict'
// Helpers of the test suite: free ports, temporary service directories,
// child processes whose output can be awaited, the exocom bus.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const PKG = path.resolve(__dirname, '..')
const ROOT = path.resolve(PKG, '..')
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target')
const BIN = path.join(TARGET, 'debug')

/** A free TCP port on 127.0.0.1. */
function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const dirs = []
process.on('exit', () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})

/** A temporary directory, removed when the test process exits. */
function tempDir (prefix = 'exoservice-node-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  dirs.push(d)
  return d
}

/**
 * A service directory: service.yml with this role and messages, the given
 * files, and node_modules/exoservice-native linked to this package.
 */
function serviceDir ({ role, receives = [], sends = [], files = {}, yml }) {
  const dir = tempDir()
  const list = (xs) => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`
  fs.writeFileSync(path.join(dir, 'service.yml'), yml ??
    `type: ${role}\ndescription: a test service\nstartup:\n  command: node server.js\n  online-text: online at port\n` +
    `messages:\n  receives: ${list(receives)}\n  sends: ${list(sends)}\n`)
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
  fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true })
  fs.symlinkSync(PKG, path.join(dir, 'node_modules', 'exoservice-native'), 'dir')
  return dir
}

const children = new Set()
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL') } catch {}
  }
})

/** A child process whose output lines can be awaited. */
class Proc {
  constructor (cmd, args, opts = {}) {
    this.stdout = ''
    this.stderr = ''
    this.exit = null
    this._waiters = new Set()
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    children.add(this.child)
    this.child.stdout.setEncoding('utf8')
    this.child.stderr.setEncoding('utf8')
    this.child.stdout.on('data', (d) => { this.stdout += d; this._check() })
    this.child.stderr.on('data', (d) => { this.stderr += d; this._check() })
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        children.delete(this.child)
        this.exit = { code, signal }
        this._check()
        resolve(this.exit)
      })
    })
  }

  _check () {
    for (const w of this._waiters) w()
  }

  /** Resolves when stdout+stderr match `re`; rejects after `timeout` ms or at exit. */
  waitFor (re, timeout = 10000, stream = 'both') {
    const text = () => stream === 'stdout' ? this.stdout : stream === 'stderr' ? this.stderr : this.stdout + this.stderr
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer)
        this._waiters.delete(check)
      }
      const check = () => {
        const m = re.exec(text())
        if (m) {
          done()
          resolve(m)
        } else if (this.exit) {
          done()
          reject(new Error(`process exited (${JSON.stringify(this.exit)}) before printing ${re}\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`))
        }
      }
      const timer = setTimeout(() => {
        this._waiters.delete(check)
        reject(new Error(`no ${re} within ${timeout} ms\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`))
      }, timeout)
      this._waiters.add(check)
      check()
    })
  }

  /** Resolves with `{ code, signal }` at exit; rejects after `timeout` ms. */
  waitExit (timeout = 10000) {
    let timer
    return Promise.race([
      this.exited.then((e) => { clearTimeout(timer); return e }),
      new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`still running after ${timeout} ms\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`)), timeout)
      })
    ])
  }

  kill (signal = 'SIGTERM') {
    if (!this.exit) this.child.kill(signal)
  }

  /** Kills it (if running) and waits for the exit. */
  async stop () {
    if (this.exit) return this.exit
    this.kill('SIGKILL')
    return this.exited
  }
}

/** Runs `node script` in `cwd` with the bus variables set. */
function startNode (cwd, script, env = {}) {
  return new Proc(process.execPath, [script], {
    cwd,
    env: { ...process.env, EXOCOM_HOST: '127.0.0.1', RUST_LOG: 'info', ...env }
  })
}

/** Starts target/debug/exocom on a free port with these routes. */
async function startExocom (routes) {
  const exe = path.join(BIN, 'exocom')
  if (!fs.existsSync(exe)) throw new Error(`${exe} is missing: run bindings-node/dev-setup`)
  const port = await freePort()
  const proc = new Proc(exe, [], {
    env: { ...process.env, PORT: String(port), SERVICE_DATA: JSON.stringify(routes) }
  })
  await proc.waitFor(/online at port/, 10000)
  return { proc, port }
}

/** `n` ms. */
const sleep = (n) => new Promise((resolve) => setTimeout(resolve, n))

module.exports = { PKG, ROOT, BIN, freePort, tempDir, serviceDir, Proc, startNode, startExocom, sleep }
