"""Routes that skip FastAPI's per-request dependency solving; the hot routes are declared so.

FastAPI solves a route's dependencies on every request (the app-wide query check, the key
guard, the Request parameter, each query parameter in turn), which cost ~9 % of an ingest
request's CPU and ~12 % of a worker serving the older clients' reads in the profiles
(BENCHMARKS.md, "HTTP: CPU per request", "Where a REST request's CPU goes now"). A
`LeanRoute`'s endpoint takes one key guard, optionally the Request, and query and path
parameters; its handler calls the app-wide query check and the guard directly, then has
FastAPI's own `request_params_to_args` validate the query and path parameters (the same checks,
defaults and error locations as through `solve_dependencies`), then calls the endpoint, which
returns a Response. A body is read and validated by the endpoint itself (the contract code
does). The route is declared like any other, so OpenAPI describes it from the same signature
(security, parameters, responses, the body schema from `openapi_extra`), and errors raised by
the check, the guard, the validation or the endpoint go through the app's exception handlers as
before. Anything else FastAPI would solve (a body parameter, a header, a second dependency) is
refused at start-up rather than silently skipped.

`LeanDispatch` (the innermost of the app's middleware) then skips the router for them: the
first request to a (method, path) goes the usual way, and if the route the router picked is a
LeanRoute, later requests to the same method and path go straight to its handler with the path
parameters the router found in that path, past the router's walk over every route (FastAPI's
included routers, their effective-route contexts), FastAPI's per-request exit stacks and the
second exception wrapper (~10 % of an ingest request's CPU, BENCHMARKS.md). Paths with
parameters (a robot's detail) are learned up to a bound, since how many there are is up to the
clients; past it they keep going through the router. The route is the one the router chose for
that very method and path (the router matches on nothing else), the scope names it as the
router would (`route`, `endpoint`, `path_params`), and errors go through an ExceptionMiddleware
with the app's own handlers, as they would inside the router.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi._compat import ModelField
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import KeyGuard
from api.strict_query import reject_unknown_query


def _unservable(dependant: Dependant) -> str | None:
    """Why a LeanRoute cannot serve this endpoint, or None."""
    if not inspect.iscoroutinefunction(dependant.call):
        return "a coroutine function (async def)"
    subs = dependant.dependencies
    if len(subs) != 1 or not isinstance(subs[0].call, KeyGuard) or subs[0].name is None:
        return "exactly one key guard as a parameter (res: <guard>)"
    others = {
        "body parameter (it reads its own body)": dependant.body_params,
        "header parameter": dependant.header_params,
        "cookie parameter": dependant.cookie_params,
        "WebSocket": dependant.websocket_param_name,
        "HTTPConnection": dependant.http_connection_param_name,
        "Response parameter": dependant.response_param_name,
        "BackgroundTasks": dependant.background_tasks_param_name,
        "SecurityScopes": dependant.security_scopes_param_name,
    }
    for what, present in others.items():
        if present:
            return f"no {what}"
    return None


def _validated(
    fields: list[ModelField], received: Mapping[str, Any], values: dict[str, Any]
) -> list[Any]:
    """FastAPI's validation of these parameters: the valid ones go into `values`; the errors."""
    valid, errors = request_params_to_args(fields, received)
    values.update(valid)
    return errors


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        why = _unservable(dependant)
        if why is not None:
            raise TypeError(f"{self.path}: a LeanRoute endpoint takes {why}")
        guard = dependant.dependencies[0]
        check = guard.call
        assert isinstance(check, KeyGuard) and guard.name is not None
        guard_name = guard.name
        request_name = dependant.request_param_name
        query, path = dependant.query_params, dependant.path_params
        endpoint = self.endpoint
        path_template = self.path

        async def handler(request: Request) -> Response:
            # Tells LeanDispatch what the router chose for this method and path.
            scope = request.scope
            scope[_SERVED_BY] = _Choice(handler, scope.get("route"), scope.get("endpoint"))
            await reject_unknown_query(request)
            # FastAPI's order: dependencies (the guard) first, then the parameters.
            values: dict[str, Any] = {guard_name: await check(request)}
            if request_name is not None:
                values[request_name] = request
            # Only the kinds the route declares: the ingest route has neither, and needs no
            # parsed query for it.
            errors: list[Any] = []
            if path:
                errors += _validated(path, request.path_params, values)
            if query:
                errors += _validated(query, request.query_params, values)
            if errors:
                raise RequestValidationError(errors)
            response = await endpoint(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{path_template}: a LeanRoute endpoint returns a Response")
            return response

        return handler


_SERVED_BY = "robosense.lean_route"


@dataclass(frozen=True, slots=True)
class _Choice:
    handler: Callable[[Request], Coroutine[Any, Any, Response]]
    route: Any  # scope["route"] and scope["endpoint"] as the router set them
    endpoint: Any


# Learned paths with parameters, at most: a robot's detail is one path per robot.
_MAX_LEARNED_WITH_PARAMS = 10_000


class LeanDispatch:
    """ASGI middleware: requests a LeanRoute served once go straight to it (module docstring)."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        # (method, root_path, path) -> the router's choice, its path parameters, and its
        # handler inside the app's exception handling
        self._learned: dict[tuple[str, str, str], tuple[_Choice, dict[str, Any], ASGIApp]] = {}
        self._with_params = 0
        self._direct_apps: dict[Callable[[Request], Coroutine[Any, Any, Response]], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        learned = self._learned.get(key)
        if learned is not None:
            choice, params, app = learned
            scope["route"] = choice.route
            scope["endpoint"] = choice.endpoint
            scope["path_params"] = dict(params)
            await app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._learn(key, scope)

    def _learn(self, key: tuple[str, str, str], scope: Scope) -> None:
        chosen = scope.get(_SERVED_BY)
        params = scope.get("path_params")
        if not isinstance(chosen, _Choice) or not isinstance(params, dict):
            return
        if params:
            if self._with_params >= _MAX_LEARNED_WITH_PARAMS:
                return
            self._with_params += 1
        app = self._direct_apps.get(chosen.handler)
        if app is None:
            app = self._direct_apps[chosen.handler] = self._direct(chosen.handler)
        self._learned[key] = (chosen, dict(params), app)

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
