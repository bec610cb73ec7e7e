"""Configured agents own their ids, and a user has at most 100 agents (SPEC 13; issue 9 item 6)."""
from __future__ import annotations

import asyncio
import copy
import logging

import pytest

from runs.manager import MAX_AGENTS_PER_USER
from server import Config, Parley
from tests.helpers import INTERNAL_KEY, body

ASSISTANT = {"agents": [{"id": "assistant", "name": "Assistant", "type": "demo", "tools": ["clock"]}]}


@pytest.fixture
def config_extra(request):
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, config_extra):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0,
                  extra=copy.deepcopy(config_extra))


@pytest.mark.parametrize("config_extra", [ASSISTANT], indirect=True, ids=["assistant"])
async def test_creating_a_configured_or_built_in_id_is_409(config_extra, alice):
    for agent_id in ("assistant", "demo"):
        resp = await alice.request("POST", "/api/agents", {"id": agent_id, "name": "Mine", "type": "demo"})
        assert resp.code == 409, resp.body
        assert body(resp)["error"]["code"] == "AGENT_EXISTS"
    agents = [a for a in body(await alice.request("GET", "/api/agents"))["agents"] if a["id"] == "assistant"]
    assert agents == [{"id": "assistant", "name": "Assistant", "description": "", "type": "demo", "llm": None,
                       "tools": ["clock"], "instructions": ""}]


async def test_a_configured_agent_wins_over_a_stored_one_at_start(parley_config, alice, caplog):
    """A user created `assistant`; the operator then configured it and restarted: the config's agent
    is the one everybody runs, and the stored one is left out with a warning."""
    resp = await alice.request("POST", "/api/agents", {"id": "assistant", "name": "Alice's", "type": "demo"})
    assert resp.code == 201
    restarted = Parley(Config(data_dir=parley_config.data_dir, store=parley_config.store, internal_key=INTERNAL_KEY, demo_delay_ms=0,
                              extra=copy.deepcopy(ASSISTANT)))
    await restarted.db.open()
    try:
        with caplog.at_level(logging.WARNING, logger="parley.runs"):
            await restarted.runs.load_agents()
        agent = await restarted.runs.agent_for("assistant", "bob")  # no Forbidden: it is shared again
        assert agent.name == "Assistant" and "owner" not in agent.extra
        assert [a.name for a in await restarted.runs.visible_agents("alice") if a.id == "assistant"] == ["Assistant"]
        assert any("'assistant' of user 'alice' is not loaded" in r.getMessage() for r in caplog.records)
    finally:
        await restarted.db.close()


async def test_the_101st_agent_of_a_user_is_refused(alice, bob):
    async def create(client, n):
        return await client.request("POST", "/api/agents", {"id": f"a-{client.user}-{n}", "name": f"n{n}", "type": "demo"})

    created = await asyncio.gather(*(create(alice, n) for n in range(MAX_AGENTS_PER_USER + 5)))
    codes = sorted(r.code for r in created)
    assert codes == [201] * MAX_AGENTS_PER_USER + [409] * 5
    refused = next(r for r in created if r.code == 409)
    err = body(refused)["error"]
    assert err["code"] == "AGENT_LIMIT" and err["details"] == {"limit": 100}
    assert "at most 100 agents" in err["message"]
    assert sum(a["id"].startswith("a-alice-") for a in body(await alice.request("GET", "/api/agents"))["agents"]) == 100
    assert (await create(bob, 0)).code == 201  # per user
