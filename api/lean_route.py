"""A route for the hottest endpoint that skips FastAPI's per-request dependency solving.

FastAPI solves a route's dependencies on every request (the app-wide query check, the key
guard, the Request parameter), which cost ~9 % of an ingest request's CPU in the profile
(BENCHMARKS.md, "HTTP: CPU per request"). A `LeanRoute`'s endpoint takes exactly
`(request: Request, res: <a guard>)` and validates its own body (the contract code does);
its handler calls the app-wide query check and the guard directly, then the endpoint. The
route is declared like any other, so OpenAPI describes it from the same signature (security,
responses, the body schema from `openapi_extra`), and errors raised by the check, the guard or
the endpoint go through the app's exception handlers as before.

`LeanDispatch` (the innermost of the app's middleware) then skips the router for them: the
first request to a (method, path) goes the usual way, and if the route the router picked is a
LeanRoute, later requests to the same method and path go straight to its handler, past the
router's walk over every route (FastAPI's included routers, their effective-route contexts),
FastAPI's per-request exit stacks and the second exception wrapper (~10 % of an ingest
request's CPU, BENCHMARKS.md). The route is the one the router chose for that very method and
path, the scope names it as the router would (`route`, `endpoint`, `path_params`), and errors
go through an ExceptionMiddleware with the app's own handlers, as they would inside the router.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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
            # Tells LeanDispatch what the router chose for this method and path.
            scope = request.scope
            scope[_SERVED_BY] = _Choice(handler, scope.get("route"), scope.get("endpoint"))
            await reject_unknown_query(request)
            response: Response = await endpoint(request, await guard(request))
            return response

        return handler


_SERVED_BY = "robosense.lean_route"


@dataclass(frozen=True, slots=True)
class _Choice:
    handler: Callable[[Request], Coroutine[Any, Any, Response]]
    route: Any  # scope["route"] and scope["endpoint"] as the router set them
    endpoint: Any


class LeanDispatch:
    """ASGI middleware: requests a LeanRoute served once go straight to it (module docstring)."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        # (method, root_path, path) -> the router's choice, its handler inside the app's
        # exception handling
        self._learned: dict[tuple[str, str, str], tuple[_Choice, ASGIApp]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        learned = self._learned.get(key)
        if learned is not None:
            choice, app = learned
            scope["route"] = choice.route
            scope["endpoint"] = choice.endpoint
            scope["path_params"] = {}
            await app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            chosen = scope.get(_SERVED_BY)
            # Only paths without parameters: the router's choice then depends on nothing else.
            if isinstance(chosen, _Choice) and scope.get("path_params") == {}:
                self._learned[key] = (chosen, self._direct(chosen.handler))

    def _direct(self, handler: Callable[[Request], Coroutine[Any, Any, Response]]) -> ASGIApp:

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        # The handlers FastAPI gives the ExceptionMiddleware in front of its router
        # (FastAPI.build_middleware_stack): all but the catch-all, which stays outermost.
        handlers = {
            key: value
            for key, value in self.fastapi.exception_handlers.items()
            if key not in (500, Exception)
        }
        return ExceptionMiddleware(app, handlers=handlers, debug=self.fastapi.debug)
