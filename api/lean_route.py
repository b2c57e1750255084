"""A route for the hottest endpoint that skips FastAPI's per-request dependency solving.

FastAPI solves a route's dependencies on every request (the app-wide query check, the key
guard, the Request parameter), which cost ~9 % of an ingest request's CPU in the profile
(BENCHMARKS.md, "HTTP: CPU per request"). A `LeanRoute`'s endpoint takes exactly
`(request: Request, res: <a guard>)` and validates its own body (the contract code does);
its handler calls the app-wide query check and the guard directly, then the endpoint. The
route is declared like any other, so OpenAPI describes it from the same signature (security,
responses, the body schema from `openapi_extra`), and errors raised by the check, the guard or
the endpoint go through the app's exception handlers as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from api.auth import KeyGuard
from api.strict_query import reject_unknown_query


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        guards = [d.call for d in self.dependant.dependencies if isinstance(d.call, KeyGuard)]
        params = list(inspect.signature(self.endpoint).parameters)
        # Anything else FastAPI would have solved (a query or body parameter, a second
        # dependency) would be silently skipped here: refuse such a route at start-up.
        if len(guards) != 1 or len(params) != 2 or len(self.dependant.dependencies) != 1:
            raise TypeError(
                f"{self.path}: a LeanRoute endpoint takes (request: Request, res: <guard>)"
            )
        guard = guards[0]
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            await reject_unknown_query(request)
            response: Response = await endpoint(request, await guard(request))
            return response

        return handler
