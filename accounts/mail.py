"""Outgoing mail: SMTP (`[smtp]` in the config) or, in dev mode, files under data_dir/outbox/.

Dev-mode messages are UTF-8 plain text, one file per message, with no
transfer encoding, so a test or a developer can read the code directly;
codes are also logged at INFO on the `parley.accounts` logger.
"""
from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections import OrderedDict
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

from store.db import now_ms

log = logging.getLogger("parley.accounts")
SMTP_TIMEOUT_S = 15


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str, code: str | None = None) -> None: ...


class OutboxMailer:
    """Dev mode: write each message to `outbox/<ms>-<uuid>.txt`."""

    KEEP_CODES = 1000  # the newest code of this many addresses, for `latest_code`

    def __init__(self, outbox: Path, sender: str = "parley@localhost") -> None:
        self.outbox = outbox
        self.sender = sender
        self._codes: OrderedDict[str, str] = OrderedDict()

    def latest_code(self, email: str) -> str | None:
        """The newest verification code written to the outbox for `email` (since the start)."""
        return self._codes.get(email.lower())

    async def send(self, to: str, subject: str, body: str, code: str | None = None) -> None:
        text = f"From: {self.sender}\nTo: {to}\nSubject: {subject}\n\n{body}\n"
        name = f"{now_ms()}-{uuid.uuid4().hex}.txt"
        await asyncio.get_running_loop().run_in_executor(None, self._write, name, text)
        if code is not None:
            self._codes[to.lower()] = code
            self._codes.move_to_end(to.lower())
            while len(self._codes) > self.KEEP_CODES:
                self._codes.popitem(last=False)
            log.info("dev mail to %s: verification code %s (outbox/%s)", to, code, name)
        else:
            log.info("dev mail to %s: %s (outbox/%s)", to, subject, name)

    def _write(self, name: str, text: str) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.outbox / name)


class SmtpMailer:
    """`[smtp] host, port, username?, password_env?, from, starttls?` sent with aiosmtplib."""

    def __init__(self, config: dict[str, Any]) -> None:
        if not config.get("host"):
            raise ValueError("[smtp] needs a host")
        self.host = str(config["host"])
        self.port = int(config.get("port", 587 if config.get("starttls") else 25))
        self.username = config.get("username")
        env = config.get("password_env")
        self.password = os.environ.get(str(env)) if env else None
        self.sender = str(config.get("from") or "parley@localhost")
        self.starttls = bool(config.get("starttls", False))

    async def send(self, to: str, subject: str, body: str, code: str | None = None) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body, charset="utf-8", cte="8bit")
        await aiosmtplib.send(
            msg, hostname=self.host, port=self.port, username=self.username, password=self.password,
            start_tls=self.starttls, timeout=SMTP_TIMEOUT_S,
        )
        log.info("mail to %s sent over SMTP: %s", to, subject)


def make_mailer(smtp: dict[str, Any] | None, data_dir: Path) -> Mailer:
    if smtp:
        return SmtpMailer(smtp)
    return OutboxMailer(data_dir / "outbox")
