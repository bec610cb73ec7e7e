"""The accounts service refuses with codes and knows no HTTP; the accounts surface gives each code its status."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import accounts
from accounts import errors
from accounts.errors import AccountError
from handlers.accounts.problems import STATUS, problem

ACCOUNTS_DIR = Path(accounts.__file__).parent


def test_every_code_has_a_status():
    assert set(STATUS) == set(errors.CODES)


@pytest.mark.parametrize(("refusal", "status", "extra"), [
    (AccountError(errors.RATE_LIMITED, "slow down", retry_after=7), 429, {"retry_after": 7}),
    (errors.invalid([{"field": "email", "message": "required"}]), 422,
     {"errors": [{"field": "email", "message": "required"}]}),
    (AccountError(errors.MAIL_FAILED, "no mail"), 502, {"title": "Bad Gateway"}),
    (AccountError(errors.USER_NOT_FOUND, "no such user"), 404, {}),
])
def test_a_refusal_becomes_the_surface_error(refusal, status, extra):
    err = problem(refusal)
    assert (err.status, err.message, err.code, err.extra) == (status, refusal.message, refusal.code, extra)


def test_an_unknown_code_is_an_internal_error_without_its_message():
    err = problem(AccountError("SOMETHING_NEW", "a secret detail"))
    assert (err.status, err.message) == (500, "internal server error")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(ACCOUNTS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_accounts_know_no_http(path):
    http = {m for m in imported_modules(path) if m.split(".")[0] == "handlers" or m.startswith("tornado.web")}
    assert not http, f"accounts/{path.name} imports {sorted(http)}"
