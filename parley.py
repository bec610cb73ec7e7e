"""The `parley` command (the wheel's console script; `python server.py …` in the checkout):

    parley [serve] [FLAGS]      the server (flags alone serve too: `parley --port 0`)
    parley admin …              accounts, plans and credits (accounts/admin.py)
    parley backup DEST          a copy of a live SQLite data dir (store/backup.py)
    parley check-config FILE    a config file checked as a start checks it (config.py)
    parley --version | --help

Only the standard library is imported here, and a command's module when it runs: `--version` and
`--help` answer at once, where the server's modules take seconds to import (its LLM and MCP clients).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

VERSION = "0.2.0"  # the one version: setup.cfg reads it (`attr: parley.VERSION`), the server reports it


def serve(argv: list[str]) -> int:
    from server import run

    return run(argv)


def admin(argv: list[str]) -> int:
    from server import admin as admin_main

    return admin_main(argv)


def backup(argv: list[str]) -> int:
    from store.backup import main as backup_main

    return backup_main(argv)


def check_config(argv: list[str]) -> int:
    from config import check_main

    return check_main(argv)


# name: (what runs it, its arguments, what it does), in the order `--help` lists them
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str, str]] = {
    "serve": (serve, "[FLAGS]", "run the server (the default: flags alone serve too, as in `{prog} --port 0`)"),
    "admin": (admin, "…", "accounts, plans and credits (`{prog} admin --help`)"),
    "backup": (backup, "DEST", "a consistent copy of a live SQLite data dir, taken while it serves"),
    "check-config": (check_config, "FILE", "check a config file as a start does, without starting"),
}


def program() -> str:
    """The name this was started by (`parley`, or `server.py` in the checkout), for usage and errors."""
    return os.path.basename(sys.argv[0]) or "parley"


def usage(prog: str) -> str:
    """The commands, for `--help` and for a word that is not one."""
    rows = [(f"{prog} {name} {args}", text.format(prog=prog)) for name, (_, args, text) in COMMANDS.items()]
    rows.append((f"{prog} --version", "the version"))
    width = max(len(left) for left, _ in rows)
    return "\n".join([f"Parley {VERSION}: a self-hosted agent run server.", "", "commands:",
                      *(f"  {left:<{width}}  {text}" for left, text in rows),
                      "", f"The flags of serve, each also read from PARLEY_<FLAG> and the config file: `{prog} serve --help`."])


def main(argv: list[str] | None = None) -> int:
    """A first word that is not a flag names the command; none, or flags alone, serve."""
    argv = sys.argv[1:] if argv is None else argv
    os.umask(0o077)  # every file and directory a command makes is its user's alone (SPEC 13)
    if argv[:1] == ["--version"]:
        print(f"parley {VERSION}")
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print(usage(program()))
        return 0
    if not argv or argv[0].startswith("-"):
        return serve(argv)
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"{usage(program())}\n\n{program()}: error: no command {argv[0]!r}", file=sys.stderr)
        return 2
    return command[0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
