'use strict'
// Starting, stopping and failing: before-all, close(), signals, config errors,
// reconnects.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { MockBus } = require('exoservice-native/testing')
const { serviceDir, startNode, sleep } = require('../test-support/harness')

async function withBus (fn) {
  const bus = await MockBus.start()
  const procs = []
  try {
    await fn(bus, procs)
  } finally {
    for (const p of procs) await p.stop()
    await bus.shutdown()
  }
}

test('beforeAll(done) runs before the service registers', { timeout: 20000 }, () => withBus(async (bus, procs) => {
  const dir = serviceDir({
    role: 'hooked',
    receives: ['ping'],
    sends: ['pong'],
    files: {
      'server.js': `
const { bootstrap } = require('exoservice-native')
bootstrap({
  beforeAll: (done) => {
    console.log('before-all started')
    setTimeout(() => { console.log('before-all done'); done() }, 700)
  },
  ping: (payload, { reply }) => reply('pong', payload)
})
`
    }
  })
  const svc = startNode(dir, 'server.js', { EXOCOM_PORT: String(bus.port) })
  procs.push(svc)
  await svc.waitFor(/before-all started/, 10000, 'stdout')
  await sleep(300)
  assert.equal(bus.instances('hooked'), 0, 'registered while the before-all hook ran')
  await svc.waitFor(/online at port \d+/, 10000, 'stdout')
  const out = svc.stdout
  assert.ok(out.indexOf('before-all done') < out.indexOf('online at port'), out)
  await bus.waitForRegistration('hooked', 5000)
  await bus.sendToService('hooked', 'ping', 1)
  assert.equal((await bus.waitFor('pong', 5000)).payload, 1)
}))

test('an async beforeAll is awaited; a failing one stops the start with exit code 1', { timeout: 20000 }, () => withBus(async (bus, procs) => {
  const mk = (hook) => serviceDir({
    role: 'hooked',
    receives: ['ping'],
    sends: ['pong'],
    files: {
      'server.js': `
const { bootstrap } = require('exoservice-native')
bootstrap({ beforeAll: ${hook}, ping: (p, { reply }) => reply('pong', p) })
`
    }
  })
  const ok = startNode(mk(`async ({ send }) => {
    await new Promise((r) => setTimeout(r, 200))
    send('pong', 'sent by the hook')
    console.log('awaited')
  }`), 'server.js', { EXOCOM_PORT: String(bus.port) })
  procs.push(ok)
  await ok.waitFor(/awaited\n(.|\n)*online at port/, 10000, 'stdout')
  // What the hook sends goes out once registered.
  assert.equal((await bus.waitFor('pong', 5000)).payload, 'sent by the hook')

  const bad = startNode(mk(`(done) => done(new Error('no database'))`), 'server.js', { EXOCOM_PORT: String(bus.port) })
  procs.push(bad)
  const exit = await bad.waitExit(10000)
  assert.equal(exit.code, 1)
  assert.match(bad.stderr, /no database/)
  assert.doesNotMatch(bad.stdout, /online at port/)
}))

test('close() drains and lets the process exit by itself', { timeout: 20000 }, () => withBus(async (bus, procs) => {
  const dir = serviceDir({
    role: 'closer',
    receives: ['slow'],
    sends: ['slow-done'],
    files: {
      'server.js': `
const { ExoService } = require('exoservice-native')
const service = new ExoService({ configPath: __dirname })
service.handle('slow', async (payload, { reply }) => {
  console.log('slow started')
  await new Promise((r) => setTimeout(r, 400))
  reply('slow-done', payload)
})
service.on('offline', () => console.log('event offline'))
service.on('close', (report) => console.log('closed ' + JSON.stringify(report)))
service.connect().then(() => console.log('connected'))
// close() once the test says so; then nothing is left to keep the loop alive.
const timer = setInterval(() => {
  if (require('node:fs').existsSync(__dirname + '/go')) {
    clearInterval(timer)
    service.close()
  }
}, 20)
`
    }
  })
  const svc = startNode(dir, 'server.js', { EXOCOM_PORT: String(bus.port) })
  procs.push(svc)
  await svc.waitFor(/connected/, 10000, 'stdout')
  await bus.sendToService('closer', 'slow', 'x')
  await svc.waitFor(/slow started/, 5000, 'stdout')
  require('node:fs').writeFileSync(`${dir}/go`, '')
  const exit = await svc.waitExit(8000)
  assert.equal(exit.code, 0, svc.stderr)
  assert.equal((await bus.waitFor('slow-done', 1000)).payload, 'x', 'the running handler was not drained')
  assert.match(svc.stdout, /event offline/)
  assert.match(svc.stdout, /closed \{"unfinishedHandlers":0,"unsentMessages":0,"unhandledMessages":0\}/)
}))

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`${signal} lets running handlers finish, then the process exits`, { timeout: 20000 }, () => withBus(async (bus, procs) => {
    const dir = serviceDir({
      role: 'sig',
      receives: ['slow'],
      sends: ['slow-done'],
      files: {
        'server.js': `
const { bootstrap } = require('exoservice-native')
bootstrap({
  slow: async (payload, { reply }) => {
    console.log('slow started')
    await new Promise((r) => setTimeout(r, 500))
    reply('slow-done', payload)
  }
})
`
      }
    })
    const svc = startNode(dir, 'server.js', { EXOCOM_PORT: String(bus.port) })
    procs.push(svc)
    await svc.waitFor(/online at port/, 10000, 'stdout')
    await bus.sendToService('sig', 'slow', 42)
    await svc.waitFor(/slow started/, 5000, 'stdout')
    svc.kill(signal)
    const exit = await svc.waitExit(8000)
    assert.equal(exit.code, 0, svc.stderr)
    assert.equal((await bus.waitFor('slow-done', 1000)).payload, 42)
    assert.match(svc.stderr, new RegExp(`${signal}: stopping`))
  }))
}

test('a config error names the file, line and column, and exits with code 1', { timeout: 20000 }, async () => {
  const dir = serviceDir({
    role: 'x',
    yml: 'type: broken\nmessages:\n  receives: 42\n  sends: [pong]\n',
    files: { 'server.js': `require('exoservice-native').bootstrap({ ping: () => {} })\n` }
  })
  const svc = startNode(dir, 'server.js', { EXOCOM_PORT: '1' })
  const exit = await svc.waitExit(10000)
  assert.equal(exit.code, 1)
  assert.match(svc.stderr, /service\.yml:3:\d+: /)
})

test('a handler for a message that is not received is an error at start-up', { timeout: 20000 }, async () => {
  const dir = serviceDir({
    role: 'x',
    receives: ['ping'],
    sends: ['pong'],
    files: { 'server.js': `require('exoservice-native').bootstrap({ ping: () => {}, pang: () => {} })\n` }
  })
  const svc = startNode(dir, 'server.js', { EXOCOM_PORT: '1' })
  const exit = await svc.waitExit(10000)
  assert.equal(exit.code, 1)
  assert.match(svc.stderr, /cannot handle 'pang': it is not declared under 'receives'/)
})

test('errors are ExoError subclasses with a code', { timeout: 10000 }, async () => {
  const x = require('exoservice-native')
  assert.throws(() => new x.ExoService({ configPath: '/nonexistent/service-dir' }),
    (e) => e instanceof x.ConfigError && e instanceof x.ExoError && e instanceof Error && e.code === 'EXO_CONFIG')
  const s = new x.ExoService({ role: 'r', receives: ['a'], sends: ['b'], exocomPort: 1 })
  assert.throws(() => s.handle('zzz', () => {}), (e) => e instanceof x.NotReceivedError && e.code === 'EXO_NOT_RECEIVED')
  s.handle('a', () => {})
  assert.throws(() => s.handle('a', () => {}), (e) => e instanceof x.DuplicateHandlerError && e.code === 'EXO_DUPLICATE_HANDLER')
  assert.throws(() => s.send('a'), (e) => e instanceof x.UndeclaredError && e.code === 'EXO_UNDECLARED')
  const circular = {}
  circular.self = circular
  assert.throws(() => s.send('b', circular), (e) => e instanceof x.PayloadError && e.code === 'EXO_PAYLOAD')
  assert.throws(() => new x.ExoService({ role: 'r', receives: [], sends: [], exocomPort: 70000 }),
    (e) => e instanceof x.UsageError && e.code === 'EXO_USAGE')
  assert.throws(() => new x.ExoService({ role: 'not a role', receives: [], sends: [] }),
    (e) => e instanceof x.ConfigError)
  await s.close()
  assert.throws(() => s.send('b'), (e) => e instanceof x.StoppedError && e.code === 'EXO_STOPPED')
})

test('online and offline follow the connection; the service reconnects', { timeout: 30000 }, async () => {
  const x = require('exoservice-native')
  let bus = await MockBus.start()
  const port = bus.port
  const s = new x.ExoService({ role: 'flaky', receives: ['ping'], sends: ['pong'], exocomHost: '127.0.0.1', exocomPort: port, handleSignals: false })
  s.handle('ping', (p, { reply }) => reply('pong', p))
  const events = []
  s.on('online', () => events.push('online'))
  s.on('offline', () => events.push('offline'))
  try {
    await s.connect()
    assert.deepEqual(events, ['online'])
    assert.equal(s.online, true)
    await bus.shutdown()
    const deadline = Date.now() + 5000
    while (!events.includes('offline') && Date.now() < deadline) await sleep(50)
    assert.deepEqual(events, ['online', 'offline'])
    bus = await MockBus.start(port)
    await bus.waitForRegistration('flaky', 15000)
    const deadline2 = Date.now() + 5000
    while (events.length < 3 && Date.now() < deadline2) await sleep(50)
    assert.deepEqual(events, ['online', 'offline', 'online'])
    await bus.sendToService('flaky', 'ping', 'again')
    assert.equal((await bus.waitFor('pong', 5000)).payload, 'again')
  } finally {
    await s.close()
    await bus.shutdown()
  }
  assert.equal(events.at(-1), 'offline')
})
