#!/usr/bin/env node
'use strict'
// The install step of exoservice-native: builds the addon with cargo and
// copies the library to exoservice_native.node (no prebuilt download).
//
// Environment:
//   EXOSERVICE_NODE_PROFILE  release (default) or debug
//   CARGO                    the cargo to run (default: cargo on PATH, then ~/.cargo/bin/cargo)
//   CARGO_TARGET_DIR         honoured by cargo as usual

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.join(__dirname, '..')
const out = path.join(root, 'exoservice_native.node')

function fail (msg) {
  process.stderr.write(`exoservice-native: ${msg}\n`)
  process.exit(1)
}

function findCargo () {
  if (process.env.CARGO) return process.env.CARGO
  const probe = spawnSync('cargo', ['--version'], { stdio: 'ignore' })
  if (!probe.error && probe.status === 0) return 'cargo'
  const home = path.join(os.homedir(), '.cargo', 'bin', 'cargo')
  if (fs.existsSync(home)) return home
  fail('cargo is needed to build the native addon; install Rust (https://rustup.rs) and run `npm install` again')
}

const profile = process.env.EXOSERVICE_NODE_PROFILE || 'release'
if (profile !== 'release' && profile !== 'debug') {
  fail(`EXOSERVICE_NODE_PROFILE must be release or debug, not ${JSON.stringify(profile)}`)
}

const args = ['build', '--lib', '-p', 'exoservice-node', '--message-format=json-render-diagnostics']
if (profile === 'release') args.push('--release')
process.stderr.write(`exoservice-native: cargo ${args.join(' ')}\n`)
const build = spawnSync(findCargo(), args, {
  cwd: root,
  stdio: ['ignore', 'pipe', 'inherit'],
  maxBuffer: 256 * 1024 * 1024,
  encoding: 'utf8'
})
if (build.error) fail(`cannot run cargo: ${build.error.message}`)
if (build.status !== 0) fail(`cargo build failed (exit ${build.status})`)

const libExt = process.platform === 'darwin' ? '.dylib' : process.platform === 'win32' ? '.dll' : '.so'
let lib = null
for (const line of build.stdout.split('\n')) {
  if (!line.startsWith('{')) continue
  let event
  try { event = JSON.parse(line) } catch { continue }
  if (event.reason !== 'compiler-artifact' || !event.target || event.target.name !== 'exoservice_node') continue
  lib = (event.filenames || []).find((f) => f.endsWith(libExt)) || lib
}
if (!lib) fail('cargo built no exoservice_node library (is crate-type cdylib set?)')

// Copy next to the old addon, then rename: a process that has the old one
// loaded keeps its mapping intact.
const tmp = `${out}.${process.pid}.tmp`
fs.copyFileSync(lib, tmp)
fs.renameSync(tmp, out)
process.stderr.write(`exoservice-native: built ${path.relative(process.cwd(), out) || out} (${profile}) from ${lib}\n`)
