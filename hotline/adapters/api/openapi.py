"""The API's OpenAPI 3 document, served at /api/v1/openapi.json: the one description of every
route, its role, its parameters and bodies. Request bodies and query parameters are validated
against the schemas written here (`validate.py`), so the document and the checks cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from hotline.core.supervision import Role

Method = Literal["GET", "POST", "DELETE"]
Json = dict[str, object]

NAME_PATTERN: Final = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME: Final[Json] = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 64}
_TEXT: Final[Json] = {"type": "string", "minLength": 1, "maxLength": 200}
# An ISO 8601 date, or date and time, with or without an offset.
_INSTANT_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_INSTANT: Final[Json] = {"type": "string", "format": "date-time", "maxLength": 40}
_NULLABLE_INSTANT: Final[Json] = {**_INSTANT, "nullable": True}
_ANY_OBJECT: Final[Json] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: who may call it (None: anyone) and the schema of its body, if any."""

    method: Method
    path: str  # aiohttp's form: /api/v1/responders/{responder}/pause
    operation: str  # operationId, and the handler's name
    role: Role | None
    body: str | None  # a schema under components.schemas
    summary: str
    params: tuple[Json, ...] = ()
    responses: tuple[tuple[int, str | None], ...] = ()  # status -> schema name (None: no body)
    content: str = "application/json"


_RESPONDER_PARAM: Final[Json] = {
    "name": "responder",
    "in": "path",
    "required": True,
    "schema": _NAME,
}
_QUEUE_PARAM: Final[Json] = {"name": "queue", "in": "path", "required": True, "schema": _NAME}
_OVERRIDE_PARAM: Final[Json] = {
    "name": "override_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
}

ROUTES: Final[tuple[Route, ...]] = (
    Route(
        "GET", "/api/v1/board", "get_board", "viewer", None,
        "Every queue now: callers waiting, members, scheduled now and next, coverage, overrides",
        responses=((200, "Board"),),
    ),
    Route(
        "GET", "/api/v1/board/events", "board_events", "viewer", None,
        "The board as server-sent events: one `board` event at once, then one a second",
        responses=((200, None),), content="text/event-stream",
    ),
    Route(
        "GET", "/api/v1/queues/{queue}", "get_queue", "viewer", None,
        "One queue now, as on the board",
        params=(_QUEUE_PARAM,), responses=((200, "Queue"), (404, "Error")),
    ),
    Route(
        "GET", "/api/v1/plan", "get_plan", "viewer", None,
        "Who should be in which queue at an instant: the contract of `hotline plan --json`",
        params=(
            {
                "name": "at",
                "in": "query",
                "required": False,
                "description": "ISO 8601; without an offset, a wall-clock time in the roster's "
                "zone; default now",
                "schema": {"type": "string", "maxLength": 40, "pattern": _INSTANT_PATTERN},
            },
        ),
        responses=((200, "Plan"), (400, "Error")),
    ),
    Route(
        "GET", "/api/v1/pause-reasons", "get_pause_reasons", "viewer", None,
        "The configured pause reasons and their limits",
        responses=((200, "PauseReasons"),),
    ),
    Route(
        "GET", "/api/v1/responders", "get_responders", "viewer", None,
        "Every responder of the roster, with their name and queues",
        responses=((200, "Responders"),),
    ),
    Route(
        "GET", "/api/v1/overrides", "get_overrides", "viewer", None,
        "The overrides that have not ended",
        responses=((200, "Overrides"),),
    ),
    Route(
        "GET", "/api/v1/audit", "get_audit", "supervisor", None,
        "Recent audit entries, newest first; before and after states for admin only",
        params=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        ),
        responses=((200, "Audit"), (400, "Error"), (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/responders/{responder}/pause", "pause", "supervisor", "PauseRequest",
        "Pause a responder in one queue or all of theirs, with a configured reason",
        params=(_RESPONDER_PARAM,),
        responses=((200, "Result"), (400, "Error"), (404, "Error"), (409, "Error"),
                   (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/responders/{responder}/unpause", "unpause", "supervisor",
        "UnpauseRequest", "Lift a responder's pause in one queue or all of theirs",
        params=(_RESPONDER_PARAM,),
        responses=((200, "Result"), (400, "Error"), (404, "Error"), (409, "Error"),
                   (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/overrides", "add_override", "supervisor", "OverrideRequest",
        "Put a responder on or off duty, in some or all queues, from now until a time",
        responses=((201, "Override"), (400, "Error"), (404, "Error"), (409, "Error"),
                   (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/overrides/{override_id}/cancel", "cancel_override", "supervisor",
        "CancelRequest", "End an override now",
        params=(_OVERRIDE_PARAM,),
        responses=((200, "Result"), (400, "Error"), (404, "Error"), (409, "Error"),
                   (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/resync", "resync", "supervisor", "ResyncRequest",
        "Read Asterisk's queues again and reconcile now",
        responses=((200, "Result"), (400, "Error"), (503, "Error")),
    ),
    Route(
        "POST", "/api/v1/session", "sign_in", None, "SignIn",
        "Sign in to the console with a token: sets the session cookie",
        responses=((200, "Session"), (400, "Error"), (401, "Error"), (429, "Error")),
    ),
    Route(
        "GET", "/api/v1/session", "get_session", "viewer", None,
        "The signed-in holder, role and CSRF token of the console session",
        responses=((200, "Session"),),
    ),
    Route(
        "DELETE", "/api/v1/session", "sign_out", "viewer", None,
        "Sign out of the console: ends the session",
        responses=((200, "Result"),),
    ),
)  # fmt: skip

_ERROR: Final[Json] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}

SCHEMAS: Final[dict[str, Json]] = {
    "Error": _ERROR,
    "Result": {
        "type": "object",
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}, "result": _ANY_OBJECT},
    },
    "PauseRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["reason"],
        "properties": {
            "reason": _NAME,
            "queue": {**_NAME, "nullable": True, "description": "absent or null: every queue"},
        },
    },
    "UnpauseRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"queue": {**_NAME, "nullable": True}},
    },
    "OverrideRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["responder", "on", "until"],
        "properties": {
            "responder": _NAME,
            "on": {"type": "boolean", "description": "true: on duty; false: off duty"},
            "queues": {
                "type": "array",
                "items": _NAME,
                "minItems": 1,
                "maxItems": 100,
                "uniqueItems": True,
                "nullable": True,
                "description": "absent or null: every queue of the responder",
            },
            "until": {**_INSTANT, "description": "when it ends; must be in the future"},
            "reason": {**_TEXT, "nullable": True},
        },
    },
    "CancelRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {**_TEXT, "nullable": True}},
    },
    "ResyncRequest": {"type": "object", "additionalProperties": False, "properties": {}},
    "SignIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["token"],
        "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 200}},
    },
    "Session": {
        "type": "object",
        "required": ["name", "role"],
        "properties": {
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["viewer", "supervisor", "admin"]},
            "csrf": {"type": "string", "nullable": True},
        },
    },
    "Override": {
        "type": "object",
        "required": ["id", "responder", "on", "queues", "start", "end"],
        "properties": {
            "id": {"type": "integer"},
            "responder": {"type": "string"},
            "on": {"type": "boolean"},
            "queues": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "start": _INSTANT,
            "end": _INSTANT,
        },
    },
    "Overrides": {
        "type": "object",
        "required": ["overrides"],
        "properties": {
            "overrides": {"type": "array", "items": {"$ref": "#/components/schemas/Override"}}
        },
    },
    "Member": {
        "type": "object",
        "required": ["responder", "state", "for_s", "over_limit"],
        "properties": {
            "responder": {"type": "string", "description": "the member's name in Asterisk"},
            "state": {
                "type": "string",
                "enum": ["available", "ringing", "in_call", "paused", "wrapup", "unavailable"],
            },
            "for_s": {"type": "integer", "nullable": True, "description": "in this state"},
            "paused_reason": {"type": "string", "description": "only while paused"},
            "paused_for_s": {"type": "integer", "description": "only while paused"},
            "over_limit": {"type": "boolean", "description": "paused past its reason's limit"},
        },
    },
    "Queue": {
        "type": "object",
        "required": ["name", "callers", "min_responders", "present", "covered", "members"],
        "properties": {
            "name": {"type": "string"},
            "callers": {
                "type": "object",
                "required": ["waiting", "longest_wait_s", "waits_s"],
                "properties": {
                    "waiting": {"type": "integer", "minimum": 0},
                    "longest_wait_s": {"type": "integer", "minimum": 0},
                    "waits_s": {"type": "array", "items": {"type": "integer"}},
                },
            },
            "min_responders": {"type": "integer"},
            "present": {"type": "integer"},
            "covered": {"type": "boolean"},
            "surging": {"type": "boolean"},
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
            "scheduled_now": {
                "type": "object",
                "description": "the responders the roster puts in the queue now, by why: "
                "shift, exception_on, override_on, surge",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
            "next_change": {
                "type": "object",
                "properties": {
                    "at": _NULLABLE_INSTANT,
                    "responders": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "Board": {
        "type": "object",
        "required": ["at", "queues", "overrides"],
        "properties": {
            "at": _INSTANT,
            "queues": {"type": "array", "items": {"$ref": "#/components/schemas/Queue"}},
            "overrides": {"type": "array", "items": {"$ref": "#/components/schemas/Override"}},
        },
    },
    "Plan": {
        "type": "object",
        "required": ["at", "queues"],
        "properties": {"at": _INSTANT, "queues": _ANY_OBJECT},
    },
    "Responders": {
        "type": "object",
        "required": ["responders"],
        "properties": {
            "responders": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "queues"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "queues": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    },
    "PauseReasons": {
        "type": "object",
        "required": ["reasons"],
        "properties": {
            "reasons": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "max_s", "lift_at_limit"],
                    "properties": {
                        "name": {"type": "string"},
                        "max_s": {"type": "number", "nullable": True},
                        "lift_at_limit": {"type": "boolean"},
                    },
                },
            }
        },
    },
    "Audit": {
        "type": "object",
        "required": ["entries"],
        "properties": {
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "actor", "role", "action", "target"],
                    "properties": {
                        "at": _INSTANT,
                        "actor": {"type": "string"},
                        "role": {"type": "string"},
                        "action": {"type": "string"},
                        "target": {"type": "string"},
                        "reason": {"type": "string", "nullable": True},
                        "before": {"type": "object", "nullable": True},
                        "after": {"type": "object", "nullable": True},
                        "request_id": {"type": "string", "nullable": True},
                    },
                },
            }
        },
    },
}

# Every route that needs a role may answer these, whatever its own outcomes.
_AUTH_RESPONSES: Final = (
    (401, "no token, an unknown one, or no session"),
    (403, "the role does not allow it, or a cross-site request"),
    (429, "too many failed sign-ins from this address"),
)
_DESCRIPTIONS: Final = {
    200: "OK",
    201: "Created",
    400: "A bad parameter or body; `field` names it",
    404: "An unknown responder, queue, override or pause reason",
    409: "Refused: the state does not allow it, or Asterisk refused it (its reason)",
    503: "Asterisk or Postgres cannot be reached now; nothing changed",
}


def document() -> Json:
    """The OpenAPI 3.0 document of every route in ROUTES."""
    paths: dict[str, dict[str, Json]] = {}
    for route in ROUTES:
        responses: dict[str, Json] = {}
        for status, schema in route.responses:
            response: Json = {"description": _DESCRIPTIONS.get(status, "OK")}
            if schema is not None:
                ref = {"$ref": f"#/components/schemas/{schema}"}
                response["content"] = {"application/json": {"schema": ref}}
            elif route.content != "application/json":
                response["content"] = {route.content: {"schema": {"type": "string"}}}
            responses[str(status)] = response
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        if route.role is not None:
            for status, text in _AUTH_RESPONSES:
                responses.setdefault(str(status), {"description": text, "content": error})
        if route.body is not None or route.params:
            responses.setdefault("400", {"description": _DESCRIPTIONS[400], "content": error})
        operation: Json = {
            "operationId": route.operation,
            "summary": route.summary,
            "responses": responses,
            "security": [{"bearer": []}, {"session": []}] if route.role is not None else [],
        }
        if route.role is not None:
            operation["x-role"] = route.role
        if route.params:
            operation["parameters"] = list(route.params)
        if route.body is not None:
            required = bool(SCHEMAS[route.body].get("required"))
            ref = {"$ref": f"#/components/schemas/{route.body}"}
            operation["requestBody"] = {
                "required": required,
                "content": {"application/json": {"schema": ref}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hotline supervision API",
            "version": "1",
            "description": "Read the live queues and act on them (docs/api.md). Roles: viewer "
            "reads; supervisor also acts and reads the audit trail; admin also reads each audit "
            "entry's before and after states.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "hotline_session"},
            },
        },
    }
