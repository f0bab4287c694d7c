"""What each route declares for /openapi.json, on its handler, so a route is
documented where it is written. A leaf: the handler modules import it, and it
imports none of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

Schema = dict[str, Any]
_Handler = TypeVar("_Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation, declared by decorating its handler with it. 401 and
    429 are added from the routes the access middleware exempts, 500 to
    every operation."""

    summary: str
    _: KW_ONLY
    tag: str
    status: int = 200
    answer: type[BaseModel] | Schema | None = None
    """The answer's model, or a schema for one without a model; None for no body."""
    many: bool = False
    """Whether the answer is a JSON array of `answer`."""
    also: Mapping[int, str] = field(default_factory=dict)
    """Other statuses answered with the same body, and what they mean."""
    other_answer: tuple[int, str, type[BaseModel]] | None = None
    """A status answered with another model (what a query parameter asks
    for, a dry run say), and what it means: beside `answer` (`oneOf`) when
    the status is the same."""
    media_types: Sequence[str] = ("application/json",)
    """What the answer is served as (several when it depends on what is asked for)."""
    headers: Mapping[str, Schema] = field(default_factory=dict)
    body: type[BaseModel] | Schema | None = None
    """The request body's model, or its schema."""
    params: Sequence[Schema] = ()
    errors: Sequence[int] = ()
    error_text: Mapping[int, str] = field(default_factory=dict)
    """What an error status means here, where it means more than usual."""
    description: str | None = None

    def __call__(self, handler: _Handler) -> _Handler:
        DECLARED[handler] = self
        return handler


DECLARED: dict[Callable[..., Any], Operation] = {}


def query_of(model: type[BaseModel]) -> list[Schema]:
    """Query parameters that take what `model` takes as a body (a nullable
    field is simply left out), so the two cannot disagree."""
    schema = model.model_json_schema(by_alias=True)
    params = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        for branch in prop.pop("anyOf", ()):
            if branch.get("type") != "null":
                prop.update(branch)
        if prop.get("default", "") is None:
            del prop["default"]
        param: Schema = {"name": name, "in": "query", "schema": prop}
        if name in schema.get("required", ()):
            param["required"] = True
        if description:
            param["description"] = description
        params.append(param)
    return params


INSTANT: Schema = {"type": "string", "format": "date-time", "minLength": 1}
"""A query instant: RFC 3339 with an offset or Z; empty is refused, not ignored."""
ID: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
}
PAGE: tuple[Schema, ...] = (
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string", "minLength": 1},
        "description": "from the Link header; left out for the first page",
    },
)
LINK: Mapping[str, Schema] = {
    "Link": {
        "description": 'the next page: <URL>; rel="next" (RFC 8288)',
        "schema": {"type": "string"},
    }
}
TEXT: Schema = {"type": "string"}
ANY_OBJECT: Schema = {"type": "object"}
