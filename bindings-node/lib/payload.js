'use strict'
// Payloads cross to the core as JSON text.

const { PayloadError } = require('./errors')

// A value as JSON text; `null` for no payload (undefined or null).
function encode (name, payload) {
  if (payload === undefined || payload === null) return null
  let text
  try {
    text = JSON.stringify(payload)
  } catch (e) {
    throw new PayloadError(`invalid payload for '${name}': ${e.message}`)
  }
  if (text === undefined) {
    throw new PayloadError(`invalid payload for '${name}': a ${typeof payload} is not JSON`)
  }
  return text
}

// JSON text (or null) as a value; no payload reads as null.
function decode (text) {
  return text == null ? null : JSON.parse(text)
}

// A message in wire form (JSON text) as an object.
function message (text) {
  const m = JSON.parse(text)
  return {
    name: m.name,
    id: m.id ?? null,
    activityId: m.activityId ?? null,
    sender: m.sender ?? null,
    payload: m.payload ?? null,
    auth: m.auth ?? null,
    isSecurity: m.isSecurity === true,
    timestamp: m.timestamp ?? null,
    responseTime: m.responseTime ?? null
  }
}

module.exports = { encode, decode, message }
