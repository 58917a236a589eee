"""The ping service in Python: answers `ping` with `pong`, echoing the payload.

Run it inside an app with `exo run`, or on its own against a running bus:
`EXOCOM_PORT=3100 ../../.venv/bin/python server.py` (set up the repository's
virtualenv first with `bindings-python/dev-setup`).
"""

from pathlib import Path

from exoservice import Service

# service.yml sits next to this file; ROLE, EXOCOM_HOST and EXOCOM_PORT from
# the environment win over it.
service = Service(Path(__file__).parent)


@service.handler("ping")
def ping(payload, ctx):
    ctx.reply("pong", payload)


if __name__ == "__main__":
    service.run()
