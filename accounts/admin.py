"""`python server.py admin ...`: manage local accounts from the command line.

    admin create-user EMAIL USERNAME [--password-stdin]
    admin reset-password EMAIL [--password-stdin]   (also signs the user out everywhere)
    admin set-plan USER PLAN                         (USER: id, email or username)
    admin list-users

Without --password-stdin a random password is made and printed once.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import uuid
from pathlib import Path
from typing import IO, Any

from accounts.passwords import Passwords
from accounts.service import check_email, check_password, check_username, iso
from store import accounts as sql
from store.db import Database, WriteTx, now_ms
from store.errors import Conflict


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server.py admin", description="manage local accounts")
    p.add_argument("--data-dir", type=Path, default=None, help="overrides the server's data directory")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create-user", help="create a confirmed account")
    c.add_argument("email")
    c.add_argument("username")
    c.add_argument("--password-stdin", action="store_true")
    r = sub.add_parser("reset-password", help="set a new password and revoke every session")
    r.add_argument("email")
    r.add_argument("--password-stdin", action="store_true")
    s = sub.add_parser("set-plan", help="set a user's plan")
    s.add_argument("user")
    s.add_argument("plan")
    sub.add_parser("list-users", help="list the accounts (tab-separated)")
    return p


def _password(args: argparse.Namespace, stdin: IO[str], out: IO[str]) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    password = secrets.token_urlsafe(12)
    print(f"password: {password}", file=out)
    return password


async def admin_main(argv: list[str], data_dir: Path, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                     passwords: Passwords | None = None) -> int:
    """Run one admin command; 0 on success, 1 on a refused command (message on stderr-like `stdout`)."""
    out = stdout or sys.stdout
    args = parser().parse_args(argv)
    db = Database((args.data_dir or data_dir).resolve() / "parley.db")
    await db.open()
    pw = passwords or Passwords()
    try:
        return await _run(args, db, pw, stdin or sys.stdin, out)
    finally:
        if passwords is None:
            pw.close()
        await db.close()


async def _find(db: Database, key: str) -> dict[str, Any] | None:
    for column, value in (("id", key), ("email", key.lower()), ("username", key)):
        user = await _user_by(db, column, value)
        if user is not None:
            return user
    return None


async def _user_by(db: Database, column: str, value: str) -> dict[str, Any] | None:
    return await db.read(lambda conn: sql.user_by(conn, column, value))


async def _run(args: argparse.Namespace, db: Database, pw: Passwords, stdin: IO[str], out: IO[str]) -> int:
    errors: list[dict[str, str]] = []
    if args.command == "create-user":
        email = check_email(args.email, errors)
        username = check_username(args.username, errors)
        password = _password(args, stdin, out)
        check_password(password, errors)
        if errors:
            print("; ".join(f"{e['field']}: {e['message']}" for e in errors), file=out)
            return 1
        user: dict[str, Any] = {"id": str(uuid.uuid4()), "email": email, "username": username,
                "password_hash": await pw.hash(password), "created_at": now_ms(), "email_confirmed_at": now_ms()}
        try:
            await db.write(lambda tx: sql.insert_user(tx, user))
        except Conflict as exc:
            print(f"refused: {exc}", file=out)
            return 1
        print(f"created {user['id']} {email} {username}", file=out)
        return 0
    if args.command == "reset-password":
        found = await _find(db, args.email)
        if found is None:
            print("no such user", file=out)
            return 1
        password = _password(args, stdin, out)
        if not check_password(password, errors):
            print(errors[0]["message"], file=out)
            return 1
        new_hash = await pw.hash(password)
        user_id: str = found["id"]

        def reset(tx: WriteTx) -> int:
            sql.update_user(tx, user_id, {"password_hash": new_hash})
            return sql.revoke_user(tx, user_id)

        revoked = await db.write(reset)
        print(f"password reset for {found['email']}; {revoked} session token(s) revoked", file=out)
        return 0
    if args.command == "set-plan":
        found = await _find(db, args.user)
        if found is None:
            print("no such user", file=out)
            return 1
        plan_user: str = found["id"]
        await db.write(lambda tx: sql.update_user(tx, plan_user, {"plan": args.plan}))
        print(f"plan of {found['email']} is now {args.plan}", file=out)
        return 0
    users = await db.read(sql.all_users)
    print("id\temail\tusername\tplan\tcreated_at", file=out)
    for u in users:
        print(f"{u['id']}\t{u['email']}\t{u['username']}\t{u['plan']}\t{iso(u['created_at'])}", file=out)
    return 0
