#!/bin/sh
# Point deployment $1's container of the same name at $REGISTRY/$1:$2.
# Needs: kubectl; REGISTRY (and NAMESPACE, default "default").
set -eu
service=$1
tag=$2
: "${REGISTRY:?REGISTRY must be set}"
kubectl --namespace "${NAMESPACE:-default}" set image "deployment/$service" "$service=$REGISTRY/$service:$tag"
