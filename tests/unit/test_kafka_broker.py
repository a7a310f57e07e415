"""The Kafka node's launcher (bench/kafka_broker.py) without a JVM: its configuration,
where it finds its jars and the storage tool."""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path

import pytest

from bench.kafka_broker import cluster_id, kafka_libs, server_properties, storage_tool


def jar(path: Path, *classes: str) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name in classes:
            archive.writestr(name, b"")


def test_the_storage_tool_is_found_in_core_or_in_the_tools_module(tmp_path: Path) -> None:
    jar(tmp_path / "kafka-clients.jar", "org/apache/kafka/clients/Metadata.class")
    jar(tmp_path / "kafka_2.13.jar", "kafka/tools/StorageTool.class")
    assert storage_tool(tmp_path) == "kafka.tools.StorageTool"

    (tmp_path / "kafka_2.13.jar").unlink()
    jar(tmp_path / "kafka-tools.jar", "org/apache/kafka/tools/StorageTool.class")
    assert storage_tool(tmp_path) == "org.apache.kafka.tools.StorageTool"

    (tmp_path / "kafka-tools.jar").unlink()
    with pytest.raises(RuntimeError, match="no StorageTool"):
        storage_tool(tmp_path)


def test_a_directory_of_jars_named_in_the_environment_is_used_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPSTREAM_KAFKA_LIBS", str(tmp_path))
    assert kafka_libs() == tmp_path


def test_the_node_is_one_broker_and_controller_with_single_replica_internal_topics(
        tmp_path: Path) -> None:
    lines = server_properties(tmp_path / "data", 9092, 9093).splitlines()
    config = dict(line.split("=", 1) for line in lines if line)
    assert config["process.roles"] == "broker,controller"
    assert config["controller.quorum.voters"] == f"{config['node.id']}@127.0.0.1:9093"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert config["log.dirs"] == str(tmp_path / "data")
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["transaction.state.log.replication.factor"] == "1"
    assert config["transaction.state.log.min.isr"] == "1"
    assert config["group.initial.rebalance.delay.ms"] == "0"


def test_a_cluster_id_is_a_uuid_in_url_safe_base64() -> None:
    made = cluster_id()
    assert len(made) == 22
    assert len(base64.urlsafe_b64decode(made + "==")) == 16
    assert made != cluster_id()
