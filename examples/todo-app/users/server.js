// The users service: who exists. Kept in memory.
//
//   find user    {name} -> users.details {name, since} | users.not-found {name}
//   users.create {name} -> users.created {name, since}
//
// "find user" is this service's internal name for the public "users.get":
// application.yml translates it, the rest of the app never sees it.
const { bootstrap } = require('../../../bindings-node')

const users = new Map()

bootstrap({
  beforeAll: done => {
    users.clear()
    done()
  },
  'find user': (payload, { reply }) => {
    const user = users.get(payload && payload.name)
    if (user) reply('users.details', user)
    else reply('users.not-found', { name: payload && payload.name })
  },
  'users.create': (payload, { reply }) => {
    const name = payload && payload.name
    if (typeof name !== 'string' || name === '') throw new Error('users.create needs a string name')
    const user = users.get(name) || { name, since: new Date().toISOString() }
    users.set(name, user)
    reply('users.created', user)
  },
})
