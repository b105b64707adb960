"""Serving the app with uvicorn, with a shutdown that ends held long polls.

On SIGTERM uvicorn waits for open requests before it stops, and cancels the
ones still open after its grace period (a traceback per held poll). Waking
every long poll first lets each answer at once, empty: launchers and
followers simply ask again, of this server once it is back or of another.
"""

from __future__ import annotations

import gc
import sys
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from runyard.server.httpguard import GuardedProtocol
from runyard.server.notifier import Notifier

GRACEFUL_SHUTDOWN = 10.0

# A connection is kept this long between requests: longer than a launcher's
# heartbeat interval (5 s), or every heartbeat would come on a new
# connection (uvicorn's default is 5 s). Each open connection is a file
# descriptor: a server for N workers needs a limit above 2N.
KEEP_ALIVE = 75

# Request threads hand the GIL back and forth around every database call;
# with the default 5 ms switch interval each such call can wait out a whole
# interval behind the event loop's thread, for a read that takes far less.
SWITCH_INTERVAL = 0.0005


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self.notifier = notifier

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.notifier.close()
        super().handle_exit(sig, frame)


def config(app: FastAPI, host: str, port: int, **extra: Any) -> uvicorn.Config:
    """How uvicorn serves the app: httptools with runyard's bounds on the
    request head (:mod:`httpguard`), uvloop when installed."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", loop="auto", http=GuardedProtocol,
                          timeout_keep_alive=KEEP_ALIVE, timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN),
                          **extra)


def serve(app: FastAPI, notifier: Notifier, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; held long polls end cleanly first."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    # What was made at start (modules, schemas, routes: ~140,000 objects)
    # lives as long as the process: out of the collector's sight, a full
    # collection walks only what requests made; each full collection stalls
    # every request (benchmarks/scale.py runs a thousand workers).
    gc.collect()
    gc.freeze()
    _Server(config(app, host, port), notifier).run()
