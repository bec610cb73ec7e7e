"""The agents users may run: the shared ones (built in, or configured) and the ones users
created through the API, kept in the store.  A user sees and runs the shared agents and
their own, and owns at most MAX_AGENTS_PER_USER."""
from __future__ import annotations

import logging
from typing import Any

from agents import AgentDef, AgentRegistry
from runs.errors import Forbidden, TooManyAgents
from store import Conflict, NotFound, Store, WriteTx
from store import agents as agents_sql

log = logging.getLogger("parley.runs")

MAX_AGENTS_PER_USER = 100


class AgentCatalog:
    """The registry's agents, as each user may see them; the users' own agents, stored."""

    def __init__(self, db: Store, agents: AgentRegistry) -> None:
        self.db = db
        self.agents = agents

    async def load(self) -> None:
        """Register the agents created through the API (kept in the store).

        Built-in and configured agents own their ids: a stored agent whose id one of them has
        (the config named it after a user created it) is left out, with a warning.
        """
        for row in await self.db.read(agents_sql.all_agents):
            shared = self.agents.get(row["id"])
            if shared is not None and shared.extra.get("owner") is None:
                log.warning("agent %r of user %r is not loaded: the configuration defines an agent with that id",
                            row["id"], row["user_id"])
                continue
            self.agents.add(_agent_from_row(row))

    async def visible(self, user_id: str) -> list[AgentDef]:
        """Shared agents (built in or configured) and the user's own (on a shared store, as the
        store has them: another instance may have created one)."""
        if self.db.shared:
            for row in await self.db.read(lambda c: agents_sql.for_user(c, user_id)):
                self._learn(row)
        return [a for a in self.agents.all() if a.extra.get("owner") in (None, user_id)]

    async def find(self, agent_id: str) -> AgentDef | None:
        """The agent of that id, whoever owns it; on a shared store one this instance has not
        seen is looked up there (another instance created it)."""
        agent = self.agents.get(agent_id)
        if agent is None and self.db.shared:
            row = await self.db.read(lambda c: agents_sql.get(c, agent_id))
            agent = self._learn(row) if row is not None else None
        return agent

    async def agent_for(self, agent_id: str, user_id: str) -> AgentDef:
        """The agent if this user may use it: NotFound, or Forbidden for another user's."""
        agent = await self.find(agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id} not found")
        if agent.extra.get("owner") not in (None, user_id):
            raise Forbidden(f"agent {agent_id} belongs to another user")
        return agent

    async def create(self, user_id: str, spec: dict[str, Any]) -> AgentDef:
        """Store a new agent owned by `user_id`: Conflict when the id is taken (by a built-in,
        configured or stored agent), TooManyAgents when the user has MAX_AGENTS_PER_USER."""
        if self.agents.get(spec["id"]) is not None:
            raise Conflict(f"agent {spec['id']} already exists")
        row = {**spec, "user_id": user_id}

        def _insert(tx: WriteTx) -> None:
            if agents_sql.count_for_user_tx(tx, user_id) >= MAX_AGENTS_PER_USER:
                raise TooManyAgents(f"a user may create at most {MAX_AGENTS_PER_USER} agents")
            agents_sql.insert(tx, row)

        await self.db.write(_insert)
        agent = _agent_from_row(row)
        self.agents.add(agent)
        return agent


    def _learn(self, row: dict[str, Any]) -> AgentDef | None:
        """Register a stored agent another instance created (never over a shared one's id)."""
        known = self.agents.get(row["id"])
        if known is not None:
            return known if known.extra.get("owner") == row["user_id"] else None
        agent = _agent_from_row(row)
        self.agents.add(agent)
        return agent


def _agent_from_row(row: dict[str, Any]) -> AgentDef:
    return AgentDef(
        id=row["id"], name=row["name"], type=row["type"], description=row.get("description", ""),
        llm=row.get("llm"), tools=tuple(row.get("tools", ())), instructions=row.get("instructions", ""),
        extra={"owner": row["user_id"]},
    )
