"""kira-be's user routes (seed 001, SPEC section 10): the caller's profile with plan and credits.  Errors: {message}."""
from __future__ import annotations

from typing import Any, cast

from accounts import Accounts
from handlers.base import APIHandler


class AppProfileHandler(APIHandler):
    surface = "app"

    async def get(self) -> None:
        """{id, email?, username?, plan, credits, runsToday, runsPerDay} of the caller
        (email and username when the caller has a local account; runsPerDay null: unlimited)."""
        usage = await self.runs.plans.usage(self.user_id)
        out: dict[str, Any] = {"id": self.user_id}
        accounts = cast(Accounts | None, self.settings.get("accounts"))
        account = await accounts.user("id", self.user_id) if accounts is not None else None
        if account is not None:
            out["email"], out["username"] = account["email"], account["username"]
        out.update(plan=usage.plan.name, credits=usage.credits, runsToday=usage.runs_today,
                   runsPerDay=usage.plan.daily_limit)
        self.write_json(out)


PROFILE = {"type": "object", "required": ["id", "plan", "credits", "runsToday", "runsPerDay"], "properties": {
    "id": {"type": "string", "description": "the user id (JWT sub, X-User-Id, or the local account's id)"},
    "email": {"type": "string", "description": "only for a local account"},
    "username": {"type": "string", "description": "only for a local account"},
    "plan": {"type": "string"},
    "credits": {"type": "integer", "minimum": 0},
    "runsToday": {"type": "integer", "description": "runs started since 00:00 UTC"},
    "runsPerDay": {"type": ["integer", "null"], "description": "the plan's daily limit; null: unlimited"},
}}

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/user/profile": {"get": {
        "summary": "The caller's profile: plan, credit balance and today's runs",
        "responses": {"200": {"description": "profile", "content": {"application/json": {"schema": PROFILE}}},
                      "401": {"description": "no credentials"}}}},
}

default_handlers = [
    (r"/user/profile", AppProfileHandler),
]
