"""Services own transactions and rules; routes stay thin, the repository dumb."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine

from runyard.server.blobs import BlobStore
from runyard.server.db.repository import Repository
from runyard.server.notifier import Notifier

Clock = Callable[[], float]


@dataclass
class Context:
    """What every service needs: the database, blobs, the notifier, a clock."""

    engine: Engine
    blobs: BlobStore
    notifier: Notifier = field(default_factory=Notifier)
    clock: Clock = time.time
    endpoints: tuple[str, ...] = ()
    long_poll: float = 25.0  # the longest a long poll is held open

    @contextmanager
    def tx(self) -> Iterator[Repository]:
        """One transaction; committed when the block ends without an error."""
        with self.engine.begin() as conn:
            yield Repository(conn)
