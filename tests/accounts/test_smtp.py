"""SMTP never sends the password in clear (SPEC 13): STARTTLS whenever offered, and a server that
offers none gets no login unless `starttls = false` is written in [smtp]."""
from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accounts.mail import SmtpMailer
from config import check_file
from tests.accounts.conftest import Anon, wire
from tests.helpers import body

V = "/api/v1/auth/verifications"
PASSWORD = "smtp-secret-password"
SIGNUP = {"username": "mailme", "email": "mailme@example.com", "password": "12345678"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """Records what crossed: the mails, and the credentials of every AUTH with whether TLS was on."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[tuple[str, str, bool]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode(), session.ssl is not None))
        return AuthResult(success=True)


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@pytest.fixture
def smtp_server(request):
    """`smtp_server(**aiosmtpd options)` starts a sink on a free port; stopped after the test."""
    started: list[Controller] = []

    def start(**options) -> tuple[Sink, int]:
        sink = Sink()
        port = _free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, **options)
        controller.start()
        started.append(controller)
        return sink, port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def smtp_password(monkeypatch):
    monkeypatch.setenv("PARLEY_TEST_SMTP_PASSWORD", PASSWORD)


def smtp_config(port: int, **more) -> dict:
    return {"host": "127.0.0.1", "port": port, "from": "noreply@parley.test", "username": "parley",
            "password_env": "PARLEY_TEST_SMTP_PASSWORD", **more}


def mailed_code(sink: Sink) -> str:
    text = sink.messages[-1].decode()
    m = re.search(r"\b(\d{6})\b", text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else text.split("\n\n", 1)[1])
    assert m
    return m.group(1)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_no_password_over_a_server_without_starttls(parley, http_server_client, smtp_server, smtp_password):
    sink, port = smtp_server(auth_require_tls=False)  # a server that would take the password in clear
    svc = wire(parley, smtp=smtp_config(port))
    try:
        anon = Anon(http_server_client)
        r = await anon.request("POST", V, SIGNUP)
        assert r.code == 502, r.body
        assert r.headers["Content-Type"] == "application/problem+json"
        assert body(r)["code"] == "MAIL_FAILED" and body(r)["status"] == 502
        assert sink.logins == [] and sink.messages == []
        # the cooldown is lifted: once [smtp] says starttls = false, the same sign-up mails its code
        svc = wire(parley, smtp=smtp_config(port, starttls=False))
        r = await anon.request("POST", V, SIGNUP)
        assert r.code == 202, r.body
        assert sink.logins == [("parley", PASSWORD, False)] and len(sink.messages) == 1
        r = await anon.request("POST", V + "/verify", {"email": SIGNUP["email"], "token": mailed_code(sink)})
        assert r.code == 200
    finally:
        svc.close()


async def test_starttls_whenever_the_server_offers_it(parley, http_server_client, smtp_server, smtp_password, tmp_path):
    context, cert_file = self_signed(tmp_path)
    sink, port = smtp_server(tls_context=context, require_starttls=True)
    svc = wire(parley, smtp=smtp_config(port, ca_file=str(cert_file)))  # no `starttls` key at all
    try:
        anon = Anon(http_server_client)
        r = await anon.request("POST", V, SIGNUP)
        assert r.code == 202, r.body
        assert sink.logins == [("parley", PASSWORD, True)] and len(sink.messages) == 1
    finally:
        svc.close()


async def test_without_a_password_a_plain_server_still_gets_mail(parley, http_server_client, smtp_server):
    sink, port = smtp_server()
    svc = wire(parley, smtp={"host": "127.0.0.1", "port": port, "from": "noreply@parley.test"})
    try:
        r = await Anon(http_server_client).request("POST", V, SIGNUP)
        assert r.code == 202 and len(sink.messages) == 1 and sink.logins == []
    finally:
        svc.close()


async def test_a_failing_smtp_server_is_a_502_for_every_email(parley, http_server_client):
    svc = wire(parley, smtp={"host": "127.0.0.1", "port": _free_port(), "from": "noreply@parley.test"})
    try:
        anon = Anon(http_server_client)
        r = await anon.request("POST", V, SIGNUP)
        assert r.code == 502 and r.headers["Content-Type"] == "application/problem+json"
        r = await anon.request("POST", V + "/resend", {"email": SIGNUP["email"]})
        assert r.code == 502  # the cooldown was lifted, so the resend tried (and failed) again
    finally:
        svc.close()


@pytest.mark.parametrize("config,problem", [
    ({"starttls": "yes"}, '[smtp] starttls: expected true or false, got "yes"'),
    ({"use_tls": 1}, "[smtp] use_tls: expected true or false, got 1"),
    ({"port": "25a"}, '[smtp] port: expected an integer from 1 to 65535, got "25a"'),
])
def test_bad_smtp_tables_are_refused(config, problem):
    assert check_file({"smtp": {"host": "smtp.example.com", **config}})[1] == [problem]


def test_implicit_tls_and_starttls_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        SmtpMailer({"host": "smtp.example.com", "use_tls": True, "starttls": True})


def test_default_ports():
    assert SmtpMailer({"host": "h"}).port == 25
    assert SmtpMailer({"host": "h", "starttls": True}).port == 587
    assert SmtpMailer({"host": "h", "use_tls": True}).port == 465
