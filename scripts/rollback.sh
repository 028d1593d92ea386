#!/bin/sh
# Roll a Kubernetes deployment back: to the previous revision, or to image tag $2.
# Usage: rollback.sh SERVICE [VERSION]   (opsbot validates both before calling)
# Needs: kubectl, KUBECONFIG; optional NAMESPACE (default "default"), REGISTRY for tagged rollbacks.
set -eu
service=$1
version=${2:-}
ns=${NAMESPACE:-default}
if [ -z "$version" ]; then
  kubectl -n "$ns" rollout undo "deployment/$service"
else
  : "${REGISTRY:?REGISTRY must be set to roll back to a tag}"
  kubectl -n "$ns" set image "deployment/$service" "$service=$REGISTRY/$service:$version"
fi
kubectl -n "$ns" rollout status "deployment/$service" --timeout=100s
