"""Refuses query parameters a route does not declare, so a typo (`?robot=` for `?robot_id=`)
or a filter that does not exist cannot silently widen what a request reads."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.http_errors import InvalidQueryError

# Each route's declared query names, derived once from its own parameters (and those of its
# dependencies), so a parameter added to a route is accepted without touching this module.
_DECLARED: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared(route: APIRoute) -> frozenset[str]:
    names = _DECLARED.get(id(route))
    if names is None:
        names = _DECLARED[id(route)] = frozenset(_query_names(route.dependant))
    return names


async def reject_unknown_query(request: Request) -> None:
    """An app-wide dependency: 422 `invalid_query` naming every undeclared parameter."""
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _declared(route)
    unknown = sorted({key for key in request.query_params if key not in declared})
    if unknown:
        takes = ", ".join(sorted(declared)) or "none"
        raise InvalidQueryError(
            unknown[0],
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; this endpoint takes: {takes}",
        )
