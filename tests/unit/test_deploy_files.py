"""The shipped deployment files: the seed's compose and Filebeat snippets, corrected.

No Docker engine runs here, so these check what can be checked without one: that each
file parses, that every file it mounts exists, and that each correction is in place.
(deploy/prometheus/ is checked by promtool in tests/integration, and the Grafana
dashboards' queries against real Prometheus and InfluxDB there too.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "deploy/compose"
GRAFANA_DIR = COMPOSE_DIR.parent / "grafana"


def load(name: str) -> Any:
    return yaml.safe_load((COMPOSE_DIR / name).read_text())


def grafana_datasources() -> dict[str, Any]:
    """The provisioned Grafana data sources, by name."""
    config = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/tinyllm.yml").read_text())
    assert config["apiVersion"] == 1
    return {d["name"]: d for d in config["datasources"]}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts: container path -> host path (relative to deploy/compose)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_compose_file_is_modern_and_mounts_files_that_exist() -> None:
    compose = load("docker-compose.yml")
    assert "version" not in compose  # obsolete in Compose v2; it only warns
    services = compose["services"]
    assert set(services) >= {"prometheus", "grafana", "jaeger", "elasticsearch", "kibana",
                             "filebeat", "influxdb"}
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
    datasource = grafana_datasources()["Prometheus"]
    assert datasource["url"] == "http://localhost:9091"


def test_grafana_is_provisioned_with_the_dashboards_and_their_data_sources() -> None:
    services = load("docker-compose.yml")["services"]
    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning/datasources"] == "../grafana/provisioning/datasources"
    assert grafana["/etc/grafana/provisioning/dashboards"] == "../grafana/provisioning/dashboards"
    assert "./grafana-datasources.yml" not in grafana.values()  # superseded by deploy/grafana
    # The dashboard provider reads the folder the dashboards are mounted on.
    providers = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/dashboards/tinyllm.yml").read_text())["providers"]
    [provider] = providers
    folder = provider["options"]["path"]
    assert (provider["type"], grafana[folder]) == ("file", "../grafana/dashboards")
    dashboards = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert [p.name for p in dashboards] == ["tinyllm-overview.json", "tinyllm-store.json"]
    # Each dashboard's datasource variable offers a provisioned data source of its type.
    sources = grafana_datasources()
    for path in dashboards:
        model = json.loads(path.read_text())
        [variable] = [v for v in model["templating"]["list"] if v["name"] == "datasource"]
        assert variable["type"] == "datasource"
        assert variable["query"] in {d["type"] for d in sources.values()}, path.name
    # ...reachable where the compose file runs them: Prometheus on 9091, InfluxDB on 8086
    # with the database the store dashboard reads.
    prometheus, influx = sources["Prometheus"], sources["InfluxDB (tinyllm store)"]
    assert prometheus["isDefault"] is True
    assert "--web.listen-address=127.0.0.1:9091" in services["prometheus"]["command"]
    assert influx["url"] == "http://localhost:8086"
    assert "8086:8086" in services["influxdb"]["ports"]
    assert f"INFLUXDB_DB={influx['jsonData']['dbName']}" in services["influxdb"]["environment"]
    assert influx["database"] == influx["jsonData"]["dbName"]
    assert not (COMPOSE_DIR / "grafana-datasources.yml").exists()  # one provisioning


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
