"""The Python caller of the cross-language matrix (tests/matrix.rs).

Usage: caller.py TIMEOUT_MS AUTH_JSON PAYLOAD_FILE...

Runs in tests/matrix (service.yml) with ROLE, EXOCOM_HOST and EXOCOM_PORT
set; requests `ping` once per payload file, carrying AUTH_JSON, and prints
one line per request: `RESULT {"ok": true, "name", "payload", "auth",
"elapsed_ms"}`, or `RESULT {"ok": false, "error": "timeout" | "other",
"type", "message", "elapsed_ms"}`.
"""

import json
import sys
import time
from pathlib import Path

from exoservice import RequestTimeout, Service
from exoservice.testing import running


def main() -> int:
    timeout = int(sys.argv[1]) / 1000
    auth = json.loads(sys.argv[2])
    service = Service(Path.cwd())
    with running(service, timeout=10):
        for file in sys.argv[3:]:
            payload = json.loads(Path(file).read_text(encoding="utf-8"))
            started = time.monotonic()
            try:
                reply = service.request("ping", payload, timeout=timeout, auth=auth)
                out = {"ok": True, "name": reply.name, "payload": reply.payload, "auth": reply.auth}
            except RequestTimeout as e:
                out = {"ok": False, "error": "timeout", "type": type(e).__name__, "message": str(e)}
            except Exception as e:  # reported, not a crash: the test says which
                out = {"ok": False, "error": "other", "type": type(e).__name__, "message": str(e)}
            out["elapsed_ms"] = round((time.monotonic() - started) * 1000)
            print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
