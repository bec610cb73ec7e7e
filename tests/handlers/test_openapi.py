import json

from openapi_spec_validator import OpenAPIV31SpecValidator

from handlers.openapi import OPERATIONS, document, route_paths
from server import make_app


def spec_errors(doc):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in OpenAPIV31SpecValidator(doc).iter_errors()]


async def test_the_document_is_valid_openapi_3_1(parley, http_server_client):
    """openapi-spec-validator: the OpenAPI 3.1 schema, path parameters declared, every $ref resolved;
    the document served, and the one of --dev (which serves more routes)."""
    served = json.loads((await http_server_client.fetch("/openapi.json")).body)
    assert not spec_errors(served), "\n".join(spec_errors(served))
    parley.config.dev = True
    dev = document(make_app(parley), "dev")
    assert set(dev["paths"]) > set(served["paths"])
    assert not spec_errors(dev), "\n".join(spec_errors(dev))


async def test_every_route_is_documented(parley, http_server_client):
    resp = await http_server_client.fetch("/openapi.json")
    doc = json.loads(resp.body)
    assert doc["openapi"].startswith("3.1")
    routes = route_paths(parley.app)
    assert routes, "no API routes found"
    missing = [p for p in routes if p not in OPERATIONS]
    assert not missing, f"routes missing from handlers/openapi.py OPERATIONS: {missing}"
    for path in routes:
        assert path in doc["paths"]
        for method, op in doc["paths"][path].items():
            assert op["responses"], f"{method.upper()} {path} documents no responses"


async def test_documented_methods_exist(parley):
    """Every documented operation is served by its handler (no stale entries)."""
    from tornado.routing import PathMatches

    served = {}
    for rule in parley.app.wildcard_router.rules:
        if isinstance(rule.matcher, PathMatches):
            served[rule.matcher.regex.pattern] = rule.target
    for path in route_paths(parley.app):
        handler = next(t for pattern, t in served.items() if path in route_paths_for(pattern, parley))
        for method in OPERATIONS[path]:
            assert method.upper() in handler.SUPPORTED_METHODS and hasattr(handler, method), (path, method)


def route_paths_for(pattern, parley):
    from handlers.openapi import _openapi_path

    return [_openapi_path(pattern.rstrip("$"), OPERATIONS)]


async def test_no_operation_names_a_parameter_twice(http_server_client):
    """OpenAPI forbids two parameters with the same name and location in one operation."""
    doc = json.loads((await http_server_client.fetch("/openapi.json")).body)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            keys = [(p["name"], p["in"]) for p in op.get("parameters", [])]
            assert len(keys) == len(set(keys)), (method, path, keys)
