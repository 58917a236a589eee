'use strict'
// Handlers of a Node service in a child process, driven through the mock bus.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { ExoService, PayloadError } = require('exoservice-native')
const { MockBus } = require('exoservice-native/testing')
const { serviceDir, startNode, sleep, freePort } = require('../test-support/harness')

const ROLE = 'tester'
const SERVER = `
const { bootstrap, ExoError, TimeoutError } = require('exoservice-native')
const sleep = (n) => new Promise((r) => setTimeout(r, n))

bootstrap({
  // exoservice-js style: a callback, reply right away.
  ping: (payload, { reply }) => reply('pong', payload),

  // A handler that returns a Promise.
  'ping.async': async (payload, { reply }) => {
    await sleep(50)
    reply('pong.async', payload)
  },

  // exoservice-js style: reply later, from a callback, returning nothing.
  'ping.later': (payload, { reply }) => {
    setTimeout(() => reply('pong.later', payload), 30)
  },

  // The third argument is the activity id.
  'whoami': (payload, { reply, activityId }, third) => reply('you-are', { third, activityId }),

  // send: a new activity, carrying the handler's auth.
  'forward': (payload, { send }) => {
    const activity = send('forwarded', payload)
    send('forward-info', { activity })
  },

  'ask': async (payload, { reply, request }) => {
    const user = await request('users.get', { id: payload.owner }, { timeout: 2000 })
    reply('asked', { ...payload, user })
  },

  'ask.full': async (payload, { reply, request }) => {
    const m = await request('users.get', { id: 1 }, { timeout: 2000, full: true })
    reply('asked', { name: m.name, payload: m.payload, sameActivity: typeof m.activityId === 'string' })
  },

  'ask.auth': async (payload, { reply, request }) => {
    try {
      await request('users.get', {}, { timeout: 300, auth: 'other' })
      reply('asked', 'sent with another auth')
    } catch (e) {
      reply('failed', { name: e.name, code: e.code, message: e.message })
    }
  },

  'ask.timeout': async (payload, { reply, request }) => {
    const started = Date.now()
    try {
      await request('users.get', {}, { timeout: 300 })
      reply('asked', 'no timeout')
    } catch (e) {
      reply('timed-out', {
        name: e.name, code: e.code, message: e.message,
        isExo: e instanceof ExoError, isTimeout: e instanceof TimeoutError,
        waited: Date.now() - started
      })
    }
  },

  // send with a reply handler: called for each message of the activity.
  'watch': (payload, { send }) => {
    send('fan', payload, (name, answer) => send('fan-seen', { name, answer }))
  },

  'boom': () => { throw new Error('boom-sync') },
  'boom.async': async () => { await sleep(10); throw new Error('boom-async') },

  'undeclared': (payload, { reply }) => {
    try {
      reply('not-declared', {})
    } catch (e) {
      reply('failed', { name: e.name, code: e.code, message: e.message })
    }
  }
})
`

let bus
let svc

let metricsPort

before(async () => {
  bus = await MockBus.start()
  const dir = serviceDir({
    role: ROLE,
    receives: ['ping', 'ping.async', 'ping.later', 'whoami', 'forward', 'ask', 'ask.full', 'ask.auth', 'ask.timeout',
      'watch', 'boom', 'boom.async', 'undeclared'],
    sends: ['pong', 'pong.async', 'pong.later', 'you-are', 'forwarded', 'forward-info', 'users.get', 'asked',
      'timed-out', 'fan', 'fan-seen', 'failed'],
    files: { 'server.js': SERVER }
  })
  metricsPort = await freePort()
  svc = startNode(dir, 'server.js', { EXOCOM_PORT: String(bus.port), EXOSERVICE_METRICS_PORT: String(metricsPort) })
  await svc.waitFor(/online at port \d+/, 15000)
  await bus.waitForRegistration(ROLE, 5000)
})

after(async () => {
  if (svc) await svc.stop()
  if (bus) await bus.shutdown()
})

test('a callback handler replies in the activity, echoing the payload', { timeout: 10000 }, async () => {
  const sent = await bus.sendToService(ROLE, 'ping', { n: 1, text: 'hé', list: [1, 2] })
  const pong = await bus.waitFor('pong', 5000)
  assert.deepEqual(pong.payload, { n: 1, text: 'hé', list: [1, 2] })
  assert.equal(pong.activityId, sent.activityId)
  assert.equal(pong.sender, ROLE)
  assert.notEqual(pong.id, sent.id)
})

test('a handler that returns a Promise replies', { timeout: 10000 }, async () => {
  const sent = await bus.sendToService(ROLE, 'ping.async', 'text payload')
  const pong = await bus.waitFor('pong.async', 5000)
  assert.equal(pong.payload, 'text payload')
  assert.equal(pong.activityId, sent.activityId)
})

test('a callback handler may reply after it returned', { timeout: 10000 }, async () => {
  const sent = await bus.sendToService(ROLE, 'ping.later', 7)
  const pong = await bus.waitFor('pong.later', 5000)
  assert.equal(pong.payload, 7)
  assert.equal(pong.activityId, sent.activityId)
})

test('a handler gets the activity id as third argument', { timeout: 10000 }, async () => {
  const sent = await bus.sendToService(ROLE, 'whoami', null)
  const m = await bus.waitFor('you-are', 5000)
  assert.deepEqual(m.payload, { third: sent.activityId, activityId: sent.activityId })
})

test('reply carries the auth and isSecurity of the request', { timeout: 10000 }, async () => {
  const sent = await bus.sendMessage(ROLE, { name: 'ping', payload: 1, auth: { token: 'abc' }, isSecurity: true })
  const pong = await bus.waitFor('pong', 5000)
  assert.equal(pong.activityId, sent.activityId)
  assert.deepEqual(pong.auth, { token: 'abc' })
  assert.equal(pong.isSecurity, true)
})

test('send starts a new activity, carries the auth and returns its id', { timeout: 10000 }, async () => {
  const sent = await bus.sendMessage(ROLE, { name: 'forward', payload: { x: 1 }, auth: 'user-7' })
  const fwd = await bus.waitFor('forwarded', 5000)
  const info = await bus.waitFor('forward-info', 5000)
  assert.deepEqual(fwd.payload, { x: 1 })
  assert.equal(fwd.auth, 'user-7')
  assert.notEqual(fwd.activityId, sent.activityId)
  assert.equal(info.payload.activity, fwd.activityId)
})

test('request resolves with the payload of the answer', { timeout: 10000 }, async () => {
  bus.mockReply('users.get', 'users.got', { name: 'Ada' })
  const sent = await bus.sendToService(ROLE, 'ask', { owner: 3, text: 'milk' })
  const req = await bus.waitFor('users.get', 5000)
  assert.deepEqual(req.payload, { id: 3 })
  assert.notEqual(req.activityId, sent.activityId)
  const asked = await bus.waitFor('asked', 5000)
  assert.deepEqual(asked.payload, { owner: 3, text: 'milk', user: { name: 'Ada' } })
  assert.equal(asked.activityId, sent.activityId)
  bus.reset()
})

test('request with { full: true } resolves with the whole message', { timeout: 10000 }, async () => {
  bus.mockReply('users.get', 'users.not-found', { error: 'no such user' })
  await bus.sendToService(ROLE, 'ask.full', null)
  const asked = await bus.waitFor('asked', 5000)
  assert.deepEqual(asked.payload, { name: 'users.not-found', payload: { error: 'no such user' }, sameActivity: true })
  bus.reset()
})

test("a handler's request refuses the auth option (it carries the handled message's auth)", { timeout: 10000 }, async () => {
  bus.reset()
  await bus.sendMessage(ROLE, { name: 'ask.auth', payload: null, auth: 'mine' })
  const m = await bus.waitFor('failed', 5000)
  assert.equal(m.payload.code, 'EXO_USAGE')
  assert.match(m.payload.message, /auth/)
  await sleep(100)
  assert.equal(bus.received().filter((r) => r.name === 'users.get').length, 0)
})

test("the service's own request sends the auth option, and the answer carries it back", { timeout: 10000 }, async () => {
  bus.reset()
  bus.mockReply('users.get', 'users.got', { name: 'Bo' })
  const service = new ExoService({
    role: 'asker', receives: [], sends: ['users.get'], exocomHost: '127.0.0.1', exocomPort: bus.port, handleSignals: false
  })
  await service.connect()
  try {
    const auth = { token: 't-1', scopes: ['r', 'w'], n: 2 ** 53 }
    const m = await service.request('users.get', { id: 1 }, { timeout: 5000, full: true, auth })
    assert.equal(m.name, 'users.got')
    assert.deepEqual(m.auth, auth)
    assert.deepEqual((await bus.waitFor('users.get', 5000)).auth, auth)
    const plain = await service.request('users.get', null, { timeout: 5000, full: true })
    assert.equal(plain.auth, null)
    await assert.rejects(service.request('users.get', null, { timeout: 5000, auth: 10n }), PayloadError)
  } finally {
    await service.close()
    bus.reset()
  }
})

test('a request without answer rejects with a TimeoutError after its timeout', { timeout: 10000 }, async () => {
  bus.reset()
  await bus.sendToService(ROLE, 'ask.timeout', null)
  const m = await bus.waitFor('timed-out', 5000)
  assert.equal(m.payload.name, 'TimeoutError')
  assert.equal(m.payload.code, 'EXO_TIMEOUT')
  assert.equal(m.payload.isExo, true)
  assert.equal(m.payload.isTimeout, true)
  assert.match(m.payload.message, /users\.get/)
  assert.ok(m.payload.waited >= 280 && m.payload.waited < 3000, `waited ${m.payload.waited} ms`)
})

test('a reply handler gets every message of its activity, not the name handlers', { timeout: 10000 }, async () => {
  await bus.sendToService(ROLE, 'watch', { q: 1 })
  const fan = await bus.waitFor('fan', 5000)
  assert.deepEqual(fan.payload, { q: 1 })
  // Two answers in the fan's activity; one is named like a handled message.
  await bus.sendMessage(ROLE, { name: 'fan-answer', payload: 1, activityId: fan.activityId })
  await bus.sendMessage(ROLE, { name: 'ping', payload: 2, activityId: fan.activityId })
  const seen1 = await bus.waitFor('fan-seen', 5000)
  const seen2 = await bus.waitFor('fan-seen', 5000)
  assert.deepEqual([seen1.payload, seen2.payload], [
    { name: 'fan-answer', answer: 1 },
    { name: 'ping', answer: 2 }
  ])
  await sleep(200)
  assert.equal(bus.received().filter((m) => m.name === 'pong' && m.activityId === fan.activityId).length, 0,
    'the ping of a watched activity went to the ping handler')
})

test('a throwing handler is logged with its stack and the service goes on', { timeout: 10000 }, async () => {
  await bus.sendToService(ROLE, 'boom', null)
  await svc.waitFor(/the handler for 'boom' \(activity [^)]+\) failed: Error: boom-sync\n\s+at /, 5000, 'stderr')
  await bus.sendToService(ROLE, 'boom.async', null)
  await svc.waitFor(/the handler for 'boom\.async' \(activity [^)]+\) failed: Error: boom-async\n\s+at /, 5000, 'stderr')
  const sent = await bus.sendToService(ROLE, 'ping', 'still here')
  const pong = await bus.waitFor('pong', 5000)
  assert.equal(pong.payload, 'still here')
  assert.equal(pong.activityId, sent.activityId)
  assert.equal(svc.exit, null)
})

test('a throw and a rejection count as handler errors in the service metrics', { timeout: 10000 }, async () => {
  // (after the test above: boom and boom.async failed once each)
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
  assert.equal(res.status, 200)
  const text = await res.text()
  assert.match(text, /^exoservice_handler_errors_total\{message="boom"\} 1$/m)
  assert.match(text, /^exoservice_handler_errors_total\{message="boom\.async"\} 1$/m)
  assert.match(text, /^exoservice_handler_errors_total\{message="ping"\} 0$/m)
})

test('sending an undeclared message is an UndeclaredError at the call site', { timeout: 10000 }, async () => {
  await bus.sendToService(ROLE, 'undeclared', null)
  const m = await bus.waitFor('failed', 5000)
  assert.equal(m.payload.name, 'UndeclaredError')
  assert.equal(m.payload.code, 'EXO_UNDECLARED')
  assert.match(m.payload.message, /not-declared.*not declared under 'sends'/)
})

test('many pings in flight are all answered', { timeout: 20000 }, async () => {
  bus.reset()
  const n = 300
  const sent = await Promise.all(Array.from({ length: n }, (_, i) => bus.sendToService(ROLE, 'ping.async', i)))
  const got = new Map()
  for (let i = 0; i < n; i++) {
    const pong = await bus.waitFor('pong.async', 10000)
    got.set(pong.activityId, pong.payload)
  }
  for (const [i, s] of sent.entries()) assert.equal(got.get(s.activityId), i)
})
