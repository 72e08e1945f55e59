#!/bin/bash
# kafka-init (docker-compose.yml): the OMS's topics, Kafka principals and ACLs on the compose
# broker, as its super user over the internal listener. Idempotent: run on every `up`.
#
# Who may do what (README "Production security"; docs/decisions/0016):
#   oms-worker    read the raw and control topics, write the outputs (events, commands, channel
#                 stock and updates, DLQ) and oms.operator (its timers, its order API); its own
#                 Faust topics and consumer group
#   oms-sink      read the fact topics; its consumer group
#   oms-wms       read oms.fulfilment.commands, write oms.wms.events only; groups <prefix>-wms*
#   oms-operator  write oms.operator and oms.aftersales only (./oms held, ./oms aftersales);
#                 read oms.dlq (./oms dlq list)
#   oms-ingest    write oms.raw.* only (the platform team's producers; ./oms ingest, dlq
#                 replay); read oms.dlq
# Nobody else may do anything: the broker runs with allow.everyone.if.no.acl.found=false.
set -euo pipefail
for var in OMS_KAFKA_ADMIN_PASSWORD OMS_KAFKA_WORKER_PASSWORD OMS_KAFKA_SINK_PASSWORD \
    OMS_KAFKA_WMS_PASSWORD OMS_KAFKA_OPERATOR_PASSWORD OMS_KAFKA_INGEST_PASSWORD; do
    if [ -z "${!var:-}" ]; then
        echo "kafka-init: $var is not set (see .env.example)" >&2
        exit 2
    fi
done
P="${OMS_TOPIC_PREFIX:-oms}"
APP="${OMS_APP_ID:-oms-core}"
PARTITIONS="${OMS_PARTITIONS:-8}"
BIN=/opt/kafka/bin
umask 077
ADMIN=/tmp/oms-init-admin.properties
cat >"$ADMIN" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${OMS_KAFKA_ADMIN_PASSWORD}";
PROPS
K=(--bootstrap-server "${OMS_KAFKA_INTERNAL:-kafka:9094}" --command-config "$ADMIN")

echo "kafka-init: topics"
for t in raw.taobao raw.jd raw.douyin raw.shopify raw.amazon raw.own order-events \
    fulfilment.commands wms.events aftersales channel.stock channel.updates operator dlq; do
    "$BIN/kafka-topics.sh" "${K[@]}" --create --if-not-exists --topic "$P.$t" \
        --partitions "$PARTITIONS" --replication-factor 1 >/dev/null
done

echo "kafka-init: SCRAM principals"
scram() {
    "$BIN/kafka-configs.sh" "${K[@]}" --alter --entity-type users --entity-name "$1" \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]" >/dev/null
}
scram oms-worker "$OMS_KAFKA_WORKER_PASSWORD"
scram oms-sink "$OMS_KAFKA_SINK_PASSWORD"
scram oms-wms "$OMS_KAFKA_WMS_PASSWORD"
scram oms-operator "$OMS_KAFKA_OPERATOR_PASSWORD"
scram oms-ingest "$OMS_KAFKA_INGEST_PASSWORD"

echo "kafka-init: ACLs"
acl() { "$BIN/kafka-acls.sh" "${K[@]}" --add --force "$@" >/dev/null; }
topics() { for t in "$@"; do printf -- '--topic\n%s\n' "$P.$t"; done; }
mapfile -t CONTROL < <(topics operator aftersales wms.events)
mapfile -t OUTPUTS < <(topics order-events fulfilment.commands channel.stock channel.updates dlq operator)
mapfile -t FACTS < <(topics order-events dlq fulfilment.commands wms.events aftersales)

W=User:oms-worker
acl --allow-principal "$W" --operation Read --topic "$P.raw." --resource-pattern-type prefixed
acl --allow-principal "$W" --operation Read "${CONTROL[@]}"
acl --allow-principal "$W" --operation Write "${OUTPUTS[@]}"
# Faust's own topics (table changelogs, the assignor's leader topic) and its consumer group.
acl --allow-principal "$W" --operation All --topic "$APP" --resource-pattern-type prefixed
acl --allow-principal "$W" --operation Read --group "$APP"

S=User:oms-sink
acl --allow-principal "$S" --operation Read "${FACTS[@]}"
acl --allow-principal "$S" --operation Read --group "$APP-facts"

M=User:oms-wms
acl --allow-principal "$M" --operation Read --topic "$P.fulfilment.commands"
acl --allow-principal "$M" --operation Write --topic "$P.wms.events"
acl --allow-principal "$M" --operation Read --group "$P-wms" --resource-pattern-type prefixed

O=User:oms-operator
acl --allow-principal "$O" --operation Write --topic "$P.operator" --topic "$P.aftersales"
acl --allow-principal "$O" --operation Read --topic "$P.dlq"

I=User:oms-ingest
acl --allow-principal "$I" --operation Write --topic "$P.raw." --resource-pattern-type prefixed
acl --allow-principal "$I" --operation Read --topic "$P.dlq"

echo "kafka-init: done"
