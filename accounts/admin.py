"""`python server.py admin ...`: manage local accounts, plans and credits from the command line.

    admin [--config FILE] [--data-dir DIR] COMMAND
    admin create-user EMAIL USERNAME [--password-stdin]
    admin reset-password EMAIL [--password-stdin]   (also signs the user out everywhere)
    admin set-plan USER PLAN                         (PLAN: a plan of the config)
    admin grant-credits USER N                       (N may be negative; a balance stops at zero)
    admin list-users

USER is a local account's id, email or username, or else any user id (a JWT
`sub`, an X-User-Id).  The config file (--config, or PARLEY_CONFIG) gives
the data directory and the plans, as for the server; --data-dir wins over both.
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
from runs.plans import PlanConfig, Plans
from store import accounts as sql
from store.db import Database, WriteTx, now_ms
from store.errors import Conflict

ACTOR = "admin-cli"  # who changed a balance or a plan, in the ledger


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted before and after the command
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help="overrides the server's data directory (flag, PARLEY_DATA_DIR, config file)")
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="the server's TOML config file: its data_dir and plans (default: PARLEY_CONFIG)")
    p = argparse.ArgumentParser(prog="server.py admin", description="manage local accounts, plans and credits",
                                parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create-user", help="create a confirmed account", parents=[common])
    c.add_argument("email")
    c.add_argument("username")
    c.add_argument("--password-stdin", action="store_true")
    r = sub.add_parser("reset-password", help="set a new password and revoke every session", parents=[common])
    r.add_argument("email")
    r.add_argument("--password-stdin", action="store_true")
    s = sub.add_parser("set-plan", help="set a user's plan (any user id, or a local account)", parents=[common])
    s.add_argument("user")
    s.add_argument("plan")
    g = sub.add_parser("grant-credits", help="add N credits to a user's balance (negative: take; stops at zero)",
                       parents=[common])
    g.add_argument("user")
    g.add_argument("amount", type=int, metavar="N")
    sub.add_parser("list-users", help="list the accounts with plan and credits (tab-separated)", parents=[common])
    return p


def _password(args: argparse.Namespace, stdin: IO[str], out: IO[str]) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    password = secrets.token_urlsafe(12)
    print(f"password: {password}", file=out)
    return password


async def admin_main(argv: list[str], data_dir: Path, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                     passwords: Passwords | None = None, plans: PlanConfig | None = None) -> int:
    """Run one admin command; 0 on success, 1 on a refused command (message on stderr-like `stdout`).

    `data_dir` and `plans` come from the server's settings (server.py reads `--config`)."""
    out = stdout or sys.stdout
    args = parser().parse_args(argv)
    db = Database(getattr(args, "data_dir", data_dir).resolve() / "parley.db")
    await db.open()
    pw = passwords or Passwords()
    try:
        return await _run(args, db, pw, stdin or sys.stdin, out, Plans(db, plans))
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


async def _user_id(db: Database, key: str, out: IO[str]) -> tuple[str, dict[str, Any] | None]:
    """The user id that `key` names: a local account's (by id, email or username), or `key` itself."""
    found = await _find(db, key)
    if found is None:
        print(f"no local account matches {key!r}: taken as a user id", file=out)
        return key, None
    return found["id"], found


async def _run(args: argparse.Namespace, db: Database, pw: Passwords, stdin: IO[str], out: IO[str],
               plans: Plans) -> int:
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
        if args.plan not in plans.config.plans:
            print(f"no plan {args.plan!r} in the config (plans: {', '.join(sorted(plans.config.plans))})", file=out)
            return 1
        plan_user, account = await _user_id(db, args.user, out)
        await plans.set_plan(plan_user, args.plan, ACTOR)
        if account is not None:  # the accounts table keeps a copy for older readers
            await db.write(lambda tx: sql.update_user(tx, plan_user, {"plan": args.plan}))
        usage = await plans.usage(plan_user)
        print(f"plan of {account['email'] if account else plan_user} is now {args.plan} ({usage.credits} credits)", file=out)
        return 0
    if args.command == "grant-credits":
        credit_user, account = await _user_id(db, args.user, out)
        old, new = await plans.grant(credit_user, args.amount, ACTOR)
        print(f"credits of {account['email'] if account else credit_user}: {old} -> {new}", file=out)
        return 0
    users = await db.read(sql.all_users)
    print("id\temail\tusername\tplan\tcredits\tcreated_at", file=out)
    for u in users:
        usage = await plans.usage(u["id"])
        plan = usage.plan.name
        if usage.plan_set not in (None, plan):
            plan += f" ({usage.plan_set} is not in the config)"
        print(f"{u['id']}\t{u['email']}\t{u['username']}\t{plan}\t{usage.credits}\t{iso(u['created_at'])}", file=out)
    return 0
