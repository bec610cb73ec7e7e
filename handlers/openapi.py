"""The OpenAPI 3.1 document at /openapi.json, built from the routing table.

Each route's operations are described in OPERATIONS; `document()` walks
the application's routes, so a route missing from OPERATIONS shows up in
the document without responses, which tests/handlers/test_openapi.py refuses.
"""
from __future__ import annotations

import re
from typing import Any, cast

from tornado import web
from tornado.routing import PathMatches, Rule

from handlers.accounts import OPENAPI as ACCOUNT_OPERATIONS
from handlers.agent import OPENAPI as AGENT_OPERATIONS
from handlers.agent_chats import OPENAPI as AGENT_CHAT_OPERATIONS
from handlers.agent_v1 import OPENAPI as AGENT_V1_OPERATIONS
from handlers.attachments import OPENAPI as ATTACHMENT_OPERATIONS
from handlers.base import APIHandler
from handlers.streaming import CURSOR_PARAMETERS
from handlers.documents import OPENAPI as DOCUMENT_OPERATIONS
from handlers.mcp import OPENAPI as MCP_OPERATIONS
from handlers.media import OPENAPI as MEDIA_OPERATIONS
from handlers.threads import OPENAPI as THREAD_OPERATIONS
from handlers.user import OPENAPI as USER_OPERATIONS

_ERR = {"$ref": "#/components/schemas/Error"}
_JSON = "application/json"


def _r(description: str, schema: dict[str, Any] | None = None, ctype: str = _JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {ctype: {"schema": schema}}
    return out


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad request", 401: "missing or invalid credentials", 403: "another user's resource",
            404: "not found", 409: "conflict", 413: "body too large", 422: "invalid body",
            429: "too many requests", 503: "draining"}
    return {str(c): _r(text[c], _ERR) for c in codes}


TASK_INFO = {"$ref": "#/components/schemas/TaskInfo"}
JOB = {"$ref": "#/components/schemas/Job"}
AGENT = {"$ref": "#/components/schemas/Agent"}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"internalKey": [], "userId": []}]

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/": {"get": {"summary": "Service info (a browser is redirected to /ui/)", "security": [],
                  "responses": {"200": _r("service", {"type": "object", "properties": {"service": {"type": "string"}, "version": {"type": "string"}}}),
                                "302": _r("redirect to the web page")}}},
    "/health": {"get": {"summary": "Health; 503 while draining", "security": [],
                        "responses": {"200": _r("ok", {"$ref": "#/components/schemas/Health"}),
                                      "503": _r("draining", {"$ref": "#/components/schemas/Health"})}}},
    "/task": {"post": {"summary": "Start a run on a thread",
                       "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/StartTask"}}}},
                       "responses": {"201": _r("started", {"type": "object", "properties": {"taskId": {"type": "string"}, "threadId": {"type": "string"}}}),
                                     "409": _r("the thread has a live run", {"type": "object", "properties": {"taskId": {"type": "string"}, "reason": {"const": "running"}}}),
                                     **_errors(400, 401, 403, 413, 422, 503)}}},
    "/task/{taskId}": {
        "get": {"summary": "TaskInfo", "responses": {"200": _r("the task", TASK_INFO), **_errors(401, 403, 404)}},
        "delete": {"summary": "Abort the task (idempotent)", "responses": {"204": _r("aborted or already ended"), **_errors(401, 403, 404)}},
    },
    "/stream/{taskId}": {"get": {
        "summary": "The run's events as SSE (kira framing), resumable with Last-Event-ID (header, or ?Last-Event-ID= / ?lastEventId=; "
                   "400 beyond the log's last id); ?token= for EventSource",
        "parameters": [*CURSOR_PARAMETERS,
            {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "TaskInfo.streamToken"},
        ],
        "responses": {"200": _r("event stream", {"type": "string"}, "text/event-stream"),
                      "204": _r("with ?token=: the run already ended before the cursor"), **_errors(400, 401, 403, 404, 429)}}},
    "/thread/{threadId}/current-task": {"get": {"summary": "The thread's live task, or null",
        "responses": {"200": _r("current task", {"type": "object", "properties": {"task": {"oneOf": [TASK_INFO, {"type": "null"}]}}}), **_errors(401, 403)}}},
    "/messages/{threadId}": {"get": {"summary": "The thread's messages (AI SDK v5 UIMessages), ascending",
        "responses": {"200": _r("messages", {"type": "object", "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/UIMessage"}}}}), **_errors(401, 403)}}},
    "/api/runs": {"post": {"summary": "Submit a job (a run of an agent on a thread)",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "required": ["workflow_id", "input"], "properties": {
            "workflow_id": {"type": "string"}, "input": {"type": "object", "required": ["message"], "properties": {
                "agent_id": {"type": "string"}, "message": {"type": "string"}, "thread_id": {"type": "string"}}}}}}}},
        "responses": {"201": _r("submitted", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"const": "pending"}, "created_at": {"type": "string", "format": "date-time"}}}),
                      **_errors(400, 401, 403, 404, 409, 413, 422, 429, 503)}}},
    "/api/jobs/{jobId}": {"get": {"summary": "The job", "responses": {"200": _r("job", JOB), **_errors(401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/signal": {"post": {"summary": "Wake a parked job (idempotent per correlation key)",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "required": ["correlation_key"], "properties": {
            "correlation_key": {"type": "string"}, "payload": {}}}}}},
        "responses": {"200": _r("signalled", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}}}),
                      **_errors(400, 401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/stop": {"post": {"summary": "Stop the job (idempotent)",
        "responses": {"200": _r("stopped", {"type": "object", "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}}}), **_errors(401, 403, 404)}}},
    "/api/jobs/{jobId}/trace": {"get": {"summary": "The job's timeline",
        "responses": {"200": _r("trace", {"type": "object", "properties": {"job_id": {"type": "string"}, "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineEntry"}}}}),
                      **_errors(401, 403, 404, 429)}}},
    "/api/jobs/{jobId}/replay": {
        "get": {"summary": "The job's record: input, steps with recorded inputs and outputs (model answers, tool results, signals), events",
                "responses": {"200": _r("record", {"type": "object"}), **_errors(401, 403, 404, 429)}},
        "post": {"summary": "Run the job again from its record, calling no model and no tool; a new job",
                 "responses": {"201": _r("replay started", {"type": "object", "properties": {"job_id": {"type": "string"}, "replay_of": {"type": "string"}}}),
                               **_errors(401, 403, 404, 409, 503)}},
    },
    "/api/jobs/{jobId}/events": {"get": {"summary": "The timeline as SSE, one frame per entry, resumable with Last-Event-ID",
        "parameters": CURSOR_PARAMETERS,
        "responses": {"200": _r("event stream", {"type": "string"}, "text/event-stream"), **_errors(400, 401, 403, 404, 429)}}},
    "/api/agents": {
        "get": {"summary": "The agents this user may run", "responses": {"200": _r("agents", {"type": "object", "properties": {"agents": {"type": "array", "items": AGENT}}}), **_errors(401)}},
        "post": {"summary": "Create an agent", "requestBody": {"required": True, "content": {_JSON: {"schema": AGENT}}},
                 "responses": {"201": _r("the agent", AGENT), **_errors(400, 401, 409, 413, 422)}},
    },
    "/api/agents/{agentId}/state": {"get": {"summary": "The agent with this user's live and parked jobs and counts by status",
        "responses": {"200": _r("state", {"type": "object"}), **_errors(401, 403, 404)}}},
    "/api/agents/{agentId}/jobs": {"get": {"summary": "This user's jobs of the agent, newest first",
        "parameters": [{"name": "status", "in": "query", "schema": {"enum": ["pending", "running", "parked", "completed", "failed", "cancelled"]}}],
        "responses": {"200": _r("jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": JOB}}}), **_errors(401, 403, 404, 422, 429)}}},
    "/api/version": {"get": {"summary": "Version", "security": [], "responses": {"200": _r("version", {"type": "object"})}}},
    "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": _r("OpenAPI 3.1")}}},
}

OPERATIONS.update(MCP_OPERATIONS)
OPERATIONS.update(DOCUMENT_OPERATIONS)
OPERATIONS.update(AGENT_CHAT_OPERATIONS)
OPERATIONS.update(AGENT_V1_OPERATIONS)
OPERATIONS.update(ATTACHMENT_OPERATIONS)
OPERATIONS.update(ACCOUNT_OPERATIONS)
OPERATIONS.update(THREAD_OPERATIONS)
OPERATIONS.update(USER_OPERATIONS)
OPERATIONS.update(AGENT_OPERATIONS)
OPERATIONS.update(MEDIA_OPERATIONS)

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "internalKey": {"type": "apiKey", "in": "header", "name": "X-Internal-Key"},
        "userId": {"type": "apiKey", "in": "header", "name": "X-User-Id"},
    },
    "schemas": {
        "Error": {"type": "object", "description": "The error shape of the route's surface"},
        "Agent": {"type": "object", "required": ["name"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
            "type": {"enum": ["react", "demo"]}, "llm": {"type": ["string", "null"]},
            "tools": {"type": "array", "items": {"type": "string"}}, "instructions": {"type": "string"}}},
        "Job": {"type": "object", "properties": {
            "job_id": {"type": "string"}, "status": {"enum": ["pending", "running", "parked", "completed", "failed", "cancelled"]},
            "agent_id": {"type": "string"}, "current_node": {"type": ["string", "null"]}, "thread_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"}}},
        "TimelineEntry": {"type": "object", "required": ["event", "time"], "properties": {
            "event": {"enum": ["JobCreated", "StepStarted", "ToolCompleted", "JobParked", "SignalReceived", "JobCompleted", "JobFailed", "JobCancelled"]},
            "time": {"type": "string", "format": "date-time"}, "node": {"type": "string"}, "correlation_key": {"type": "string"}, "payload": {}}},
        "Health": {"type": "object", "properties": {"status": {"enum": ["ok", "draining"]}}},
        "UIMessage": {"type": "object", "required": ["id", "role", "parts"], "properties": {
            "id": {"type": "string"}, "role": {"enum": ["user", "assistant", "system"]},
            "parts": {"type": "array", "items": {"type": "object"}}, "metadata": {"type": "object"}}},
        "StartTask": {"type": "object", "properties": {
            "threadId": {"type": "string", "maxLength": 128}, "content": {"type": "string"},
            "message": {"$ref": "#/components/schemas/UIMessage"}, "agentId": {"type": "string"},
            "rewindFrom": {"type": "string"}}},
        "TaskInfo": {"type": "object", "properties": {
            "taskId": {"type": "string"}, "threadId": {"type": "string"},
            "status": {"enum": ["pending", "running", "parked", "completed", "failed", "cancelled"]},
            "agentId": {"type": "string"}, "createdAt": {"type": "integer"}, "startedAt": {"type": ["integer", "null"]},
            "finishedAt": {"type": ["integer", "null"]}, "currentNode": {"type": ["string", "null"]},
            "error": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"reason": {"type": "string"}, "message": {"type": "string"}}}]},
            "parked": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"correlationKey": {"type": "string"}, "prompt": {"type": "string"}}}]},
            "userMessage": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/UIMessage"}]},
            "streamToken": {"type": "string"}}},
    },
}


def route_paths(app: web.Application) -> list[str]:
    """The OpenAPI path of every API route of the application (regex groups become {params})."""
    out = []
    for rule in cast(list[Rule], app.wildcard_router.rules):
        matcher = rule.matcher
        target = rule.target
        if not isinstance(matcher, PathMatches) or not (isinstance(target, type) and issubclass(target, APIHandler)):
            continue
        pattern = matcher.regex.pattern.rstrip("$")
        out.append(_openapi_path(pattern, OPERATIONS))
    return out


def _openapi_path(pattern: str, known: dict[str, Any]) -> str:
    groups = iter(re.findall(r"\{(\w+)\}", next((p for p in known if _same_shape(p, pattern)), "")))
    return re.sub(r"\([^)]*\)", lambda _m: "{" + next(groups, "param") + "}", pattern)


def _same_shape(path: str, pattern: str) -> bool:
    return re.sub(r"\{\w+\}", "X", path) == re.sub(r"\([^)]*\)", "X", pattern)


def _merged(path_params: list[dict[str, Any]], own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The path's parameters, then the operation's; a parameter is named once (OpenAPI forbids
    duplicates), the operation's own description of it winning."""
    declared = {(p["name"], p["in"]) for p in own}
    return [p for p in path_params if (p["name"], p["in"]) not in declared] + own


def document(app: web.Application, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path in route_paths(app):
        ops = OPERATIONS.get(path, {"get": {"summary": "undocumented", "responses": {}}})
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
                  for n in re.findall(r"\{(\w+)\}", path)]
        paths[path] = {m: {**op, "parameters": _merged(params, op.get("parameters", []))} for m, op in ops.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley", "version": version, "description": "Self-hosted agent run server"},
        "security": SECURED,
        "paths": paths,
        "components": COMPONENTS,
    }


class OpenAPIHandler(APIHandler):
    auth = "none"

    def get(self) -> None:
        self.write_json(document(self.application, self.settings["version"]))


default_handlers = [(r"/openapi.json", OpenAPIHandler)]
