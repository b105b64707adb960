#!/bin/sh
# A launcher shutdown hook for workers on an EC2 Auto Scaling group.
#
# Start the launcher with
#   RUNYARD_METADATA_instance_id=$(instance id from the metadata service)
#   RUNYARD_DISCONNECT_AFTER_IDLE_TIMEOUT=10m
#   RUNYARD_SHUTDOWN_HOOK_PATH=/usr/local/bin/runyard-shutdown-hook
# and an idle launcher ends its own instance, lowering the group's desired
# capacity by one so the group does not start a replacement. Other exits
# (cycled, interrupted, error) leave the instance to the autoscaler.
set -eu
if [ "${RUNYARD_SHUTDOWN_REASON:-}" != "idle" ]; then
  exit 0
fi
exec runyard autoscaler terminate-self
