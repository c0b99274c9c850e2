"""GET /openapi.json: an OpenAPI 3 description of the router's own endpoints (for clients and fuzzers)."""

from __future__ import annotations

from aiohttp import web

from engines.registry import ADAPTERS, ENGINE_NAMES
from engines.spec import MAX_INSTANCES, instance_name
from router.auth import Audience, audience, route_audiences
from router.engine_state import LEGACY_STATUS, State
from router.state import ENGINES

routes = web.RouteTableDef()

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
# An engine's own error, passed through unchanged (vLLM and llama-server send a numeric `code`; llama-server no
# `param`); the router's own errors carry the X-Unified-LLM-Error header and always match ERROR.
ENGINE_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message"],
    "properties": {"message": {"type": "string"}, "type": {"type": ["string", "null"]},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "integer", "null"]}}}}}
# One server-sent event (the OpenAPI 3.1 reading: `schema` describes each event): `data` holds a JSON chunk,
# `[DONE]`, or an error body after which the stream ends
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
ENGINE = {"type": "string", "enum": list(ENGINE_NAMES)}
# an engine (its most recently used instance; for logs, instance 0) or one instance of it: llamacpp-1
INSTANCE = {"type": "string", "enum": [instance_name(e, k) for e in ENGINE_NAMES for k in range(MAX_INSTANCES)]}
COUNT = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
NULLABLE_STRING = {"type": ["string", "null"]}
# POST /v1/models/load's answer
LOADED = {"type": "object",
          "required": ["status", "engine", "model", "model_path", "options", "load_seconds", "pid"],
          "properties": {"status": {"const": "success"}, "engine": ENGINE, "model": {"type": "string"},
                         "model_path": {"type": "string"}, "options": {"type": "object"},
                         "load_seconds": {"type": "number"}, "pid": {"type": ["integer", "null"]},
                         "memory_estimate": {"type": ["object", "null"]}, "instance": {"type": "string"},
                         "pinned": {"type": "boolean"}}}
# For stateful fuzzing: what a load returns names the engine and model that later requests can use
LOADED_LINKS = {
    "Unload": {"operationId": "unload", "requestBody": {"engine": "$response.body#/engine"}},
    "Complete": {"operationId": "complete", "requestBody": {"engine": "$response.body#/engine",
                                                            "model": "$response.body#/model", "prompt": "Hi",
                                                            "max_tokens": 4}},
    "Chat": {"operationId": "chat", "requestBody": {"engine": "$response.body#/engine",
                                                    "model": "$response.body#/model",
                                                    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}}}
# GET /v1/status: the engines are the only top-level keys (the original API's shape); each lists its instances
INSTANCE_STATUS = {"type": "object", "required": ["name", "model", "state", "port", "pid", "pinned"],
                   "properties": {"name": {"type": "string"}, "model": NULLABLE_STRING,
                                  "state": {"enum": [state.value for state in State]}, "port": {"type": "integer"},
                                  "pid": {"type": ["integer", "null"]}, "last_used": {"type": "number"},
                                  "in_flight": {"type": "integer"}, "waiting": {"type": "integer"},
                                  "pinned": {"type": "boolean"}, "memory_rss_bytes": {"type": ["integer", "null"]},
                                  "memory_anon_bytes": {"type": ["integer", "null"]}}}
ENGINE_STATUS = {"type": "object", "required": ["status", "model", "process_alive", "state", "pid", "port"],
                 "properties": {"status": {"enum": sorted(set(LEGACY_STATUS.values()))},
                                "state": {"enum": [state.value for state in State]},
                                "model": NULLABLE_STRING, "process_alive": {"type": "boolean"},
                                "pid": {"type": ["integer", "null"]}, "port": {"type": "integer"},
                                "last_error": NULLABLE_STRING, "in_flight": {"type": "integer"},
                                "waiting": {"type": "integer"}, "restarts": {"type": "integer"},
                                "memory_estimate": {"type": ["object", "null"]},
                                "memory_pool": {"enum": ["unified", "discrete-gpu", "cpu"]},
                                "warnings": {"type": "array", "items": {"type": "string"}},
                                "instance": {"type": "string"}, "max_instances": {"type": "integer"},
                                "instances": {"type": "array", "items": INSTANCE_STATUS}}}
PEER_STATUS = {"type": "object", "required": ["url", "kind", "health", "last_error", "models", "status"],
               "properties": {"url": NULLABLE_STRING, "kind": {"enum": ["unified-llm", "openai", None]},
                              "health": {"enum": ["unknown", "up", "down"]}, "last_error": NULLABLE_STRING,
                              "latency_ms": {"type": ["number", "null"]}, "models": {"type": "array"},
                              "in_flight": {"type": "integer"}, "status": {"type": ["object", "null"]}}}
PEERS = {"type": "object", "additionalProperties": PEER_STATUS}
STATUS = {"type": "object", "additionalProperties": False, "properties": {name: ENGINE_STATUS for name in ENGINE_NAMES}}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(description: str, *errors: int, stream: bool = False, schema: dict | None = None,
             error_schema: dict = ERROR) -> dict:
    ok = {"application/json": {"schema": schema or {"type": "object"}}}
    if stream:
        ok["text/event-stream"] = {"schema": SSE_EVENT}
    out = {"200": {"description": description, "content": ok}}
    for status in errors:
        out[str(status)] = {"description": "error", "content": {"application/json": {"schema": error_schema}}}
    return out


def _protected(answers: dict) -> dict:
    """Endpoints behind ULLM_API_KEY / ULLM_ADMIN_KEY: 401 without a valid key (when keys are set); and behind
    the browser guard (router/browser_guard.py): 403 for another site's page, 421 for a foreign Host name."""
    error = {"content": {"application/json": {"schema": ERROR}}}
    return {**answers, "401": {"description": "missing or wrong API key", **error},
            "403": {"description": "a cross-site browser request", **error},
            "421": {"description": "a Host name the router does not answer to while the API has no key", **error}}


def _option_schema() -> dict:
    props = {}
    for adapter in ADAPTERS.values():
        props.update(adapter.Options.model_json_schema()["properties"])
    return props


def _inference(summary: str, operation_id: str, prompt_field: dict) -> dict:
    schema = {"type": "object", "properties": {
        "engine": ENGINE, "model": {"type": "string"}, "stream": {"type": "boolean"},
        "max_tokens": COUNT, "max_completion_tokens": COUNT, "n": {"type": "integer", "minimum": 1, "maximum": 128},
        "temperature": {"type": "number"}, "top_p": {"type": "number"},
        **prompt_field}}
    # 4xx and 500 may be the engine's own answer, passed through; 502-504 are always the router's
    return {"post": {"summary": summary, "operationId": operation_id, "requestBody": _json_body(schema),
                     "responses": _answers(
                         "the engine's answer (a JSON object, or server-sent events when `stream` is true)",
                         400, 404, 408, 409, 413, 415, 422, 429, 500, 502, 503, 504, 507, stream=True,
                         error_schema=ENGINE_ERROR)}}


def build_spec(audiences: dict[tuple[str, str], Audience], load_examples: list[dict] | None = None) -> dict:
    """`audiences`: who may call each route (router.auth.route_audiences), which decides what needs a key here.
    `load_examples`: load bodies that work on this router now (clients and fuzzers start from them)."""
    load_schema = {"type": "object", "required": ["model_path"], "additionalProperties": False,
                   "properties": {"model_path": {"type": "string"}, "model": {"type": "string"},
                                  "engine": ENGINE, "force": {"type": "boolean"}, "keep_others": {"type": "boolean"},
                                  "pin": {"type": "boolean"}, "peer": {"type": "string"}, **_option_schema()}}
    if load_examples:
        load_schema["examples"] = load_examples
    loaded = _answers("loaded", 400, 404, 408, 409, 413, 415, 500, 507, schema=LOADED)
    loaded["200"]["links"] = LOADED_LINKS
    paths = {
        "/health": {"get": {"summary": "router liveness and engine readiness", "responses": _answers("router is up")}},
        "/v1/status": {"get": {"summary": "per-engine status", "responses": _answers("status", schema=STATUS)}},
        "/v1/models": {"get": {"summary": "catalog and loaded models, here and on the peers (`peer/model`)",
                               "responses": _answers("model list")}},
        "/v1/peers": {"get": {"summary": "each peer router's health, latency, models and (unified-llm) status",
                              "responses": _answers("peers by name", schema=PEERS)}},
        "/v1/models/load": {"post": {"summary": "load a model into an engine",
                                     "requestBody": _json_body(load_schema),
                                     "operationId": "load", "responses": loaded}},
        "/v1/models/unload": {"post": {
            "summary": "stop an engine's models (every instance), or the one named", "operationId": "unload",
            "requestBody": _json_body({"type": "object", "required": ["engine"],
                                       "properties": {"engine": ENGINE, "model": {"type": "string"},
                                                      "peer": {"type": "string"}}}),
            "responses": _answers("unloaded", 400, 404, 408, 413, 415, 500, 507)}},
        "/v1/models/pin": {"post": {
            "summary": "pin a resident model (never evicted for another) or unpin it",
            "requestBody": _json_body({"type": "object", "required": ["model"],
                                       "properties": {"model": {"type": "string"}, "engine": ENGINE,
                                                      "pinned": {"type": "boolean"}}}),
            "responses": _answers("pinned or unpinned", 400, 404, 408, 413, 415)}},
        "/v1/completions": _inference("OpenAI text completion", "complete", {"prompt": {"type": "string"}}),
        "/v1/chat/completions": _inference("OpenAI chat completion", "chat", {"messages": {"type": "array"}}),
        "/v1/config/reload": {"post": {"summary": "re-read models.yaml; restart only engines that changed",
                                       "responses": _answers("what changed", 400, 415)}},
        "/metrics": {"get": {"summary": "the router's Prometheus metrics",
                             "responses": {"200": {"description": "Prometheus text format"}}}},
        "/metrics/engines/{engine}": {"get": {
            "summary": "one engine instance's own Prometheus metrics, with engine and model labels added (an "
                       "engine's name: its instance 0)",
            "parameters": [{"name": "engine", "in": "path", "required": True, "schema": INSTANCE}],
            "responses": {"200": {"description": "Prometheus text format"},
                          "404": {"description": "unknown engine",
                                  "content": {"application/json": {"schema": ERROR}}}}}},
        "/v1/engines/{engine}/logs": {"get": {
            "summary": "the tail of an engine's own log (its supervisord program output); follow=1 streams it",
            "parameters": [
                {"name": "engine", "in": "path", "required": True, "schema": INSTANCE},
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
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            who = audiences.get((method.upper(), path), Audience.ADMIN)  # not served: fail closed
            operation["x-audience"] = who.value
            if who is not Audience.OPEN:
                operation["responses"] = _protected(operation["responses"])
    return {"openapi": "3.1.0", "info": {"title": "unified-llm router", "version": "0.1.0"}, "paths": paths}


@routes.get("/openapi.json")
@audience("open")
async def openapi(request: web.Request) -> web.Response:
    loaded = [{"engine": name, "model_path": m.details.spec.catalog_name or m.details.spec.path}
              for name, group in request.app[ENGINES].items() for m in [group.primary]
              if m.state is State.LOADED and m.details.spec]
    return web.json_response(build_spec(route_audiences(request.app.router), loaded))
