"""The control plane: API, scheduler, state, logs."""
