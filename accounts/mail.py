"""Outgoing mail: SMTP (`[smtp]` in the config) or, in dev mode, files under data_dir/outbox/.

Dev-mode messages are UTF-8 plain text, one file per message (mode 0600), with
no transfer encoding, so a test or a developer can read the code directly;
codes are also logged at INFO on the `parley.accounts` logger.

SMTP upgrades to TLS with STARTTLS whenever the server offers it (or connects
with implicit TLS, `use_tls = true`), and never sends the SMTP password over a
connection that is not encrypted unless `starttls = false` is written in `[smtp]`.
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


class MailRefused(Exception):
    """A mail that is not sent because sending it would expose a secret (the SMTP password in clear)."""


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
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.outbox / f".{name}.tmp"
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            fh.write(text)
        tmp.replace(self.outbox / name)


class SmtpMailer:
    """`[smtp] host, port?, username?, password_env?, from?, starttls?, use_tls?, ca_file?`, sent with aiosmtplib.

    `starttls` unset: upgrade whenever the server offers STARTTLS; `true`: require it; `false`:
    never upgrade (and then, only then, a password may cross in clear).  `use_tls = true`: implicit
    TLS (port 465).  `ca_file`: PEM certificates to trust besides the system's (a private CA).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        """`config`: the `[smtp]` table as config.py's schema checked it; ValueError when use_tls and
        starttls = true are both set."""
        self.starttls: bool | None = config.get("starttls")
        self.use_tls = bool(config.get("use_tls", False))
        if self.use_tls and self.starttls:
            raise ValueError("[smtp] use_tls (implicit TLS) and starttls = true exclude each other")
        self.host = str(config["host"])
        self.port = int(config.get("port", 465 if self.use_tls else 587 if self.starttls else 25))
        self.username = config.get("username")
        env = config.get("password_env")
        self.password = os.environ.get(str(env)) if env else None
        self.sender = str(config.get("from") or "parley@localhost")
        self.ca_file = str(config["ca_file"]) if config.get("ca_file") else None

    async def send(self, to: str, subject: str, body: str, code: str | None = None) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body, charset="utf-8", cte="8bit")
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, use_tls=self.use_tls,
                                 start_tls=False if self.use_tls else self.starttls, cert_bundle=self.ca_file,
                                 timeout=SMTP_TIMEOUT_S)
        await client.connect()  # STARTTLS here when required, or when offered and not refused
        try:
            if self.username is not None:
                if client.get_transport_info("sslcontext") is None and self.starttls is not False:
                    raise MailRefused(f"{self.host}:{self.port} offers no STARTTLS, so the SMTP password is not sent "
                                      "in clear (write starttls = false in [smtp] to allow that)")
                await client.login(str(self.username), self.password or "")
            await client.send_message(msg)
            await client.quit()
        finally:
            if client.is_connected:
                client.close()
        log.info("mail to %s sent over SMTP: %s", to, subject)


def make_mailer(smtp: dict[str, Any] | None, data_dir: Path) -> Mailer:
    if smtp:
        return SmtpMailer(smtp)
    return OutboxMailer(data_dir / "outbox")
