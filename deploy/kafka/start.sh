#!/bin/bash
# Kafka for the compose stack: start the broker, then (in the background, once it answers on the loopback-only
# LOCAL listener) create one SCRAM-SHA-512 user per acefarm service and its topic ACLs. The healthcheck passes
# only after that (it waits for /tmp/acefarm-kafka-ready), so services start with their users in place.
# Passwords come from SCRAM_<SERVICE> variables (compose: required ${KAFKA_<SERVICE>_PASSWORD:?}).
set -euo pipefail
BIN=/opt/kafka/bin
LOCAL=127.0.0.1:9094
rm -f /tmp/acefarm-kafka-ready

acl() {  # acl USER OPERATION RESOURCE-ARGS...
  local user=$1 op=$2; shift 2
  "$BIN/kafka-acls.sh" --bootstrap-server "$LOCAL" --add --allow-principal "User:$user" --operation "$op" "$@" >/dev/null
}

topics() {  # topics USER OPERATION TOPIC...
  local user=$1 op=$2; shift 2
  for topic in "$@"; do acl "$user" "$op" --topic "acefarm.$topic"; done
}

setup() {
  until "$BIN/kafka-broker-api-versions.sh" --bootstrap-server "$LOCAL" >/dev/null 2>&1; do sleep 1; done
  for user in gateway streams scheduler planner gpu trainer webhooks; do
    var="SCRAM_${user^^}"
    "$BIN/kafka-configs.sh" --bootstrap-server "$LOCAL" --alter --entity-type users --entity-name "$user" \
      --add-config "SCRAM-SHA-512=[password=${!var:?$var is not set}]" >/dev/null
    # Every service may see and create the acefarm topics (each creates missing ones at start) and dead-letter.
    acl "$user" Describe --topic acefarm. --resource-pattern-type prefixed
    acl "$user" Create --topic acefarm. --resource-pattern-type prefixed
    acl "$user" DescribeConfigs --topic acefarm. --resource-pattern-type prefixed
    topics "$user" Write deadletter workers
  done
  topics gateway Write generation.requests planning.requests training.requests task.control api.keys
  topics gateway Read task.status api.keys workers scheduler.queues generation.requests planning.requests training.requests
  acl gateway Describe --group generation-schedulers
  acl gateway Describe --group gpu-workers
  acl gateway Describe --group lm-planners
  acl gateway Describe --group lora-trainers
  topics streams Read generation.requests planning.requests training.requests task.events task.control
  topics streams Write task.status
  acl streams All --topic acefarm-streams --resource-pattern-type prefixed   # faust's changelogs
  acl streams All --group acefarm-streams --resource-pattern-type prefixed
  topics scheduler Read generation.requests generation.ready scheduler.queues
  topics scheduler Write generation.ready scheduler.queues task.events
  acl scheduler Read --group generation-schedulers
  acl scheduler Read --group gpu-workers
  acl scheduler Describe --group gpu-workers
  topics planner Read planning.requests task.control
  topics planner Write task.events generation.requests
  acl planner Read --group lm-planners
  topics gpu Read generation.ready task.control
  topics gpu Write task.events
  acl gpu Read --group gpu-workers
  topics trainer Read training.requests task.control
  topics trainer Write task.events
  acl trainer Read --group lora-trainers
  topics webhooks Read task.status webhooks.retries
  topics webhooks Write webhooks.retries task.events
  acl webhooks Read --group webhooks
  acl webhooks Read --group webhooks-retries
  touch /tmp/acefarm-kafka-ready
  echo "acefarm: SCRAM users and ACLs are in place"
}

setup &
exec /etc/kafka/docker/run
