"""The todo service: each person's list, persisted in SQLite.

Messages (payloads are JSON objects):
  todo.add    {owner, text} -> todo.added   {owner, id, text}
  todo.list   {owner}       -> todo.listing {owner, items: [{id, text}]}
  todo.delete {owner, id}   -> todo.deleted {owner, id} | todo.not-found {owner, id}

The database file is $TODO_DB, default data/todos.sqlite3 beside this file.
"""

import os
import sqlite3
from pathlib import Path

from exoservice import Service

DB_PATH = Path(os.environ.get("TODO_DB") or Path(__file__).with_name("data") / "todos.sqlite3")

service = Service()
db = None


@service.before_all
def open_db():
    global db
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(DB_PATH, check_same_thread=False)
    db.execute(
        "CREATE TABLE IF NOT EXISTS todos ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, text TEXT NOT NULL)"
    )
    db.commit()


def owner_of(payload):
    owner = payload.get("owner") if isinstance(payload, dict) else None
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"expected a payload with a string 'owner', got {payload!r}")
    return owner


@service.handler("todo.add")
def add(payload, ctx):
    owner = owner_of(payload)
    text = str(payload.get("text", "")).strip()
    if not text:
        raise ValueError("todo.add needs a non-empty 'text'")
    cur = db.execute("INSERT INTO todos (owner, text) VALUES (?, ?)", (owner, text))
    db.commit()
    ctx.reply("todo.added", {"owner": owner, "id": cur.lastrowid, "text": text})


@service.handler("todo.list")
def list_todos(payload, ctx):
    owner = owner_of(payload)
    rows = db.execute("SELECT id, text FROM todos WHERE owner = ? ORDER BY id", (owner,))
    items = [{"id": row[0], "text": row[1]} for row in rows]
    ctx.reply("todo.listing", {"owner": owner, "items": items})


@service.handler("todo.delete")
def delete(payload, ctx):
    owner = owner_of(payload)
    try:
        todo_id = int(payload.get("id"))
    except (TypeError, ValueError):
        ctx.reply("todo.not-found", {"owner": owner, "id": payload.get("id")})
        return
    cur = db.execute("DELETE FROM todos WHERE owner = ? AND id = ?", (owner, todo_id))
    db.commit()
    if cur.rowcount:
        ctx.reply("todo.deleted", {"owner": owner, "id": todo_id})
    else:
        ctx.reply("todo.not-found", {"owner": owner, "id": todo_id})


if __name__ == "__main__":
    service.run()
