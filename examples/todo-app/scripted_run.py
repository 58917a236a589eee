#!/usr/bin/env python3
"""A short scripted run of the todo app through its HTTP front: add, list,
delete, stats. Prints each call and its answer. Standard library only.

Usage: scripted_run.py [--port 3000] [--wait 120]
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    shown = f" {json.dumps(body, ensure_ascii=False)}" if body is not None else ""
    print(f"demo | {method} {path}{shown}  ->  {status} {text}", flush=True)
    return status, json.loads(text) if text else None


def wait_until_up(base, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(base + "/stats", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"demo: the todo app did not answer at {base} within {seconds} s")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--wait", type=float, default=120)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    wait_until_up(base, args.wait)

    status, milk = call(base, "POST", "/todos/alice", {"text": "buy milk"})
    if status != 201:
        sys.exit("demo: adding a todo failed")
    call(base, "POST", "/todos/alice", {"text": "water the plants 🌱"})
    call(base, "POST", "/todos/bob", {"text": "fix the bike"})
    call(base, "GET", "/todos/alice")
    call(base, "GET", "/stats")
    status, _ = call(base, "DELETE", f"/todos/alice/{milk['id']}")
    if status != 200:
        sys.exit("demo: deleting a todo failed")
    call(base, "DELETE", f"/todos/alice/{milk['id']}")
    call(base, "GET", "/todos/alice")
    status, stats = call(base, "GET", "/stats")
    if status != 200:
        sys.exit("demo: stats failed")


if __name__ == "__main__":
    main()
