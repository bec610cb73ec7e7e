"""deploy/nginx.conf (issue 13, item 7): the reverse-proxy block passes SSE unbuffered.

The directives are read from the file with a small parser of nginx's syntax; where nginx is
installed (it is not part of `make test`'s installs), `nginx -t` checks the block as nginx reads
it, and a real nginx in front of a real Parley passes a live stream frame by frame."""
from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config import Config
from tests.deploy.conftest import DEPLOY
from tests.pg import free_port
from tests.process.proc import AUTH, SSEReader, wait_until

NGINX_CONF = DEPLOY / "nginx.conf"
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|([{};])|([^\s{};"\']+)')


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str) -> list[str]:
        found = self.all(name)
        assert len(found) == 1, f"{name}: {len(found)} times in {self.name} {' '.join(self.args)}"
        return found[0].args


@dataclass
class _Parser:
    tokens: list[str]
    pos: int = field(default=0)

    def block(self, closing: bool) -> list[Directive]:
        out: list[Directive] = []
        words: list[str] = []
        while self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            self.pos += 1
            if token == ";":
                out.append(Directive(words[0], words[1:]))
                words = []
            elif token == "{":
                out.append(Directive(words[0], words[1:], self.block(closing=True)))
                words = []
            elif token == "}":
                assert closing and not words, "unbalanced }"
                return out
            else:
                words.append(token)
        assert not closing and not words, "the file ends inside a block or a directive"
        return out


def parse(text: str) -> Directive:
    text = re.sub(r"(?m)(^|\s)#.*$", r"\1", text)
    tokens = [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(text)]
    return Directive("main", [], _Parser(tokens).block(closing=False))


CONF = parse(NGINX_CONF.read_text())


def seconds(value: str) -> float:
    """An nginx time ("90", "75s", "10m", "1h") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m, value
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


def location() -> Directive:
    servers = CONF.all("server")
    assert len(servers) == 1
    (loc,) = [d for d in servers[0].all("location") if d.args == ["/"]]
    return loc


def test_streams_pass_unbuffered_uncached_on_http_1_1():
    loc = location()
    assert loc.one("proxy_pass") == ["http://parley"]
    assert loc.one("proxy_buffering") == ["off"]
    assert loc.one("proxy_cache") == ["off"]
    assert loc.one("proxy_http_version") == ["1.1"]
    headers = {d.args[0].lower(): d.args[1:] for d in loc.all("proxy_set_header")}
    assert headers["connection"] == [""], "an empty Connection: keep-alive upstream, no 'close'"


def test_an_idle_stream_outlives_many_keepalives():
    assert seconds(location().one("proxy_read_timeout")[0]) >= 10 * Config().keepalive_s


def test_the_client_address_is_forwarded_by_appending():
    """Parley takes the rightmost X-Forwarded-For entry that is not a trusted proxy, so the proxy
    appends its peer's address to whatever the client claimed."""
    headers = {d.args[0].lower(): d.args[1:] for d in location().all("proxy_set_header")}
    assert headers["x-forwarded-for"] == ["$proxy_add_x_forwarded_for"]
    assert headers["host"] == ["$host"]


def nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.skip("nginx is not installed (make test does not install it: `apt-get install nginx` to run this)")
    return found


def wrapped(tmp_path: Path, upstreams: list[int], listen: int) -> Path:
    """A whole nginx.conf around deploy/nginx.conf: the block as it is, but its upstream servers
    are the given local ports and it listens on `listen`; every file nginx writes is under tmp."""
    block = NGINX_CONF.read_text()
    block, n = re.subn(r"(?m)^(\s*)server\s+parley\d:8090\b",
                       lambda m, it=iter(upstreams): f"{m.group(1)}server 127.0.0.1:{next(it)}", block)
    assert n == len(upstreams), n
    block, n = re.subn(r"(?m)^(\s*)listen\s+80;", rf"\1listen 127.0.0.1:{listen};", block)
    assert n == 1
    (tmp_path / "parley.conf").write_text(block)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir(exist_ok=True)
    main = tmp_path / "nginx.conf"
    main.write_text(f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/parley.conf;
}}
""")
    return main


def test_nginx_accepts_the_block(tmp_path):
    main = wrapped(tmp_path, [free_port(), free_port()], free_port())
    checked = subprocess.run([nginx(), "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_a_stream_through_nginx_arrives_frame_by_frame(start_server, tmp_path):
    """Words 50 ms apart reach the client through the proxy while the run still goes on."""
    binary = nginx()
    server = start_server(demo_delay_ms=50)
    port = free_port()
    main = wrapped(tmp_path, [server.port, server.port], port)
    proc = subprocess.Popen([binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # it logs to error.log
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, 10, "nginx listening")
        assert proc.poll() is None, (tmp_path / "error.log").read_text()
        task = server.start_task("t-proxy", "/count 20")
        reader = SSEReader(http.client.HTTPConnection("127.0.0.1", port, timeout=30), f"/stream/{task}", dict(AUTH))
        assert reader.status == 200
        first = time.monotonic()
        reader.wait_for(lambda r: len(r.deltas) >= 3, 10, "three words through the proxy")
        assert server.task(task)["status"] == "running", "the first words came before the run ended"
        reader.wait_ended(15)
        assert reader.terminal is not None and reader.terminal.event == "done"
        assert "".join(reader.deltas).split() == [str(n) for n in range(1, 21)]
        assert time.monotonic() - first >= 0.5, "20 words 50 ms apart, streamed as they came"
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
