'use strict'
// Migration: a service made by the exoservice-js template runs with only its
// require changed, in a fresh directory where `npm install` built the addon.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { MockBus } = require('exoservice-native/testing')
const { PKG, tempDir, startNode } = require('../test-support/harness')

const TEMPLATE = path.join(PKG, 'test-fixtures', 'exoservice-js-template')

test('npm install of the package directory builds the addon; the template service answers ping', { timeout: 300000 }, async () => {
  const dir = tempDir('exoservice-fresh-')
  fs.cpSync(TEMPLATE, dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'template-ping', private: true }))
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', PKG], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 280000,
    env: { ...process.env, EXOSERVICE_NODE_PROFILE: process.env.EXOSERVICE_NODE_PROFILE || 'debug' }
  })
  assert.equal(install.status, 0, `npm install failed\n${install.stdout}\n${install.stderr}`)
  assert.match(install.stdout + install.stderr, /exoservice-native: built /, 'the install step did not build the addon')
  assert.ok(fs.existsSync(path.join(dir, 'node_modules', 'exoservice-native', 'index.js')))
  const server = fs.readFileSync(path.join(dir, 'src', 'server.js'), 'utf8')
  assert.match(server, /require\('exoservice-native'\)/)

  const bus = await MockBus.start()
  // exo run starts it from the service directory as `node src/server.js`.
  const svc = startNode(dir, 'src/server.js', { EXOCOM_PORT: String(bus.port) })
  try {
    await svc.waitFor(/online at port \d+/, 15000, 'stdout')
    await bus.waitForRegistration('template-ping', 5000)
    const sent = await bus.sendToService('template-ping', 'ping', null)
    const pong = await bus.waitFor('pong', 5000)
    assert.equal(pong.activityId, sent.activityId)
    assert.equal(pong.payload, null)
    svc.kill('SIGTERM')
    assert.equal((await svc.waitExit(10000)).code, 0)
  } finally {
    await svc.stop()
    await bus.shutdown()
  }
})
