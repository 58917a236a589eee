// The ping service in Node: answers `ping` with `pong`, echoing the payload.
//
// Build the binding once with `bindings-node/dev-setup` (or `npm install
// ../../bindings-node`), then run it inside an app with `exo run`, or on its
// own against a running bus: `EXOCOM_PORT=3100 node server.js`.

const { bootstrap } = require('../../bindings-node')

bootstrap({
  ping: (payload, { reply }) => reply('pong', payload)
})
