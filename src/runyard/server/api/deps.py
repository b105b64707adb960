"""Dependencies shared by routes: the services and who is calling."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from runyard.core.models import Worker
from runyard.server.services.registry import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _bearer(request: Request) -> str | None:
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
    return _bearer(request)


def require_user(request: Request, svc: Annotated[Services, Depends(services)]) -> str:
    return svc.auth.check_api_key(_bearer(request))


async def require_worker(request: Request, svc: Annotated[Services, Depends(services)]) -> Worker:
    return await svc.auth.worker(_bearer(request))


Svc = Annotated[Services, Depends(services)]
User = Annotated[str, Depends(require_user)]
CurrentWorker = Annotated[Worker, Depends(require_worker)]
