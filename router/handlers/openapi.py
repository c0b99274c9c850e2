"""GET /openapi.json: an OpenAPI 3 description of the router's own endpoints (for clients and fuzzers)."""

from __future__ import annotations

from aiohttp import web

from engines.registry import ADAPTERS, ENGINE_NAMES
from router.engine_state import LEGACY_STATUS, State

routes = web.RouteTableDef()

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
ENGINE = {"type": "string", "enum": list(ENGINE_NAMES)}
NULLABLE_STRING = {"type": ["string", "null"]}
# GET /v1/status: the engines are the only top-level keys (the original API's shape)
ENGINE_STATUS = {"type": "object", "required": ["status", "model", "process_alive", "state", "pid", "port"],
                 "properties": {"status": {"enum": sorted(set(LEGACY_STATUS.values()))},
                                "state": {"enum": [state.value for state in State]},
                                "model": NULLABLE_STRING, "process_alive": {"type": "boolean"},
                                "pid": {"type": ["integer", "null"]}, "port": {"type": "integer"},
                                "last_error": NULLABLE_STRING, "in_flight": {"type": "integer"},
                                "waiting": {"type": "integer"}, "restarts": {"type": "integer"},
                                "memory_estimate": {"type": ["object", "null"]},
                                "memory_pool": {"enum": ["unified", "discrete-gpu", "cpu"]},
                                "warnings": {"type": "array", "items": {"type": "string"}}}}
STATUS = {"type": "object", "additionalProperties": False, "properties": {name: ENGINE_STATUS for name in ENGINE_NAMES}}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(description: str, *errors: int, stream: bool = False, schema: dict | None = None) -> dict:
    ok = {"application/json": {"schema": schema or {"type": "object"}}}
    if stream:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    out = {"200": {"description": description, "content": ok}}
    for status in errors:
        out[str(status)] = {"description": "error", "content": {"application/json": {"schema": ERROR}}}
    return out


def _option_schema() -> dict:
    props = {}
    for adapter in ADAPTERS.values():
        props.update(adapter.Options.model_json_schema()["properties"])
    return props


def _inference(summary: str, prompt_field: dict) -> dict:
    schema = {"type": "object", "properties": {
        "engine": ENGINE, "model": {"type": "string"}, "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
        **prompt_field}}
    return {"post": {"summary": summary, "requestBody": _json_body(schema),
                     "responses": _answers("the engine's answer", 400, 413, 415, 502, 503, 504, stream=True)}}


def build_spec() -> dict:
    load_schema = {"type": "object", "required": ["model_path"], "additionalProperties": False,
                   "properties": {"model_path": {"type": "string"}, "model": {"type": "string"},
                                  "engine": ENGINE, "force": {"type": "boolean"}, **_option_schema()}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "unified-llm router", "version": "0.1.0"},
        "paths": {
            "/health": {"get": {"summary": "router liveness and engine readiness",
                                "responses": _answers("router is up")}},
            "/v1/status": {"get": {"summary": "per-engine status", "responses": _answers("status", schema=STATUS)}},
            "/v1/models": {"get": {"summary": "catalog and loaded models", "responses": _answers("model list")}},
            "/v1/models/load": {"post": {"summary": "load a model into an engine",
                                         "requestBody": _json_body(load_schema),
                                         "responses": _answers("loaded", 400, 404, 409, 413, 415, 500, 507)}},
            "/v1/models/unload": {"post": {
                "summary": "stop an engine's model",
                "requestBody": _json_body({"type": "object", "required": ["engine"],
                                           "properties": {"engine": ENGINE}}),
                "responses": _answers("unloaded", 400, 413, 415)}},
            "/v1/completions": _inference("OpenAI text completion", {"prompt": {"type": "string"}}),
            "/v1/chat/completions": _inference("OpenAI chat completion", {"messages": {"type": "array"}}),
            "/v1/config/reload": {"post": {"summary": "re-read models.yaml; restart only engines that changed",
                                           "responses": _answers("what changed", 400)}},
            "/metrics": {"get": {"summary": "the router's Prometheus metrics",
                                 "responses": {"200": {"description": "Prometheus text format"}}}},
            "/metrics/engines/{engine}": {"get": {
                "summary": "one engine's own Prometheus metrics, with engine and model labels added",
                "parameters": [{"name": "engine", "in": "path", "required": True, "schema": ENGINE}],
                "responses": {"200": {"description": "Prometheus text format"},
                              "404": {"description": "unknown engine",
                                      "content": {"application/json": {"schema": ERROR}}}}}},
            "/v1/engines/{engine}/logs": {"get": {
                "summary": "the tail of an engine's own log (its supervisord program output); follow=1 streams it",
                "parameters": [
                    {"name": "engine", "in": "path", "required": True, "schema": ENGINE},
                    {"name": "lines", "in": "query", "description": "how many of the last lines (default 100)",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                    {"name": "follow", "in": "query", "schema": {"enum": ["1", "true", "0", "false"]},
                     "description": "stream new lines as server-sent events `data: {\"line\": ...}` until the "
                                    "client leaves"}],
                "responses": _answers('{"engine": ..., "lines": [...]} (text/plain with Accept: text/plain)',
                                      400, 404, 429, 503, stream=True)}},
            "/openapi.json": {"get": {"summary": "this document", "responses": _answers("OpenAPI document")}},
            "/": {"get": {"summary": "the chat web UI (open without a key; it asks for one when the API needs it)",
                          "responses": {"200": {"description": "the page",
                                                "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/static/{path}": {"get": {
                "summary": "the chat UI's assets (CSS, JavaScript, vendored libraries)",
                "parameters": [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file"},
                              "404": {"description": "no such asset",
                                      "content": {"application/json": {"schema": ERROR}}}}}},
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_spec())
