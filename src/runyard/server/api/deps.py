"""Dependencies shared by routes: the services and who is calling."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from runyard.core.models import Worker
from runyard.server.services.registry import Services

# Dependencies are coroutines: FastAPI runs a plain function in a worker
# thread, a hop per dependency per request (profiled: a fifth of the
# server's time under load went to hops and their bookkeeping).


# How long a held call (a poll, a log follow, a demand watch) may wait: a
# number of seconds, never NaN or infinite (the service bounds it by the
# server's long poll). One declaration for FastAPI and the worker lane.
Wait = Annotated[float, Query(ge=0, allow_inf_nan=False, description="seconds to hold the call open at most")]
WAIT = TypeAdapter(Wait)


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def credential(request: Request) -> str | None:
    """A bearer token, or the password of HTTP basic auth (what terraform's
    http backend sends)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (ValueError, binascii.Error):
            return None
        return decoded.partition(":")[2] or None
    return bearer(request)


async def require_user(request: Request, svc: Annotated[Services, Depends(services)]) -> str:
    return await svc.auth.user(bearer(request))


async def require_worker(request: Request, svc: Annotated[Services, Depends(services)]) -> Worker:
    return await svc.auth.worker(bearer(request))


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """A JSON body parsed and validated in one pass (pydantic's own parser),
    for bodies too large for the usual parse-then-validate; refused in the
    same shape as any invalid body."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]) from None


def body_schema(model: type[BaseModel]) -> dict[str, object]:
    """The OpenAPI request body of a route that parses ``model`` itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


Svc = Annotated[Services, Depends(services)]
User = Annotated[str, Depends(require_user)]
CurrentWorker = Annotated[Worker, Depends(require_worker)]
