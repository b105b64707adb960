"""The `runyard` command: the composition root that wires real objects."""
