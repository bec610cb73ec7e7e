"""The job surface (seed 003, SPEC section 11): a job is a task seen through Aetheris's API."""
from __future__ import annotations

from typing import Any, cast

from agents import AGENT_TYPES, AgentDef
from agents.replay import Recording
from auth.ratelimit import IN_MEMORY, RateLimit, Windows, retry_after
from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.jobs.timeline import Timeline, replay_steps
from handlers.schema import AGENT, JOB, JSON, error_responses, response
from handlers.streaming import CURSOR_PARAMETERS, EventStreamHandler
from handlers.times import iso_ms
from handlers.validation import ID, check_id
from runs.hub import Batch
from runs.manager import (
    MAX_AGENTS_PER_USER,
    Forbidden,
    Invalid,
    PlanRefused,
    SignalRefused,
    StartRequest,
    TooManyAgents,
    TooManyRunning,
    text_message,
)
from store import Conflict, NotFound
from store.ids import random_hex, uuid7
from store.tasks import TaskRow

MAX_MESSAGE = 100_000


def job_limits(windows: Windows = IN_MEMORY) -> dict[str, RateLimit]:
    """Per-user limits of SPEC section 11: runs 100/min, signals 60/min, job reads 300/min."""
    return {name: windows.window(f"jobs.{name}", limit) for name, limit in (("runs", 100), ("signals", 60), ("reads", 300))}


class JobsHandler(APIHandler):
    surface = "jobs"
    busy_message, busy_code, busy_id_key = "the thread already has a live job", "THREAD_BUSY", "job_id"
    plan_details = True
    limit: str | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.limit is not None and self.identity is not None and self.request.method != "OPTIONS":
            window = cast(dict[str, RateLimit], self.settings["job_limits"])[self.limit]
            wait = await window.hit(self.user_id)
            if wait:
                raise ApiError(429, f"rate limit: {window.limit} requests a minute", "RATE_LIMITED",
                               retry_after=retry_after(wait))

    async def own_job(self, job_id: str) -> TaskRow:
        try:
            return await self.runs.owned_task(job_id, self.user_id)
        except NotFound:
            raise ApiError(404, f"job {job_id} not found", "JOB_NOT_FOUND") from None
        except Forbidden:
            raise ApiError(403, "this job belongs to another user", "FORBIDDEN") from None

    async def own_agent(self, agent_id: str) -> AgentDef:
        try:
            return await self.runs.agent_for(agent_id, self.user_id)
        except NotFound:
            raise ApiError(404, f"agent {agent_id} not found", "AGENT_NOT_FOUND") from None
        except Forbidden:
            raise ApiError(403, "this agent belongs to another user", "FORBIDDEN") from None

    @staticmethod
    def job(task: TaskRow) -> dict[str, Any]:
        return {
            "job_id": task.id,
            "status": task.status,
            "agent_id": task.agent_id,
            "current_node": task.current_node,
            "thread_id": task.thread_id,
            "created_at": iso_ms(task.created_at),
        }


class JobsRunsHandler(JobsHandler):
    starts_runs = True
    limit = "runs"

    async def post(self) -> None:
        """Submit a job: 201 {job_id, status: "pending", created_at}."""
        body = self.json_body()
        if not isinstance(body.get("workflow_id"), str) or not body["workflow_id"]:
            raise ApiError(422, "workflow_id must be a non-empty string", "VALIDATION_ERROR")
        inp = body.get("input")
        if not isinstance(inp, dict):
            raise ApiError(422, "input must be an object {agent_id, message, thread_id?}", "VALIDATION_ERROR")
        message = inp.get("message")
        if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
            raise ApiError(422, f"input.message must be a non-empty string of at most {MAX_MESSAGE} characters", "VALIDATION_ERROR")
        agent_id = inp.get("agent_id", self.settings["default_agent"])
        if not isinstance(agent_id, str):
            raise ApiError(422, "input.agent_id must be a string", "VALIDATION_ERROR")
        await self.own_agent(agent_id)
        try:
            thread_id = check_id(inp.get("thread_id"), "input.thread_id", required=False) or uuid7()
        except ApiError as exc:
            raise ApiError(422, exc.message, "VALIDATION_ERROR") from None
        user_message = text_message(message)
        task = await self.start_run(StartRequest(self.user_id, thread_id, user_message, agent_id))
        self.write_json({"job_id": task.id, "status": "pending", "created_at": iso_ms(task.created_at)}, 201)


class JobsJobHandler(JobsHandler):
    limit = "reads"

    async def get(self, job_id: str) -> None:
        """{job_id, status, agent_id, current_node, thread_id, created_at}."""
        self.write_json(self.job(await self.own_job(job_id)))


class JobsSignalHandler(JobsHandler):
    limit = "signals"

    async def post(self, job_id: str) -> None:
        """Wake a parked job: 200 {job_id, status}; a repeat of a taken signal is 200 and runs nothing."""
        await self.own_job(job_id)
        body = self.json_body()
        key = body.get("correlation_key")
        if not isinstance(key, str) or not key:
            raise ApiError(400, "correlation_key must be a non-empty string", "INVALID_SIGNAL_KEY")
        try:
            task = await self.runs.signal(job_id, key, body.get("payload"))
        except SignalRefused as exc:
            raise ApiError(400, str(exc), exc.code) from None
        except TooManyRunning as exc:  # waking it would pass the plan's runs at once: not taken
            raise self.run_refusal(exc) from None
        except NotFound:
            raise ApiError(404, f"job {job_id} not found", "JOB_NOT_FOUND") from None
        self.write_json({"job_id": task.id, "status": task.status})


class JobsStopHandler(JobsHandler):
    async def post(self, job_id: str) -> None:
        """Stop the job (idempotent): 200 {job_id, status}."""
        task = await self.own_job(job_id)
        if task.live:
            await self.runs.abort(task.id)
        task = await self.own_job(job_id)
        self.write_json({"job_id": task.id, "status": task.status})


class JobsReplayHandler(JobsHandler):
    limit = "reads"

    async def get(self, job_id: str) -> None:
        """The job's record: its input, every step with its recorded inputs and outputs, its signals, its events."""
        task = await self.own_job(job_id)
        events = await self.runs.task_events(task.id)
        message = await self.runs.message(task.thread_id, task.user_message_id, task.id)
        self.write_json({
            "job_id": task.id,
            "agent_id": task.agent_id,
            "status": task.status,
            "replay_of": (task.state or {}).get("replay_of"),
            "input": {"message": message["parts"] if message else []},
            "steps": replay_steps(events),
            "record": Recording(events).steps(),
            "events": [{"id": e.id, "type": e.type, "time": iso_ms(e.created_at), "data": e.data} for e in events],
        })

    async def post(self, job_id: str) -> None:
        """Run the job again from its record (no model or tool is called): 201 {job_id, replay_of, status}."""
        if self.runs.draining:
            raise ApiError(503, "the server is draining; try again on another instance", "DRAINING")
        try:
            task = await self.runs.replay(job_id, self.user_id)
        except NotFound:
            raise ApiError(404, f"job {job_id} not found", "JOB_NOT_FOUND") from None
        except (PlanRefused, TooManyRunning) as exc:
            raise self.run_refusal(exc) from None
        except Forbidden:
            raise ApiError(403, "this job belongs to another user", "FORBIDDEN") from None
        except Invalid as exc:
            raise ApiError(409, str(exc), "JOB_NOT_FINISHED") from None
        self.write_json({"job_id": task.id, "replay_of": job_id, "status": "pending",
                         "created_at": iso_ms(task.created_at)}, 201)


class JobsTraceHandler(JobsHandler):
    limit = "reads"

    async def get(self, job_id: str) -> None:
        """{job_id, timeline: [{event, time, node?, correlation_key?, payload?}]}, from JobCreated."""
        task = await self.own_job(job_id)
        timeline = Timeline()
        entries = [e for e in map(timeline.entry, await self.runs.task_events(task.id)) if e is not None]
        self.write_json({"job_id": task.id, "timeline": entries})


class JobsEventsHandler(EventStreamHandler, JobsHandler):
    """GET /api/jobs/:id/events — the timeline as SSE, resumable, closed after the terminal entry."""

    limit = "reads"

    async def get(self, job_id: str) -> None:
        task = await self.own_job(job_id)
        cursor = await self.cursor()
        timeline = Timeline()
        if cursor:  # learn the tool names of calls that started before the cursor
            timeline.frames(Batch(await self.runs.task_events(task.id, limit=100_000)))
        self.open_stream()
        await self.pump(self.task_batches(task.id, cursor), timeline.frames)


MAX_INSTRUCTIONS = 20_000


class JobsAgentsHandler(JobsHandler):
    async def get(self) -> None:
        """The agents this user may run: shared ones and their own."""
        self.write_json({"agents": [a.public() for a in await self.runs.visible_agents(self.user_id)]})

    async def post(self) -> None:
        """Create an agent: 201 with the agent; the server makes the id unless the body gives one.
        409 AGENT_EXISTS for an id taken (built-in and configured agents own theirs), 409
        AGENT_LIMIT once the user has MAX_AGENTS_PER_USER agents."""
        body = self.json_body()
        spec = self.agent_spec(body)
        try:
            agent = await self.runs.create_agent(self.user_id, spec)
        except Conflict:
            raise ApiError(409, f"agent {spec['id']} already exists", "AGENT_EXISTS") from None
        except TooManyAgents as exc:
            raise ApiError(409, str(exc), exc.code, limit=MAX_AGENTS_PER_USER) from None
        self.write_json(agent.public(), 201)

    def agent_spec(self, body: dict[str, Any]) -> dict[str, Any]:
        def bad(message: str) -> ApiError:
            return ApiError(422, message, "VALIDATION_ERROR")

        try:
            agent_id = check_id(body.get("id"), "id", required=False) or f"agent_{random_hex(12)}"
        except ApiError as exc:
            raise bad(exc.message) from None
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise bad("name must be a non-empty string of at most 200 characters")
        kind = body.get("type", "react")
        if kind not in AGENT_TYPES:
            raise bad(f"type must be one of {', '.join(AGENT_TYPES)}")
        llm = body.get("llm")
        providers = self.runs.agents.providers
        if kind == "react":
            if not isinstance(llm, str) or llm not in providers:
                known = ", ".join(sorted(providers)) or "none configured"
                raise bad(f"llm must name a configured provider ({known})")
        elif llm is not None:
            raise bad("only react agents take an llm")
        tools = body.get("tools", [])
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise bad("tools must be a list of tool names")
        unknown = [t for t in tools if t not in self.runs.agents.tools]
        if unknown:
            raise bad(f"unknown tools: {', '.join(unknown)}")
        description = body.get("description", "")
        instructions = body.get("instructions", "")
        if not isinstance(description, str) or len(description) > 2000:
            raise bad("description must be a string of at most 2000 characters")
        if not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS:
            raise bad(f"instructions must be a string of at most {MAX_INSTRUCTIONS} characters")
        return {"id": agent_id, "name": name.strip(), "type": kind, "llm": llm, "tools": tools,
                "description": description, "instructions": instructions}


class JobsAgentStateHandler(JobsHandler):
    async def get(self, agent_id: str) -> None:
        """The agent, this user's live and parked jobs of it, and their counts by status."""
        agent = await self.own_agent(agent_id)
        live = await self.runs.agent_tasks(agent.id, self.user_id, None)
        counts = await self.runs.agent_counts(agent.id, self.user_id)
        self.write_json({
            "agent": agent.public(),
            "running": [self.job(t) for t in live if t.status in ("pending", "running")],
            "parked": [{**self.job(t), "correlation_key": (t.parked or {}).get("correlationKey"),
                        "prompt": (t.parked or {}).get("prompt")} for t in live if t.status == "parked"],
            "counts": counts,
        })


JOB_STATUSES = ("pending", "running", "parked", "completed", "failed", "cancelled")


class JobsAgentJobsHandler(JobsHandler):
    limit = "reads"

    async def get(self, agent_id: str) -> None:
        """This user's jobs of the agent, newest first (at most 100), optionally of one status."""
        agent = await self.own_agent(agent_id)
        status = self.get_query_argument("status", None)
        if status is not None and status not in JOB_STATUSES:
            raise ApiError(422, f"status must be one of {', '.join(JOB_STATUSES)}", "VALIDATION_ERROR")
        tasks = await self.runs.agent_tasks(agent.id, self.user_id, status)
        self.write_json({"agent_id": agent.id, "jobs": [self.job(t) for t in tasks]})


class JobsVersionHandler(JobsHandler):
    auth = "none"

    def get(self) -> None:
        self.write_json({"service": "parley", "version": self.settings["version"], "api": "aetheris-v2"})


default_handlers = [
    (r"/api/runs", JobsRunsHandler),
    (rf"/api/jobs/{ID}", JobsJobHandler),
    (rf"/api/jobs/{ID}/signal", JobsSignalHandler),
    (rf"/api/jobs/{ID}/stop", JobsStopHandler),
    (rf"/api/jobs/{ID}/trace", JobsTraceHandler),
    (rf"/api/jobs/{ID}/replay", JobsReplayHandler),
    (rf"/api/jobs/{ID}/events", JobsEventsHandler),
    (r"/api/version", JobsVersionHandler),
    (r"/api/agents", JobsAgentsHandler),
    (rf"/api/agents/{ID}/state", JobsAgentStateHandler),
    (rf"/api/agents/{ID}/jobs", JobsAgentJobsHandler),
]

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/api/runs": {"post": {"summary": "Submit a job (a run of an agent on a thread)",
        "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object", "required": ["workflow_id", "input"], "properties": {
            "workflow_id": {"type": "string"}, "input": {"type": "object", "required": ["message"], "properties": {
                "agent_id": {"type": "string"}, "message": {"type": "string"}, "thread_id": {"type": "string"}}}}}}}},
        "responses": {"201": response("submitted", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"const": "pending"}, "created_at": {"type": "string", "format": "date-time"}}}),
                      **error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503)}}},
    "/api/jobs/{jobId}": {"get": {"summary": "The job", "responses": {"200": response("job", JOB), **error_responses(401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/signal": {"post": {"summary": "Wake a parked job (idempotent per correlation key)",
        "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object", "required": ["correlation_key"], "properties": {
            "correlation_key": {"type": "string"}, "payload": {}}}}}},
        "responses": {"200": response("signalled", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}}}),
                      **error_responses(400, 401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/stop": {"post": {"summary": "Stop the job (idempotent)",
        "responses": {"200": response("stopped", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}}}), **error_responses(401, 403, 404)}}},
    "/api/jobs/{jobId}/trace": {"get": {"summary": "The job's timeline",
        "responses": {"200": response("trace", {"type": "object", "properties": {"job_id": {"type": "string"}, "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineEntry"}}}}),
                      **error_responses(401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/replay": {
        "get": {"summary": "The job's record: input, steps with recorded inputs and outputs (model answers, tool results, signals), events",
                "responses": {"200": response("record", {"type": "object"}), **error_responses(401, 403, 404, 429)}},
        "post": {"summary": "Run the job again from its record, calling no model and no tool; a new job",
                 "responses": {"201": response("replay started", {"type": "object", "properties": {"job_id": {"type": "string"}, "replay_of": {"type": "string"}}}),
                               **error_responses(401, 403, 404, 409, 503)}},
    },
    "/api/jobs/{jobId}/events": {"get": {"summary": "The timeline as SSE, one frame per entry, resumable with Last-Event-ID",
        "parameters": CURSOR_PARAMETERS,
        "responses": {"200": response("event stream", {"type": "string"}, "text/event-stream"), **error_responses(400, 401, 403, 404, 429)}}},
    "/api/agents": {
        "get": {"summary": "The agents this user may run", "responses": {"200": response("agents", {"type": "object", "properties": {"agents": {"type": "array", "items": AGENT}}}), **error_responses(401)}},
        "post": {"summary": "Create an agent", "requestBody": {"required": True, "content": {JSON: {"schema": AGENT}}},
                 "responses": {"201": response("the agent", AGENT), **error_responses(400, 401, 409, 413, 422)}},
    },
    "/api/agents/{agentId}/state": {"get": {"summary": "The agent with this user's live and parked jobs and counts by status",
        "responses": {"200": response("state", {"type": "object"}), **error_responses(401, 403, 404)}}},
    "/api/agents/{agentId}/jobs": {"get": {"summary": "This user's jobs of the agent, newest first",
        "parameters": [{"name": "status", "in": "query", "schema": {"enum": ["pending", "running", "parked", "completed", "failed", "cancelled"]}}],
        "responses": {"200": response("jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": JOB}}}), **error_responses(401, 403, 404, 422, 429)}}},
    "/api/version": {"get": {"summary": "Version", "security": [], "responses": {"200": response("version", {"type": "object"})}}},
}
