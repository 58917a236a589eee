'use strict'
// Node and Rust services over the real bus (target/debug/exocom).

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { ROOT, BIN, serviceDir, startNode, startExocom, Proc } = require('../test-support/harness')

const CALLER = `
const { ExoService } = require('exoservice-native')
const service = new ExoService({ configPath: __dirname })
service.connect().then(async () => {
  const answers = []
  for (let i = 0; i < 20; i++) {
    answers.push(await service.request('ping', { n: i, from: 'node' }, { timeout: 5000, full: true }))
  }
  console.log('ANSWERS ' + JSON.stringify(answers))
  await service.close()
}).catch((e) => { console.error(e.stack); process.exitCode = 1; service.close() })
`

async function stopAll (procs) {
  for (const p of procs) await p.stop()
}

test('a Node service requests ping from the Rust ping service over exocom', { timeout: 60000 }, async () => {
  const rustPing = path.join(BIN, 'rust-ping')
  assert.ok(fs.existsSync(rustPing), `${rustPing} is missing: run bindings-node/dev-setup`)
  const bus = await startExocom({
    ping: { receives: ['ping'], sends: ['pong'] },
    'node-caller': { receives: ['pong'], sends: ['ping'] }
  })
  const procs = [bus.proc]
  try {
    const rust = new Proc(rustPing, [], {
      cwd: path.join(ROOT, 'examples', 'rust-ping'),
      env: { ...process.env, ROLE: 'ping', EXOCOM_HOST: '127.0.0.1', EXOCOM_PORT: String(bus.port) }
    })
    procs.push(rust)
    await rust.waitFor(/online at port/, 15000, 'stdout')
    const dir = serviceDir({ role: 'node-caller', receives: ['pong'], sends: ['ping'], files: { 'caller.js': CALLER } })
    const caller = startNode(dir, 'caller.js', { EXOCOM_PORT: String(bus.port) })
    procs.push(caller)
    const exit = await caller.waitExit(30000)
    assert.equal(exit.code, 0, caller.stderr)
    const answers = JSON.parse(/ANSWERS (.*)/.exec(caller.stdout)[1])
    assert.equal(answers.length, 20)
    answers.forEach((m, i) => {
      assert.equal(m.name, 'pong')
      assert.deepEqual(m.payload, { n: i, from: 'node' })
      assert.equal(m.sender, 'ping')
    })
  } finally {
    await stopAll(procs)
  }
})

test('Rust (exo send) pings the Node example service over exocom', { timeout: 60000 }, async () => {
  const exo = path.join(BIN, 'exo')
  assert.ok(fs.existsSync(exo), `${exo} is missing: run bindings-node/dev-setup`)
  const bus = await startExocom({
    'node-ping': { receives: ['ping'], sends: ['pong'] },
    exo: { receives: ['pong'], sends: ['ping'] }
  })
  const procs = [bus.proc]
  try {
    const node = startNode(path.join(ROOT, 'examples', 'node-ping'), 'server.js', {
      ROLE: 'node-ping',
      EXOCOM_PORT: String(bus.port)
    })
    procs.push(node)
    await node.waitFor(/online at port \d+/, 15000, 'stdout')
    for (const payload of ['{"n":1,"nested":{"list":[1,2,3]}}', '"text"', '[true,null,2.5]']) {
      const send = spawnSync(exo, ['send', 'ping', payload, '--await', '--json', '--role', 'exo',
        '--host', '127.0.0.1', '--port', String(bus.port), '--timeout', '10'], { encoding: 'utf8', timeout: 20000 })
      assert.equal(send.status, 0, send.stderr)
      const reply = JSON.parse(send.stdout.trim().split('\n').pop())
      assert.equal(reply.name, 'pong')
      assert.equal(reply.sender, 'node-ping')
      assert.equal(JSON.stringify(reply.payload), JSON.stringify(JSON.parse(payload)))
    }
    node.kill('SIGTERM')
    assert.equal((await node.waitExit(10000)).code, 0, node.stderr)
  } finally {
    await stopAll(procs)
  }
})
