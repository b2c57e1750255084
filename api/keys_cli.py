"""`python -m api keys ...`: API key management from the shell, straight on the database
(for the first admin key, and for scripts: `create` prints only the key on stdout).

    python -m api keys create --scope admin [--scope read ...] [--name NAME]
                              [--output FILE [--reuse]]
    python -m api keys list
    python -m api keys revoke KEY_ID
    python -m api keys generate      # a fresh key for API_BOOTSTRAP_ADMIN_KEY, not stored
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from api.keys import Scope, generate_key, key_hash, normalize_scopes
from api.settings import ApiSettings
from db import Connection
from db.api_keys import find_api_key, insert_api_key, list_api_keys, revoke_api_key


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m api keys", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="store a new key and print it once")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="repeat for several; admin implies every other scope",
    )
    create.add_argument("--name", default="", help="who or what uses the key")
    create.add_argument(
        "--output",
        type=Path,
        help="write the key to this file (mode 0600) instead of printing it",
    )
    create.add_argument(
        "--reuse",
        action="store_true",
        help="with --output: keep the file's key if it is still valid with these scopes",
    )
    sub.add_parser("list", help="every key, without secrets")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    sub.add_parser("generate", help="print a fresh key without storing it")
    return p


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that existed
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    tmp.replace(path)


async def _still_valid(conn: Connection, existing: str | None, scopes: list[str]) -> bool:
    if existing is None:
        return False
    try:
        key_id, secret_hash = key_hash(existing.strip())
    except ValueError:
        return False
    row = await find_api_key(conn, key_id)
    return (
        row is not None
        and row["revoked_at"] is None
        and bytes(row["secret_hash"]) == secret_hash
        and set(scopes) <= set(row["scopes"])
    )


async def _create(conn: Connection, args: argparse.Namespace, settings: ApiSettings) -> int:
    scopes = normalize_scopes(args.scopes)
    existing = (
        args.output.read_text() if args.output and args.reuse and args.output.exists() else None
    )
    if await _still_valid(conn, existing, scopes):
        print(f"keys: kept the valid key in {args.output}", file=sys.stderr)
        return 0
    new = generate_key()
    row = await insert_api_key(
        conn, key_id=new.key_id, name=args.name, scopes=scopes, secret_hash=new.secret_hash
    )
    if row is None:
        print("keys: generated id already taken, run again", file=sys.stderr)
        return 1
    what = f"API key {new.key_id} ({', '.join(scopes)})"
    if args.output:
        api = f"http://{settings.api_host}:{settings.api_port}"
        _write_private(args.output, new.token + "\n")
        print(
            f"keys: {what} written to {args.output} (mode 0600); send it as\n"
            f'    curl -H "X-API-Key: $(cat {args.output})" {api}/api/robots',
            file=sys.stderr,
        )
    else:
        print(f"keys: {what}; shown this once, only its hash is stored", file=sys.stderr)
        print(new.token)
    return 0


async def _run(args: argparse.Namespace) -> int:
    settings = ApiSettings()
    conn: Connection = await asyncpg.connect(settings.database_url)
    try:
        if args.command == "create":
            return await _create(conn, args, settings)
        if args.command == "list":
            after = ""
            while rows := await list_api_keys(conn, after_id=after, limit=500):
                for r in rows:
                    state = f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else ""
                    print(f"{r['id']}  {','.join(r['scopes']):<28} {r['name']:<24} {state}")
                after = rows[-1]["id"]
            return 0
        assert args.command == "revoke"
        if await revoke_api_key(conn, args.key_id) is None:
            print(f"keys: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"keys: revoked {args.key_id}", file=sys.stderr)
        return 0
    finally:
        await conn.close()


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        print(generate_key().token)
        return 0
    try:
        return asyncio.run(_run(args))
    except asyncpg.UndefinedTableError:
        print("keys: no api_keys table: run `python -m db migrate` first", file=sys.stderr)
        return 1
