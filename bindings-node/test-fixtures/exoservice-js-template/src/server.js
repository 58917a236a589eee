const {bootstrap} = require('exoservice-native')

bootstrap({

  beforeAll: (done) => {
    // asynchronous set-up goes here (the template leaves it empty)
    done()
  },

  // answers "ping" with "pong"
  ping: (_, {reply}) => {
    reply('pong')
  }

})
