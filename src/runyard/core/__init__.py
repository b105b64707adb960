"""The pure domain: records, the run state machine, masking, durations.

Nothing in here does I/O or imports a third-party package, so every process
(server, launcher, autoscaler, CLI) can share it.
"""
