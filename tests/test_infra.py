"""The deployment files stay true to the code: compose targets match the routing table, every stage
has a worker, the settings doc lists every setting."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.config import STAGES, load_settings, settings_markdown
from pipeline.notifications import minio_target_env, notification_configs, target_arn

ROOT = Path(__file__).parent.parent


def test_compose_minio_targets_match_the_routing_table() -> None:
    """MinIO's NATS targets in docker-compose.yml are exactly those our notification rules name."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["minio"]["environment"]
    expected = minio_target_env(load_settings(), "nats:4222")
    assert {k: v for k, v in env.items() if k.startswith("MINIO_NOTIFY_NATS")} == expected
    arns = {q.queue for c in notification_configs(load_settings()).values() for q in c.queue_config_list}
    assert arns == {target_arn(s) for s in STAGES[1:]} | {target_arn("validate")}


def test_compose_has_a_worker_per_stage() -> None:
    """Each stage runs as its own compose service (`mouthpiece worker <stage>`)."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    commands = {tuple(s.get("command", [])) for s in services.values()}
    for stage in STAGES:
        assert ("worker", stage) in commands


def test_kubernetes_has_a_deployment_per_stage() -> None:
    """Each stage has a Deployment running its worker; render also has a GPU one."""
    docs = list(yaml.safe_load_all((ROOT / "infra/k8s/mouthpiece.yaml").read_text()))
    args = [
        tuple(d["spec"]["template"]["spec"]["containers"][0]["args"])
        for d in docs
        if d["kind"] == "Deployment"
    ]
    for stage in STAGES:
        assert ("worker", stage) in args
    assert args.count(("worker", "render")) == 2


def test_settings_doc_is_current() -> None:
    """docs/settings.md is the generated table of every setting (regenerate: mouthpiece config --markdown)."""
    doc = (ROOT / "docs/settings.md").read_text()
    assert settings_markdown() in doc
