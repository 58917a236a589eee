'use strict'
// Node services over NATS (a real nats-server): the handler code of an ExoCom
// service runs unchanged; the transport, the routes and the delivery modes
// come from the environment. An at-least-once message whose handler fails
// comes again, and `deliveryAttempt` tells which attempt it is.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const net = require('node:net')
const { ExoService } = require('exoservice-native')
const { MockBus } = require('exoservice-native/testing')
const { serviceDir, startNode, tempDir, freePort, Proc, sleep } = require('../test-support/harness')

const REDELIVERY_DELAY_MS = 100
const ROUTES = {
  users: { receives: ['users.create'], sends: ['users.created'], atLeastOnce: ['users.create'] },
  web: { receives: ['users.created'], sends: ['users.create'] }
}

// The users service, written as for ExoCom: it fails the first attempt of
// users.create (a throw, or a rejection with HANDLER=async) and replies on
// the next one.
const USERS = `
const { bootstrap } = require('exoservice-native')
const attempts = []
function create (payload, { reply, deliveryAttempt }) {
  attempts.push(deliveryAttempt)
  console.log('attempt ' + deliveryAttempt)
  if (deliveryAttempt === 1) throw new Error('the first attempt fails')
  reply('users.created', { name: payload.name, attempts })
}
bootstrap({
  'users.create': process.env.HANDLER === 'async'
    ? async (payload, ctx) => { await new Promise((resolve) => setTimeout(resolve, 5)); create(payload, ctx) }
    : create
})
`

function natsServerBinary () {
  for (const dir of (process.env.PATH || '').split(':').concat(['/usr/sbin'])) {
    const file = `${dir}/nats-server`
    if (dir && fs.existsSync(file)) return file
  }
  throw new Error('nats-server is missing: install the Debian package nats-server')
}

/** Whether something accepts connections on 127.0.0.1:port. */
function accepts (port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

/** Polls `condition` every 20 ms; false after `timeout` ms. */
async function until (condition, timeout) {
  const deadline = Date.now() + timeout
  while (!(await condition())) {
    if (Date.now() >= deadline) return false
    await sleep(20)
  }
  return true
}

let nats = null
let natsUrl = null

before(async () => {
  const exe = natsServerBinary()
  const store = tempDir('exoservice-node-nats-')
  for (let i = 0; i < 3 && !natsUrl; i++) {
    const port = await freePort()
    const proc = new Proc(exe, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', store])
    if (await until(async () => proc.exit !== null || await accepts(port), 10000) && proc.exit === null) {
      nats = proc
      natsUrl = `nats://127.0.0.1:${port}`
    } else {
      await proc.stop()
    }
  }
  if (!natsUrl) throw new Error('nats-server did not start on any of 3 ports')
})

after(async () => {
  if (nats) await nats.stop()
})

/** The variables that put a service on NATS, with a fresh application name. */
function natsEnv () {
  return {
    EXOSERVICE_TRANSPORT: 'nats',
    NATS_URL: natsUrl,
    EXOSERVICE_APP: `node-${crypto.randomUUID().slice(0, 12)}`,
    EXOSERVICE_ROUTES: JSON.stringify(ROUTES),
    EXOSERVICE_REDELIVERY_DELAY_MS: String(REDELIVERY_DELAY_MS)
  }
}

/** Runs `fn` with these variables in this process's environment. */
async function withEnv (vars, fn) {
  const saved = {}
  for (const key of Object.keys(vars)) {
    saved[key] = process.env[key]
    if (vars[key] === undefined) delete process.env[key]
    else process.env[key] = vars[key]
  }
  try {
    return await fn()
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  }
}

for (const kind of ['sync', 'async']) {
  test(`a failed at-least-once message comes again with its attempt (${kind} handler)`, { timeout: 30000 }, async () => {
    const env = natsEnv()
    const usersDir = serviceDir({
      role: 'users',
      receives: ['users.create'],
      sends: ['users.created'],
      files: { 'server.js': USERS }
    })
    const users = startNode(usersDir, 'server.js', { ...env, ROLE: 'users', HANDLER: kind })
    const webDir = serviceDir({ role: 'web', receives: ['users.created'], sends: ['users.create'] })
    const created = []
    let web
    try {
      await users.waitFor(/online at port \d+/, 20000, 'stdout')
      await withEnv({ ...env, ROLE: undefined }, async () => {
        web = new ExoService({ configPath: webDir, handleSignals: false })
        web.handle('users.created', (payload) => { created.push(payload) })
        await web.connect()
      })
      assert.equal(web.role, 'web')

      web.send('users.create', { name: 'ann' })
      assert.ok(await until(() => created.length >= 1, 15000),
        `no users.created within 15 s\n--- users stdout\n${users.stdout}\n--- users stderr\n${users.stderr}`)
      // Nothing polls for "no more": give a third attempt (due 2 delays
      // after the second) and a second reply time to show up, bounded.
      await sleep(REDELIVERY_DELAY_MS * 5)
      assert.deepEqual(created, [{ name: 'ann', attempts: [1, 2] }])
      assert.deepEqual(users.stdout.match(/^attempt \d+$/gm), ['attempt 1', 'attempt 2'])
      assert.match(users.stderr, /the first attempt fails/)
    } finally {
      if (web) await web.close()
      users.kill('SIGTERM')
      await users.waitExit(10000).catch(() => users.stop())
    }
  })
}

test('deliveryAttempt is 1 on ExoCom', { timeout: 20000 }, async () => {
  const bus = await MockBus.start()
  const svc = new ExoService({
    role: 'svc',
    receives: ['ping'],
    sends: ['pong'],
    exocomHost: '127.0.0.1',
    exocomPort: bus.port,
    handleSignals: false,
    handlers: { ping: (payload, { reply, deliveryAttempt }) => reply('pong', deliveryAttempt) }
  })
  try {
    await svc.connect()
    await bus.sendToService('svc', 'ping')
    assert.equal((await bus.waitFor('pong', 5000)).payload, 1)
  } finally {
    await svc.close()
    await bus.shutdown()
  }
})
