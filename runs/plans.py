"""Plans and credits (SPEC section 10): what a user may start, and what tools cost.

Config (all optional; without it every user is on the built-in `free` plan:
unlimited runs a day but at most 10 running at once, every agent, 100 credits
to start with; `generate_image` costs 1 credit, `generate_music` 3 and
`generate_video` 5):

    [plans]
    default = "free"              # the plan of users with none set (default: free)

    [plans.free]                  # overrides the built-in free plan
    runs_per_day = 20             # runs a user may start per UTC day; 0 = unlimited (default 0)
    max_running = 10              # runs of a user running at once (parked ones do not count); 0 = unlimited (default 10)
    agents = ["demo"]             # agent ids the plan may run; ["*"] = all (default ["*"])
    credits = 10                  # the balance a new user starts with (default 100)

    [plans.pro]
    runs_per_day = 0
    max_running = 50
    credits = 1000

    [credits]                     # what a tool costs per call (defaults: DEFAULT_PRICES)
    generate_image = 2
    generate_video = 10

A plan's `credits` is the balance of a user seen for the first time (their
first run, debit, grant or plan change); changing a plan later keeps the
balance.  A user whose stored plan no longer exists in the config is on the
default plan.  The check of a run start runs inside the writer transaction
that takes the thread's lock (RunManager.start_run), so under any number of
concurrent starts a user never gets more than `runs_per_day` runs a day, nor
more than `max_running` pending or running at once.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from agents.tools import InsufficientCredits, ToolEnv
from store import Store
from store import plans as plans_sql
from store import tasks as tasks_sql
from store.db import WriteTx, now_ms


@dataclass(frozen=True)
class Plan:
    name: str
    runs_per_day: int = 0  # 0: unlimited
    max_running: int = 10  # pending or running (not parked) runs at once; 0: unlimited
    agents: tuple[str, ...] = ("*",)  # ("*",): every agent
    credits: int = 100  # the starting balance

    def allows(self, agent_id: str) -> bool:
        return "*" in self.agents or agent_id in self.agents

    @property
    def daily_limit(self) -> int | None:
        return self.runs_per_day or None


FREE = Plan("free")
DEFAULT_PRICES = {"generate_image": 1, "generate_music": 3, "generate_video": 5}


@dataclass(frozen=True)
class PlanConfig:
    plans: dict[str, Plan] = field(default_factory=lambda: {FREE.name: FREE})
    default: str = FREE.name
    prices: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def plan(self, name: str | None) -> Plan:
        """The named plan; the default plan for None or a name the config no longer has."""
        return self.plans.get(name or self.default) or self.plans[self.default]

    def price(self, tool: str) -> int:
        return self.prices.get(tool, 0)

    @classmethod
    def from_extra(cls, extra: dict[str, Any], tools: Collection[str]) -> PlanConfig:
        """Read `[plans]`, `[plans.NAME]` and `[credits]` of the config file (`tools`: the names
        `[credits]` may price), as config.py's schema checked them.  Raises ValueError when the
        default plan or a priced tool does not exist."""
        table = extra.get("plans", {})
        default = table.get("default", FREE.name)
        plans = {FREE.name: FREE}
        plans.update({name: _plan(name, entry) for name, entry in table.items() if name != "default"})
        if default not in plans:
            raise ValueError(f"[plans] default = {default!r} names no plan (plans: {', '.join(sorted(plans))})")
        costs = extra.get("credits", {})
        for tool in costs:
            if tool not in tools:
                raise ValueError(f"[credits] {tool}: unknown tool (tools: {', '.join(sorted(tools))})")
        return cls(plans, default, {**DEFAULT_PRICES, **costs})


def _plan(name: str, entry: dict[str, Any]) -> Plan:
    return Plan(name, entry.get("runs_per_day", FREE.runs_per_day), entry.get("max_running", FREE.max_running),
                tuple(entry.get("agents", FREE.agents)), entry.get("credits", FREE.credits))


@dataclass(frozen=True)
class Refusal:
    """Why a plan refuses a run start (rendered 403 by every surface)."""

    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    plan: Plan  # the plan that applies
    credits: int
    runs_today: int
    plan_set: str | None = None  # the plan stored for the user (None: the default), maybe no longer configured


class Plans:
    """Users' plans and balances over the store; the `Billing` of runs (agents/tools.py).

    Every write goes through the store's single writer.
    """

    def __init__(self, db: Store, config: PlanConfig | None = None) -> None:
        self.db = db
        self.config = config or PlanConfig()

    def _account(self, tx: WriteTx, user_id: str) -> tuple[Plan, int]:
        """The user's plan and balance, giving a user seen for the first time the plan's balance."""
        row = plans_sql.get_tx(tx, user_id)
        plan = self.config.plan(row.plan if row else None)
        if row is None or row.credits is None:
            plans_sql.initialise(tx, user_id, None, plan.credits)
            return plan, plan.credits
        return plan, row.credits

    # -- run starts (inside the writer transaction of RunManager.start_run) ---------

    def plan_of(self, tx: WriteTx, user_id: str) -> Plan:
        """The user's plan, read once for the start's checks (`admit`, `running_refusal`)."""
        return self._account(tx, user_id)[0]

    def admit(self, tx: WriteTx, plan: Plan, user_id: str, agent_id: str) -> Refusal | None:
        """None when the user's `plan` allows one more run of `agent_id` today."""
        if not plan.allows(agent_id):
            return Refusal(f"the {plan.name} plan does not include the agent {agent_id!r}",
                           {"plan": plan.name, "agentId": agent_id})
        if plan.runs_per_day:
            today = plans_sql.runs_since_tx(tx, user_id, plans_sql.day_start(now_ms()))
            if today >= plan.runs_per_day:
                return Refusal(f"the {plan.name} plan allows {plan.runs_per_day} run(s) a day; "
                               "today's are used up (the count restarts at 00:00 UTC)",
                               {"plan": plan.name, "runsPerDay": plan.runs_per_day, "runsToday": today})
        return None

    def running_refusal(self, tx: WriteTx, plan: Plan, user_id: str) -> Refusal | None:
        """None while the user has fewer pending or running runs (parked ones do not count) than
        the `plan`'s `max_running`; called after `admit` in the same transaction."""
        if not plan.max_running:
            return None
        running = tasks_sql.running_for_user_tx(tx, user_id, plan.max_running)
        if running < plan.max_running:
            return None
        return Refusal(f"at most {plan.max_running} run(s) may run at once on the {plan.name} plan; "
                       "wait for one to end, or stop one",
                       {"plan": plan.name, "maxRunning": plan.max_running})

    # -- Billing ------------------------------------------------------------------

    async def debit(self, tool: str, env: ToolEnv) -> int:
        """Take the tool's price from the user's balance (atomically, never below zero): the amount
        taken; InsufficientCredits (nothing taken) when the balance is too low."""
        cost = self.config.price(tool)
        if cost <= 0:
            return 0
        actor, task_id = _actor(env)

        def _debit(tx: WriteTx) -> int | None:
            _, balance = self._account(tx, env.user_id)
            if plans_sql.debit(tx, env.user_id, cost, f"tool:{tool}", actor, task_id) is None:
                return balance
            return None

        short = await self.db.write(_debit)
        if short is not None:
            raise InsufficientCredits(tool, cost, short)
        return cost

    async def refund(self, tool: str, amount: int, env: ToolEnv) -> None:
        """Give back what `debit` took for a call that then failed."""
        if amount <= 0:
            return
        actor, task_id = _actor(env)

        def _refund(tx: WriteTx) -> None:
            self._account(tx, env.user_id)
            plans_sql.adjust(tx, env.user_id, amount, f"refund:{tool}", actor, task_id, "the tool call failed")

        await self.db.write(_refund)

    # -- reads ----------------------------------------------------------------------

    async def usage(self, user_id: str) -> Usage:
        """Plan, balance and today's runs (a user never seen shows the default plan's starting balance)."""
        row = await self.db.read(lambda c: plans_sql.get(c, user_id))
        today = await self.db.read(lambda c: plans_sql.runs_since(c, user_id, plans_sql.day_start(now_ms())))
        plan = self.config.plan(row.plan if row else None)
        credits = plan.credits if row is None or row.credits is None else row.credits
        return Usage(plan, credits, today, row.plan if row else None)

    # -- administration (the admin CLI) -------------------------------------------------

    async def grant(self, user_id: str, delta: int, actor: str) -> tuple[int, int]:
        """Add `delta` credits (negative: take, stopping at zero): (old, new)."""

        def _grant(tx: WriteTx) -> tuple[int, int]:
            self._account(tx, user_id)
            return plans_sql.adjust(tx, user_id, delta, "grant", actor)

        return await self.db.write(_grant)

    async def set_plan(self, user_id: str, plan_name: str, actor: str) -> Plan:
        """Put the user on a configured plan (KeyError otherwise); a user seen for the first time
        starts with the new plan's balance, others keep theirs."""
        plan = self.config.plans[plan_name]

        def _set(tx: WriteTx) -> None:
            row = plans_sql.get_tx(tx, user_id)
            if row is None or row.credits is None:
                plans_sql.initialise(tx, user_id, plan.name, plan.credits)
            plans_sql.set_plan(tx, user_id, plan.name, actor)

        await self.db.write(_set)
        return plan


def _actor(env: ToolEnv) -> tuple[str, str | None]:
    """Who spends, for the ledger: a run (with its task), or the MCP endpoint (task id "mcp")."""
    return ("mcp", None) if env.task_id == "mcp" else ("run", env.task_id)
