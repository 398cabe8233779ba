"""The shipped deployment files: the seed's compose and Filebeat snippets, corrected.

No Docker engine runs here, so these check what can be checked without one: that each
file parses, that every file it mounts exists, and that each correction is in place.
(deploy/prometheus/ is checked by promtool in tests/integration.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "deploy/compose"


def load(name: str) -> Any:
    return yaml.safe_load((COMPOSE_DIR / name).read_text())


def test_compose_file_is_modern_and_mounts_files_that_exist() -> None:
    compose = load("docker-compose.yml")
    assert "version" not in compose  # obsolete in Compose v2; it only warns
    services = compose["services"]
    assert set(services) >= {"prometheus", "grafana", "jaeger", "elasticsearch", "kibana",
                             "filebeat"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).resolve().exists(), source


def test_compose_corrections() -> None:
    services = load("docker-compose.yml")["services"]
    prom = services["prometheus"]
    assert prom["network_mode"] == "host"  # reaches tinyllm on 127.0.0.1:9090
    assert "--web.listen-address=127.0.0.1:9091" in prom["command"]  # no clash with 9090
    assert "COLLECTOR_OTLP_ENABLED=true" in services["jaeger"]["environment"]
    assert {"4317:4317", "4318:4318"} <= set(services["jaeger"]["ports"])
    assert "xpack.security.enabled=false" in services["elasticsearch"]["environment"]
    assert "ELASTICSEARCH_HOSTS=http://elasticsearch:9200" in services["kibana"]["environment"]
    datasource = load("grafana-datasources.yml")["datasources"][0]
    assert datasource["url"] == "http://localhost:9091"


def test_filebeat_reads_our_json_lines() -> None:
    config = load("filebeat.yml")
    (inp,) = config["filebeat.inputs"]
    assert inp["type"] == "filestream" and inp["id"]
    assert inp["paths"] == ["/var/log/tinyllm/*.json"]
    assert inp["parsers"][0]["ndjson"]["target"] == ""
    assert config["output.elasticsearch"]["index"] == "tinyllm-%{+yyyy.MM.dd}"
    assert config["setup.template.name"] == "tinyllm"
    assert config["setup.template.pattern"] == "tinyllm-*"
    assert config["setup.ilm.enabled"] is False


def test_our_json_log_file_is_what_filebeat_parses(tmp_path: Path) -> None:
    import json

    from tinyllm.logging import configure_logging, get_logger, reset_logging

    log_file = tmp_path / "tinyllm" / "app.json"
    configure_logging(log_level="INFO", log_format="json", log_file=str(log_file))
    try:
        get_logger("x").info("task_started", task_id="abc123")
    finally:
        reset_logging()
    (line,) = log_file.read_text().splitlines()  # one JSON object per line: ndjson
    assert json.loads(line)["event"] == "task_started"
