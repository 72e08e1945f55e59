"""docker-compose.yml's Kafka and secrets, read as text (no YAML parser in the dependencies, no
Docker on these machines): every listener authenticates and none is PLAINTEXT, the broker denies
what no ACL allows, kafka-init gives each principal exactly its topics, each service holds only
its own Kafka password and control key, only the workers hold OMS_ADMIN_TOKEN, and .env.example
names every secret compose requires."""

from __future__ import annotations

import re

from core.settings import REPO_ROOT
from streams.signing import WRITERS

COMPOSE = (REPO_ROOT / "docker-compose.yml").read_text()
INIT = (REPO_ROOT / "docker" / "kafka" / "init.sh").read_text()
START = (REPO_ROOT / "docker" / "kafka" / "start.sh").read_text()
ENV_EXAMPLE = (REPO_ROOT / ".env.example").read_text()


def service(name: str) -> str:
    """The text of one service's block (up to the next service at the same indent)."""
    pattern = rf"^  {re.escape(name)}:\n(.*?)(?=^  [a-z0-9-]+:\n|^volumes:)"
    match = re.search(pattern, COMPOSE, re.M | re.S)
    assert match, name
    return match.group(1)


def setting(block: str, key: str) -> str:
    match = re.search(rf"^\s+{key}: (.+)$", block, re.M)
    assert match, key
    return match.group(1)


def test_every_kafka_listener_authenticates_and_none_is_plaintext() -> None:
    kafka = service("kafka")
    protocols = dict(
        pair.split(":")
        for pair in setting(kafka, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP").split(",")
    )
    listeners = [item.split("://")[0] for item in setting(kafka, "KAFKA_LISTENERS").split(",")]
    assert set(listeners) == set(protocols)
    assert all(protocol.startswith("SASL_") for protocol in protocols.values()), protocols
    assert "PLAINTEXT://" not in COMPOSE
    assert setting(kafka, "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND") == '"false"'
    assert "StandardAuthorizer" in setting(kafka, "KAFKA_AUTHORIZER_CLASS_NAME")
    assert setting(kafka, "KAFKA_SUPER_USERS") == "User:admin"
    assert setting(kafka, "KAFKA_AUTO_CREATE_TOPICS_ENABLE") == '"false"'
    # Only the external listener is published, and the controller stays inside the container.
    assert re.findall(r':(\d+):(\d+)"', kafka) == [("29092", "29092")]
    assert "CONTROLLER://localhost:9093" in setting(kafka, "KAFKA_LISTENERS")
    for name in ("CLIENT", "EXTERNAL"):
        assert setting(kafka, f"KAFKA_LISTENER_NAME_{name}_SASL_ENABLED_MECHANISMS") == (
            "SCRAM-SHA-512"
        )
    assert "password=" not in COMPOSE  # the JAAS file is written at start, from the env
    assert "${OMS_KAFKA_ADMIN_PASSWORD}" in START


def acl_lines(principal: str) -> list[str]:
    variable = {
        "oms-worker": "W",
        "oms-sink": "S",
        "oms-wms": "M",
        "oms-operator": "O",
        "oms-ingest": "I",
    }[principal]
    assert f"{variable}=User:{principal}" in INIT
    return [line for line in INIT.splitlines() if f'--allow-principal "${variable}"' in line]


def writes(principal: str) -> list[str]:
    return [line for line in acl_lines(principal) if "--operation Write" in line]


def test_each_principal_writes_only_its_topics() -> None:
    assert writes("oms-wms") == [
        'acl --allow-principal "$M" --operation Write --topic "$P.wms.events"'
    ]
    assert writes("oms-operator") == [
        'acl --allow-principal "$O" --operation Write --topic "$P.operator" --topic "$P.aftersales"'
    ]
    assert writes("oms-ingest") == [
        'acl --allow-principal "$I" --operation Write --topic "$P.raw." '
        "--resource-pattern-type prefixed"
    ]
    assert writes("oms-sink") == []
    assert [line for line in writes("oms-worker")] == [
        'acl --allow-principal "$W" --operation Write "${OUTPUTS[@]}"'
    ]
    outputs = re.search(r"OUTPUTS < <\(topics (.+)\)", INIT)
    assert outputs and set(outputs.group(1).split()) == {
        "order-events",
        "fulfilment.commands",
        "channel.stock",
        "channel.updates",
        "dlq",
        "operator",  # the timers and the order API
    }
    # Nobody but the broker's super user may do anything else anywhere ("All" only on the
    # workers' own Faust topics).
    every = [line for line in INIT.splitlines() if "--operation All" in line]
    assert every == [
        'acl --allow-principal "$W" --operation All --topic "$APP" --resource-pattern-type prefixed'
    ]


def test_the_broker_acls_and_the_signing_table_agree() -> None:
    """Kafka principals and signing principals name the same writers of each control topic."""
    kafka_writers = {"wms.events": {"wms"}, "aftersales": {"operator"}, "operator": {"operator"}}
    for topic, principals in kafka_writers.items():
        assert principals <= WRITERS[topic], topic
    assert WRITERS["wms.events"] == {"wms"}


def test_each_service_holds_only_its_own_secrets() -> None:
    workers = re.search(r"^x-worker-env: &worker-env\n(.*?)\n\n", COMPOSE, re.M | re.S)
    assert workers
    assert "OMS_ADMIN_TOKEN" in workers.group(1)
    assert COMPOSE.count("OMS_ADMIN_TOKEN: ") == 1  # only the workers' environment has it
    oms_env = re.search(r"^x-oms-env: &oms-env\n(.*?)\n\n", COMPOSE, re.M | re.S)
    assert oms_env and "SASL_PASSWORD" not in oms_env.group(1)
    assert "OMS_CONTROL_KEYS" not in oms_env.group(1)
    expected = {
        "oms-sink": ("oms-sink", None),
        "wms-sim": ("oms-wms", "wms=${OMS_CONTROL_KEY_WMS:?"),
        "oms-ops": ("oms-operator", "operator=${OMS_CONTROL_KEY_OPERATOR:?"),
    }
    for name, (user, keys) in expected.items():
        block = service(name)
        assert setting(block, "OMS_KAFKA_SASL_USERNAME") == user, name
        if keys is None:
            assert "OMS_CONTROL_KEYS" not in block, name
        else:
            assert setting(block, "OMS_CONTROL_KEYS").startswith(keys), name
            assert "," not in setting(block, "OMS_CONTROL_KEYS"), name  # one key only
    for worker in ("worker-w0", "worker-w1"):
        assert "<<: *worker-env" in service(worker)


def test_env_example_names_every_required_secret() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE))
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", ENV_EXAMPLE, re.M))
    assert required <= listed, required - listed
    assert {"OMS_KAFKA_WMS_PASSWORD", "OMS_CONTROL_KEY_WMS", "OMS_ADMIN_TOKEN"} <= required
