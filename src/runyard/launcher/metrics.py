"""The launcher's own Prometheus metrics, served on --metrics-port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, start_http_server


class LauncherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.state = Enum("runyard_launcher_state", "What the launcher is doing",
                          states=["starting", "idle", "busy", "stopping"], registry=self.registry)
        self.runs = Counter("runyard_launcher_runs", "Runs this launcher ended, by end state", ["state"],
                            registry=self.registry)
        self.state.state("starting")

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
