"""The autoscaler's Prometheus metrics: desired, actual, booting, decisions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runyard.autoscaler.loop import Autoscaler


class _Fleet(Collector):
    def __init__(self, scalers: Sequence[Autoscaler]) -> None:
        self.scalers = scalers

    def collect(self) -> Iterator[Metric]:
        desired = GaugeMetricFamily("runyard_autoscaler_desired", "Desired instances", labels=["pool"])
        actual = GaugeMetricFamily("runyard_autoscaler_actual", "Instances with a worker", labels=["pool"])
        booting = GaugeMetricFamily("runyard_autoscaler_booting", "Instances with no worker yet", labels=["pool"])
        decisions = CounterMetricFamily("runyard_autoscaler_decisions", "Decisions by reason",
                                        labels=["pool", "reason"])
        for scaler in self.scalers:
            seen = scaler.observed
            desired.add_metric([scaler.pool], seen.desired)
            actual.add_metric([scaler.pool], seen.in_service)
            booting.add_metric([scaler.pool], seen.booting)
            for reason, count in seen.decisions.items():
                decisions.add_metric([scaler.pool, reason], count)
        yield from (desired, actual, booting, decisions)


def serve(scalers: Sequence[Autoscaler], port: int) -> None:
    registry = CollectorRegistry()
    registry.register(_Fleet(scalers))
    start_http_server(port, addr="127.0.0.1", registry=registry)
