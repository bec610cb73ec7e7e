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

from handlers import accounts, agent_api, app, jobs, mcp, native
from handlers.base import APIHandler
from handlers.schema import error_responses, response

SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"internalKey": [], "userId": []}]

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    **native.OPENAPI, **app.OPENAPI, **agent_api.OPENAPI, **jobs.OPENAPI, **mcp.OPENAPI, **accounts.OPENAPI,
    "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": response("OpenAPI 3.1")}}},
    # handlers/metrics.py; served only with --metrics-token (the Bearer token here) or --internal-key (no user needed)
    "/metrics": {"get": {"summary": "Prometheus metrics (text format, or OpenMetrics when the Accept header asks for it)",
                         "security": [{"bearer": []}, {"internalKey": []}],
                         "responses": {"200": response("the metrics", {"type": "string"}, "text/plain"),
                                       **error_responses(401)}}},
}

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
        out.append(openapi_path(matcher.regex.pattern))
    return out


def openapi_path(pattern: str) -> str:
    """A route's URL pattern as this document names it: `/api/jobs/([^/]{1,128})/trace` -> `/api/jobs/{jobId}/trace`
    (a group of a route it does not describe: `{param}`)."""
    return _openapi_path(pattern.rstrip("$"), OPERATIONS)


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
