#!/bin/sh
# A tiny shell stack: each phase prints what it does. The stack's secret
# DEMO_TOKEN is printed on purpose to show that logs mask it.
phase="$1"
echo "phase $phase of run $RUNYARD_RUN_ID (stack $RUNYARD_STACK_NAME)"
case "$phase" in
  init)
    echo "workspace: $(pwd)"
    ls -1
    ;;
  plan)
    echo "greeting will be: $GREETING"
    echo "the token we would use is $DEMO_TOKEN"
    ;;
  apply)
    for i in 1 2 3; do
      echo "applying step $i/3"
      sleep 0.2
    done
    echo "$GREETING"
    ;;
esac
