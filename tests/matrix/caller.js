'use strict'
// The Node caller of the cross-language matrix (tests/matrix.rs).
//
// Usage: node caller.js TIMEOUT_MS AUTH_JSON PAYLOAD_FILE...
//
// Runs in tests/matrix (service.yml) with ROLE, EXOCOM_HOST and EXOCOM_PORT
// set; requests `ping` once per payload file, carrying AUTH_JSON, and prints
// one line per request: `RESULT {"ok": true, "name", "payload", "auth",
// "elapsed_ms"}`, or `RESULT {"ok": false, "error": "timeout" | "other",
// "type", "message", "elapsed_ms"}`.

const fs = require('node:fs')
const path = require('node:path')
const { ExoService, TimeoutError } = require(path.join(__dirname, '..', '..', 'bindings-node'))

async function main () {
  const timeout = Number(process.argv[2])
  const auth = JSON.parse(process.argv[3])
  const service = new ExoService({ configPath: process.cwd(), handleSignals: false })
  await service.connect()
  try {
    for (const file of process.argv.slice(4)) {
      const payload = JSON.parse(fs.readFileSync(file, 'utf8'))
      const started = process.hrtime.bigint()
      let out
      try {
        const reply = await service.request('ping', payload, { timeout, full: true, auth })
        out = { ok: true, name: reply.name, payload: reply.payload, auth: reply.auth }
      } catch (e) {
        const kind = e instanceof TimeoutError ? 'timeout' : 'other'
        out = { ok: false, error: kind, type: e.name, code: e.code, message: e.message }
      }
      out.elapsed_ms = Number((process.hrtime.bigint() - started) / 1000000n)
      process.stdout.write('RESULT ' + JSON.stringify(out) + '\n')
    }
  } finally {
    await service.close()
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exitCode = 1
})
