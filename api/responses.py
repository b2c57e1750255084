"""JSON responses serialized by orjson, without a pydantic pass over data we built ourselves."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_NON_STR_KEYS


class JSONBytes(JSONResponse):
    """A JSON response from any orjson-serializable value (orjson.Fragment for stored JSON)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content, option=_OPTIONS)
