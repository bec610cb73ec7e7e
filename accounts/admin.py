"""`parley admin ...` (`python server.py admin ...` in the checkout): manage local accounts, plans and credits from the command line.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from accounts.checks import check_email, check_password, check_username
from accounts.passwords import Passwords
from accounts.users import iso, user_by
from runs.plans import PlanConfig, Plans
from store import Store, make_store
from store import accounts as sql
from store.db import WriteTx, now_ms
from store.errors import Conflict

ACTOR = "admin-cli"  # who changed a balance or a plan, in the ledger


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted before and after the command
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help="overrides the server's data directory (flag, PARLEY_DATA_DIR, config file)")
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="the server's TOML config file: its data_dir and plans (default: PARLEY_CONFIG)")
    p = argparse.ArgumentParser(prog=f"{Path(sys.argv[0]).name} admin", description="manage local accounts, plans and credits",
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


async def admin_main(argv: list[str], data_dir: Path, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
                     passwords: Passwords | None = None, plans: PlanConfig | None = None, store: str = "sqlite") -> int:
    """Run one admin command; 0 on success, 1 on a refused command (message on stderr-like `stdout`).

    `data_dir`, `plans` and `store` come from the server's settings (server.py reads `--config`)."""
    out = stdout or sys.stdout
    args = parser().parse_args(argv)
    db = make_store(store, getattr(args, "data_dir", data_dir).resolve())
    await db.open()
    pw = passwords or Passwords()
    try:
        return await AdminCommand(args, db, pw, Plans(db, plans), stdin or sys.stdin, out).run()
    finally:
        if passwords is None:
            pw.close()
        await db.close()


@dataclass
class AdminCommand:
    """One command line of `server.py admin`, with what it works on and the terminal it talks to."""

    args: argparse.Namespace
    db: Store
    passwords: Passwords
    plans: Plans
    stdin: IO[str]
    out: IO[str]

    async def run(self) -> int:
        """Run the command: 0 on success, 1 when it is refused."""
        commands: dict[str, Callable[[], Awaitable[int]]] = {
            "create-user": self.create_user, "reset-password": self.reset_password, "set-plan": self.set_plan,
            "grant-credits": self.grant_credits, "list-users": self.list_users,
        }
        return await commands[self.args.command]()

    def say(self, text: str) -> None:
        print(text, file=self.out)

    async def create_user(self) -> int:
        errors: list[dict[str, str]] = []
        email = check_email(self.args.email, errors)
        username = check_username(self.args.username, errors)
        password = self._password()
        check_password(password, errors)
        if errors:
            self.say("; ".join(f"{e['field']}: {e['message']}" for e in errors))
            return 1
        user: dict[str, Any] = {"id": str(uuid.uuid4()), "email": email, "username": username,
                                "password_hash": await self.passwords.hash(password), "created_at": now_ms(),
                                "email_confirmed_at": now_ms()}
        try:
            await self.db.write(lambda tx: sql.insert_user(tx, user))
        except Conflict as exc:
            self.say(f"refused: {exc}")
            return 1
        self.say(f"created {user['id']} {email} {username}")
        return 0

    async def reset_password(self) -> int:
        found = await self._find(self.args.email)
        if found is None:
            self.say("no such user")
            return 1
        password = self._password()
        errors: list[dict[str, str]] = []
        if not check_password(password, errors):
            self.say(errors[0]["message"])
            return 1
        new_hash = await self.passwords.hash(password)
        user_id: str = found["id"]

        def reset(tx: WriteTx) -> int:
            sql.update_user(tx, user_id, {"password_hash": new_hash})
            return sql.revoke_user(tx, user_id)

        revoked = await self.db.write(reset)
        self.say(f"password reset for {found['email']}; {revoked} session token(s) revoked")
        return 0

    async def set_plan(self) -> int:
        plan = self.args.plan
        if plan not in self.plans.config.plans:
            self.say(f"no plan {plan!r} in the config (plans: {', '.join(sorted(self.plans.config.plans))})")
            return 1
        user_id, account = await self._user_id(self.args.user)
        await self.plans.set_plan(user_id, plan, ACTOR)
        if account is not None:  # the accounts table keeps a copy for older readers
            await self.db.write(lambda tx: sql.update_user(tx, user_id, {"plan": plan}))
        usage = await self.plans.usage(user_id)
        self.say(f"plan of {account['email'] if account else user_id} is now {plan} ({usage.credits} credits)")
        return 0

    async def grant_credits(self) -> int:
        user_id, account = await self._user_id(self.args.user)
        old, new = await self.plans.grant(user_id, self.args.amount, ACTOR)
        self.say(f"credits of {account['email'] if account else user_id}: {old} -> {new}")
        return 0

    async def list_users(self) -> int:
        users = await self.db.read(sql.all_users)
        self.say("id\temail\tusername\tplan\tcredits\tcreated_at")
        for u in users:
            usage = await self.plans.usage(u["id"])
            plan = usage.plan.name
            if usage.plan_set not in (None, plan):
                plan += f" ({usage.plan_set} is not in the config)"
            self.say(f"{u['id']}\t{u['email']}\t{u['username']}\t{plan}\t{usage.credits}\t{iso(u['created_at'])}")
        return 0

    def _password(self) -> str:
        """The password read from stdin (--password-stdin), else a random one, printed once."""
        if self.args.password_stdin:
            return self.stdin.readline().rstrip("\r\n")
        password = secrets.token_urlsafe(12)
        self.say(f"password: {password}")
        return password

    async def _find(self, key: str) -> dict[str, Any] | None:
        """The local account whose id, email or username is `key`."""
        for column, value in (("id", key), ("email", key.lower()), ("username", key)):
            user = await user_by(self.db, column, value)
            if user is not None:
                return user
        return None

    async def _user_id(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """The user id that `key` names: a local account's (by id, email or username), or `key` itself."""
        found = await self._find(key)
        if found is None:
            self.say(f"no local account matches {key!r}: taken as a user id")
            return key, None
        return found["id"], found
