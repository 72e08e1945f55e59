#!/bin/bash
# The compose Kafka broker's entrypoint (docker-compose.yml): write the broker's JAAS file from
# the environment (the admin password never sits in the repository or in a published file),
# then start the image's own launcher. The admin user "admin" is the broker's super user: it
# is used between the broker and its controller, and by kafka-init to create the principals,
# the topics and the ACLs. Every other principal authenticates with SCRAM-SHA-512.
set -euo pipefail
: "${OMS_KAFKA_ADMIN_PASSWORD:?set OMS_KAFKA_ADMIN_PASSWORD (see .env.example)}"
case "$OMS_KAFKA_ADMIN_PASSWORD" in
*'"'* | *'\'*) echo "OMS_KAFKA_ADMIN_PASSWORD must not contain quotes or backslashes" >&2; exit 2 ;;
esac
umask 077
jaas=/tmp/oms-kafka-jaas.conf
cat >"$jaas" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin"
    password="${OMS_KAFKA_ADMIN_PASSWORD}"
    user_admin="${OMS_KAFKA_ADMIN_PASSWORD}";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS
# What the healthcheck (and an operator inside the container) connects with.
cat >/tmp/oms-admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${OMS_KAFKA_ADMIN_PASSWORD}";
PROPS
export KAFKA_OPTS="${KAFKA_OPTS:-} -Djava.security.auth.login.config=$jaas"
unset OMS_KAFKA_ADMIN_PASSWORD
exec /etc/kafka/docker/run "$@"
