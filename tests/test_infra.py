"""infra/: what can be checked without Docker — well-formed files, generated files up to date,
every Grafana query runs on the embedded warehouse, the cluster DDL parses."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from spatialvid.config import Config
from spatialvid.warehouse import run_readonly

from .synthetic import insert_records, population

yaml = pytest.importorskip("yaml", reason="reading the compose and provisioning files needs PyYAML")
INFRA = Path(__file__).resolve().parents[1] / "infra"


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("infra_generate", INFRA / "generate.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_compose_has_the_production_services_with_gpu_reservations() -> None:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "clickhouse", "grafana", "sink", "split", "score", "annotate", "caption", "dashboard"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for gpu_stage in ("score", "annotate", "caption"):
        devices = services[gpu_stage]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1, gpu_stage
        assert services[gpu_stage]["environment"]["SPATIALVID_KAFKA__BOOTSTRAP"] == "kafka:9092"
    assert "deploy" not in services["split"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (INFRA / src).exists(), f"{name}: mounts {src}, which is missing"
            else:
                assert src in compose["volumes"], f"{name}: named volume {src} is not declared"
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


def test_grafana_provisioning_and_clickhouse_config_are_well_formed() -> None:
    ds = yaml.safe_load((INFRA / "grafana/provisioning/datasources/clickhouse.yml").read_text())
    dash = json.loads((INFRA / "grafana/dashboards/spatialvid.json").read_text())
    uid = ds["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"])
    prov = yaml.safe_load((INFRA / "grafana/provisioning/dashboards/spatialvid.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for xml in (INFRA / "clickhouse").rglob("*.xml"):
        ET.parse(xml)  # raises on malformed XML
    macros = ET.parse(INFRA / "clickhouse/config.d/cluster.xml").getroot().find("macros")
    assert {m.tag for m in macros} == {"shard", "replica"}


def test_generated_files_are_up_to_date() -> None:
    stale = [str(p) for p, text in _generator().outputs().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"regenerate with `python infra/generate.py`: {stale}"


def test_every_grafana_query_runs_on_the_embedded_warehouse(cfg: Config, warehouse) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    from spatialvid.schemas.records import dead_letter

    insert_records(warehouse, db, population(200, seed=41) + [dead_letter("score", ValueError("bad clip"), b"{}")])
    dash = json.loads((INFRA / "grafana/dashboards/spatialvid.json").read_text())
    lock = threading.Lock()
    ran = 0
    for panel in dash["panels"]:
        for t in panel["targets"]:
            sql = re.sub(r"\$__timeFilter\(([\w.]+)\)", r"\1 >= now() - INTERVAL 6 HOUR", t["rawSql"])
            assert "$" not in sql, f"panel {panel['title']}: unexpanded macro in {sql}"
            sql = sql.replace("spatialvid.", f"{db}.")
            rows = run_readonly(warehouse, sql, None, lock)["rows"]
            assert rows, f"panel {panel['title']!r} returned nothing on a populated warehouse"
            ran += 1
    assert ran == len(dash["panels"]) >= 7


def test_cluster_ddl_parses_and_covers_every_table(chdb_client) -> None:  # type: ignore[no-untyped-def]
    from spatialvid.schemas.records import RECORD_TYPES

    text = (INFRA / "clickhouse/cluster.sql").read_text()
    stmts = [s.strip() for s in text.split(";") if s.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in s.splitlines())]
    for stmt in stmts:
        body = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--"))
        chdb_client.query(f"EXPLAIN AST {body}")  # the engine's parser: raises on a syntax error
    for model in RECORD_TYPES:
        assert f"spatialvid.{model.table}_local ON CLUSTER" in text and "ReplicatedReplacingMergeTree" in text
        assert re.search(rf"ENGINE = Distributed\(spatialvid, spatialvid, {model.table}_local, cityHash64", text), model.table
