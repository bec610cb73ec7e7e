"""deploy/compose.yaml (issue 13, item 7): PostgreSQL, two Parley instances on one database and
nginx in front. Read with a YAML parser as `docker compose` reads it (anchors and merge keys
resolved); each Parley flag it passes must be one that `server.py --help` lists."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

import yaml

from config import Config
from tests.deploy.conftest import DEPLOY, flags_of, options

COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
INSTANCES = ("parley1", "parley2")


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    assert isinstance(value, list), "the exec form: a list, no shell in between"
    return [str(v) for v in value]


def duration_s(value: str) -> float:
    """A compose duration ("45s", "1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert parts and value, value
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


def test_both_instances_run_parley_on_the_same_postgresql_database():
    urls = {flags_of(command(name))["--store"] for name in INSTANCES}
    assert len(urls) == 1, urls
    url = urls.pop()
    assert url is not None and url.startswith("postgresql://") and "@db:5432/" in url, url
    db = SERVICES["db"]
    assert db["image"].startswith("postgres:")
    assert url.rsplit("/", 1)[1] == db["environment"]["POSTGRES_DB"]
    for name in INSTANCES:
        assert command(name)[:2] == ["parley", "serve"]
        assert SERVICES[name]["depends_on"]["db"]["condition"] == "service_healthy"


def test_each_instance_has_its_own_data_dir():
    """One owner per data dir: two instances never mount the same volume there."""
    mounts = {name: [v for v in SERVICES[name]["volumes"] if v.split(":")[1] == "/data"] for name in INSTANCES}
    assert all(len(m) == 1 for m in mounts.values()), mounts
    assert len({m[0].split(":")[0] for m in mounts.values()}) == len(INSTANCES), mounts
    assert all(flags_of(command(name))["--data-dir"] == "/data" for name in INSTANCES)


def test_every_flag_passed_is_one_parley_has(server_flags):
    for name in INSTANCES:
        unknown = set(flags_of(command(name))) - server_flags
        assert not unknown, f"{name} passes flags server.py does not have: {unknown}"


def test_the_proxy_is_deploy_nginx_conf_and_the_only_trusted_forwarder():
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = [v.split(":") for v in proxy["volumes"]]
    configs = [(COMPOSE_FILE.parent / src).resolve() for src, dst, *_ in mounts if dst.startswith("/etc/nginx/")]
    assert configs == [DEPLOY / "nginx.conf"], configs
    for name in INSTANCES:
        assert proxy["depends_on"][name]["condition"] == "service_healthy"
    address = ipaddress.ip_address(proxy["networks"]["parley"]["ipv4_address"])
    subnet = ipaddress.ip_network(COMPOSE["networks"]["parley"]["ipam"]["config"][0]["subnet"])
    assert address in subnet
    for name in INSTANCES:
        trusted = [ipaddress.ip_network(str(cidr)) for flag, cidr in options(command(name)) if flag == "--trusted-proxy"]
        assert trusted and all(address in net for net in trusted), trusted
        assert all(net.num_addresses == 1 for net in trusted), "only the proxy, not its whole network"


def test_the_proxy_balances_over_both_instances_on_their_port():
    upstream = re.search(r"upstream\s+parley\s*\{(.*?)\}", (DEPLOY / "nginx.conf").read_text(), re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([^\s;]+)", upstream.group(1), re.M)
    ports = {flags_of(command(name)).get("--port") or str(Config().port) for name in INSTANCES}
    assert sorted(servers) == [f"{name}:{port}" for name in INSTANCES for port in ports], servers


def test_every_service_is_health_checked_and_stopped_after_a_full_drain():
    """Parley's health check is the image's (HEALTHCHECK in the Dockerfile, built from the repo's
    root); the others are here."""
    assert "healthcheck" in SERVICES["db"] and "healthcheck" in SERVICES["proxy"]
    for name in INSTANCES:
        assert "healthcheck" not in SERVICES[name], "the image's check is kept, not replaced or disabled"
        drain = float(flags_of(command(name)).get("--drain-timeout") or Config().drain_timeout)
        assert duration_s(SERVICES[name]["stop_grace_period"]) > drain
        assert (COMPOSE_FILE.parent / SERVICES[name]["build"]["context"] / SERVICES[name]["build"]["dockerfile"]
                ).resolve() == DEPLOY.parent / "Dockerfile"
