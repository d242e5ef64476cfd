#!/bin/sh
# Wait for the Temporal frontend, then create Breadcrumb's namespace if it does not exist yet
# (the plain temporalio/server image, unlike auto-setup, creates none). Runs in temporalio/admin-tools.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-72h}"

# The CLI dials the first address the name resolves to; pin it to IPv4 where the network has one.
HOST="${ADDRESS%:*}"
PORT="${ADDRESS##*:}"
if command -v getent >/dev/null 2>&1; then
  IP="$(getent ahostsv4 "$HOST" 2>/dev/null | awk 'NR == 1 { print $1 }')"
  [ -n "$IP" ] && ADDRESS="$IP:$PORT"
fi

tries=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 90 ]; then
    echo "Temporal at $ADDRESS is not serving after 3 minutes" >&2
    exit 1
  fi
  sleep 2
done

if temporal operator namespace describe --namespace "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
  echo "namespace $NAMESPACE: exists"
else
  temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION" --address "$ADDRESS"
  echo "namespace $NAMESPACE: created (retention $RETENTION)"
fi
