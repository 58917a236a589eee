'use strict'
// Loads the native addon built by `npm install` (scripts/build.js).

const path = require('node:path')

const file = path.join(__dirname, '..', 'exoservice_native.node')
let addon
try {
  addon = require(file)
} catch (e) {
  const err = new Error(
    `exoservice-native: cannot load the native addon ${file} (${e.message}). ` +
    `Build it with \`npm install\` in ${path.dirname(file)} (needs cargo).`)
  err.code = 'EXO_ADDON'
  throw err
}
module.exports = addon
