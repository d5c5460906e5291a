"""The deployment files stay true to the code and valid against their schemas, offline: compose targets
match the routing table, every stage has a worker, secrets are never defaults, the compose file passes
the compose-spec schema, the Kubernetes objects pass Kubernetes' schemas and KEDA's own CRD schemas."""

from __future__ import annotations

import json
import re
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline.config import STAGES, load_settings, settings_markdown
from pipeline.notifications import minio_target_env, notification_configs, target_arn
from pipeline.registry import DEFAULT_CHAIN, REGISTRY
from tests.compose_env import Compose, MissingVariable, interpolate, read_dotenv

ROOT = Path(__file__).parent.parent
K8S = ROOT / "infra/k8s/mouthpiece.yaml"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def test_compose_minio_targets_match_the_routing_table() -> None:
    """MinIO's NATS targets in docker-compose.yml are exactly those our rules name, one per (stage,
    pool) subject, each with a queue dir and NATS credentials; ARNs use the env suffix as written."""
    env = compose()["services"]["minio"]["environment"]
    expected = minio_target_env(
        load_settings(), "nats:4222", username="mouthpiece", password="${NATS_PASSWORD}"
    )
    assert {k: v for k, v in env.items() if k.startswith("MINIO_NOTIFY_NATS")} == expected
    arns = {q.queue for c in notification_configs(load_settings()).values() for q in c.queue_config_list}
    assert target_arn("validate") == "arn:minio:sqs::VALIDATE:nats"
    assert target_arn("render", "neural") == "arn:minio:sqs::RENDER_NEURAL:nats"
    assert arns == {
        f"arn:minio:sqs::{k.removeprefix('MINIO_NOTIFY_NATS_ENABLE_')}:nats"
        for k in expected
        if "_ENABLE_" in k
    }


def test_compose_has_a_worker_per_stage_and_the_cluster_services() -> None:
    """Each stage runs as its own service; the bridge, the reconcile service and a GPU render pool too."""
    services = compose()["services"]
    commands = {tuple(s.get("command", [])) for s in services.values()}
    for stage in STAGES:
        assert ("worker", stage) in commands
    assert ("bridge",) in commands and ("reconcile", "--every", "60s") in commands
    assert ("worker", "render", "--pool", "neural") in commands


def containers(node: Any) -> list[dict[str, Any]]:
    """Every container of a Kubernetes object (Deployments, Jobs, KEDA's ScaledJobs), wherever it sits."""
    if isinstance(node, dict):
        found = [c for c in node.get("containers", []) if isinstance(c, dict)]
        return found + [c for k, v in node.items() if k != "containers" for c in containers(v)]
    if isinstance(node, list):
        return [c for item in node for c in containers(item)]
    return []


def test_deployment_files_run_the_registered_default_chain_and_nothing_else() -> None:
    """docker-compose.yml and infra/k8s each run a worker for every stage of the registry's default
    chain, and none for a stage the registry does not know (a stage added or renamed in
    ``pipeline.registry`` fails here until the deployments follow)."""
    compose_stages = {
        c[1] for s in compose()["services"].values() if (c := s.get("command", [])) and c[0] == "worker"
    }
    k8s_stages = {
        c["args"][1] for d in k8s_docs() for c in containers(d) if c.get("args", [None])[0] == "worker"
    }
    assert compose_stages == set(DEFAULT_CHAIN)
    assert k8s_stages == set(DEFAULT_CHAIN)
    assert set(DEFAULT_CHAIN) <= set(REGISTRY)


def test_compose_refuses_to_start_without_generated_secrets(tmp_path: Path) -> None:
    """Without .env the secrets are missing and compose stops; infra/gen-env.sh makes fresh ones each
    time, never overwrites, and no published port listens beyond loopback by default."""
    c = Compose(ROOT / "docker-compose.yml", {})
    with pytest.raises(MissingVariable):
        c.service("validate")
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    for out in (first, second):
        subprocess.run(
            ["sh", str(ROOT / "infra/gen-env.sh"), "--out", str(out)], check=True, capture_output=True
        )
    a, b = read_dotenv(first), read_dotenv(second)
    assert a["NATS_PASSWORD"] != b["NATS_PASSWORD"] and len(a["S3_SECRET_KEY"]) >= 32
    assert (
        subprocess.run(
            ["sh", str(ROOT / "infra/gen-env.sh"), "--out", str(first)], capture_output=True
        ).returncode
        == 1
    )
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert interpolate(port, a).startswith("127.0.0.1:"), name


def test_the_compose_ingress_starts_with_its_console_password(tmp_path: Path) -> None:
    """The ingress listens on 0.0.0.0 inside its container, where a console without a password is
    refused: with the generated .env, the environment compose gives it passes that rule."""
    from pipeline.config import Settings
    from pipeline.console.auth import check_exposure

    env_file = tmp_path / ".env"
    subprocess.run(
        ["sh", str(ROOT / "infra/gen-env.sh"), "--out", str(env_file)], check=True, capture_output=True
    )
    service = Compose(ROOT / "docker-compose.yml", read_dotenv(env_file)).service("ingress")
    host = service.command[service.command.index("--host") + 1]
    fields = {k.removeprefix("MOUTHPIECE_").lower(): v for k, v in service.environment.items() if v}
    settings = Settings.model_validate({**fields, "ingress_host": host, "data_dir": tmp_path})
    assert host == "0.0.0.0" and settings.console_password is not None
    check_exposure(settings)  # raises ConfigError if the console would be open


def test_no_default_credentials_in_the_repository() -> None:
    """No known default or placeholder credential appears in the deployment files or settings."""
    texts = [
        p.read_text()
        for p in [
            ROOT / "docker-compose.yml",
            K8S,
            ROOT / "infra/k8s/nats-values.yaml",
            ROOT / "pipeline/config.py",
        ]
    ]
    for text in texts:
        assert not re.search(r"minioadmin|change-me|changeme|password123", text, re.I)
    assert load_settings().s3_access_key is None and load_settings().s3_secret_key is None
    assert not any(d["kind"] == "Secret" for d in k8s_docs())


def test_compose_file_passes_the_compose_spec_schema() -> None:
    """docker-compose.yml validates against the compose-spec JSON schema (vendored by check-jsonschema)."""
    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(compose())


def test_kubernetes_objects_pass_the_kubernetes_schemas() -> None:
    """Every core object of infra/k8s validates strictly against Kubernetes 1.30's schemas."""
    core = [d for d in k8s_docs() if not d["apiVersion"].startswith("keda.sh/")]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, "1.30", strict=True)


KEDA_VERSION = "v2.20.2"


def keda_crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of KEDA's own CRD for ``kind`` (pinned copy of config/crd/bases at
    KEDA_VERSION), made strict the way ``kubectl apply`` (field validation Strict) is: an object schema
    that lists its properties rejects any other field."""
    plural = {"ScaledJob": "scaledjobs", "ScaledObject": "scaledobjects"}[kind]
    crd = yaml.safe_load((ROOT / f"tests/data/keda-{KEDA_VERSION}-{plural}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def keda_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def test_keda_objects_pass_kedas_own_crd_schemas() -> None:
    """Every ScaledJob and ScaledObject validates against KEDA v2.20.2's CRD schema (tests/data, pinned
    from kedacore/keda config/crd/bases), strictly: a misspelt field is refused, as the API server would."""
    checked = 0
    for doc in k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
            jsonschema.Draft4Validator(keda_crd_schema(doc["kind"])).validate(doc)
            checked += 1
    assert checked >= 6
    typo = json.loads(json.dumps(keda_objects("ScaledJob")["mouthpiece-render"]))
    typo["spec"]["pollingIntervall"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(keda_crd_schema("ScaledJob")).validate(typo)


def test_every_stage_pool_is_a_scaled_job_on_our_backlog_and_never_cut_by_scale_down() -> None:
    """Each stage pool runs as a ScaledJob (one Job per message: KEDA never SIGTERMs a running Job),
    no worker runs in a Deployment, each Job's grace exceeds its drain; each scales with KEDA's
    metrics-api scaler on its pool's backlog at the mouthpiece-backlog Service, whose valueLocation is
    found in the document the backlog service really serves."""
    from pipeline.backlog import PoolBacklog, backlog_document
    from pipeline.bus import durable_name
    from pipeline.keys import pools_of

    settings = load_settings()
    jobs = keda_objects("ScaledJob")
    wanted = {durable_name(stage, pool): (stage, pool) for stage in STAGES for pool in pools_of(stage)}
    assert set(jobs) == set(wanted)
    assert not keda_objects("ScaledObject")
    for doc in k8s_docs():
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["containers"][0]["args"][0] != "worker", doc["metadata"]
    rows = [PoolBacklog(stage, pool, 2, 1) for stage, pool in wanted.values()]
    served = backlog_document(rows, settings)
    service = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Service"}["mouthpiece-backlog"]
    port = service["spec"]["ports"][0]["port"]
    backlog = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}[
        "mouthpiece-backlog"
    ]
    args = backlog["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["backlog", "--serve"] and args[args.index("--port") + 1] == str(port)
    for name, job in jobs.items():
        stage, pool = wanted[name]
        (trigger,) = job["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "metrics-api"
        assert meta["url"] == f"http://mouthpiece-backlog.mouthpiece.svc.cluster.local:{port}/backlog"
        found: Any = served
        for part in meta["valueLocation"].split("."):
            found = found[part]
        assert found == 3 and meta["valueLocation"] == f"stages.{stage}.{pool}.backlog"
        assert job["spec"]["rollout"]["strategy"] == "gradual"
        template = job["spec"]["jobTargetRef"]["template"]
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": template["spec"]},
            "1.30",
            strict=True,
        )
        container = template["spec"]["containers"][0]
        assert container["args"][:2] == ["worker", stage]
        assert container["args"][container["args"].index("--max-messages") + 1] == "1"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        drain = float(env["MOUTHPIECE_DRAIN_SECONDS"])
        assert template["spec"]["terminationGracePeriodSeconds"] > drain >= 3600


def test_the_gpu_pool_needs_only_the_device_plugin_and_loads_its_model_from_the_image() -> None:
    """The neural Jobs request nvidia.com/gpu (what NVIDIA's device plugin advertises) and select no
    node label (GPU Feature Discovery's nvidia.com/gpu.present is off in the device plugin's chart);
    no init container downloads a model: MOUTHPIECE_MODEL_DIR points into the image, where
    infra/Dockerfile.gpu fetched the Wav2Lip checkpoint at build, refusing to build without its URL."""
    neural = keda_objects("ScaledJob")["mouthpiece-render-neural"]["spec"]["jobTargetRef"]["template"]["spec"]
    (container,) = neural["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert "nodeSelector" not in neural and "affinity" not in neural and "initContainers" not in neural
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in neural["tolerations"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    dockerfile = (ROOT / "infra/Dockerfile.gpu").read_text()
    model_dir = env["MOUTHPIECE_MODEL_DIR"]
    assert f"MOUTHPIECE_MODEL_DIR={model_dir} mouthpiece models --fetch" in dockerfile
    assert 'test -n "${WAV2LIP_URL}"' in dockerfile
    assert not any(m["mountPath"] == model_dir for m in container.get("volumeMounts", []))
    assert "WAV2LIP_URL" in (ROOT / "infra/k8s/mouthpiece.yaml").read_text().split("apiVersion")[0]
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in k8s_docs())


def test_init_runs_before_workers_and_makes_the_consumers() -> None:
    """The init Job runs `mouthpiece init` (stream and every consumer: tests/pipeline/test_bus.py) with
    the workers' ConfigMap and Secret, so the consumers get the workers' settings."""
    init = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Job"}["mouthpiece-init"]
    container = init["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["init"]
    render = keda_objects("ScaledJob")["mouthpiece-render"]["spec"]["jobTargetRef"]["template"]["spec"]
    assert container["envFrom"] == render["containers"][0]["envFrom"]


def test_settings_doc_is_current() -> None:
    """docs/settings.md is the generated table of every setting (regenerate: mouthpiece config --markdown)."""
    doc = (ROOT / "docs/settings.md").read_text()
    assert settings_markdown() in doc


def dockerfile_steps(path: Path) -> tuple[dict[str, str], list[str]]:
    """A Dockerfile's ARG defaults and its RUN commands (continuation lines joined, comments dropped)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    instructions = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    args = {}
    for line in instructions:
        if line.startswith("ARG ") and "=" in line:
            name, _, value = line[4:].partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args, [line[4:] for line in instructions if line.startswith("RUN ")]


def test_the_gpu_image_carries_musetalk_and_its_compose_service_reads_it() -> None:
    """infra/Dockerfile.gpu fetches MuseTalk's files (`mouthpiece models --fetch musetalk`) into the
    image's model directory by default; compose's render-musetalk builds the image with render-gpu's
    build args (one image) and reads its models from where the image put them."""
    args, runs = dockerfile_steps(ROOT / "infra/Dockerfile.gpu")
    assert args["GPU_RENDERERS"].split() == ["wav2lip", "musetalk"]
    assert args["MUSETALK_HF"] == "https://huggingface.co"
    (step,) = [r for r in runs if "--fetch musetalk" in r]
    assert "MOUTHPIECE_MODEL_DIR=/opt/mouthpiece/models" in step
    services = compose()["services"]
    gpu, musetalk = services["render-gpu"], services["render-musetalk"]
    assert musetalk["build"] == gpu["build"] and musetalk["image"] == gpu["image"]
    assert set(gpu["build"]["args"]) == {"WAV2LIP_URL", "GPU_RENDERERS", "MUSETALK_HF"}
    assert musetalk["environment"]["MOUTHPIECE_MODEL_DIR"] == "/opt/mouthpiece/models"
    assert musetalk["command"] == ["worker", "render", "--pool", "musetalk"]


def test_the_gpu_image_build_steps_fetch_musetalk_from_a_mirror(tmp_path: Path) -> None:
    """The Dockerfile's own model steps, run by sh as the build runs them (the image's model directory
    moved to a temporary one): MuseTalk's 7 files come from MUSETALK_HF (here a local mirror with
    Hugging Face's paths, serving seeded networks) into upstream's layout, and they load; without
    WAV2LIP_URL the build stops saying so, unless GPU_RENDERERS leaves wav2lip out."""
    import functools
    import http.server
    import os
    import shutil
    import sys
    import threading

    pytest.importorskip("diffusers")
    from pipeline.modelfiles import HF, MUSETALK_FILES
    from stages.render.musetalk import load_models
    from stages.render.musetalk_seeded import TINY, write_models

    seeded = write_models(tmp_path / "seeded", TINY, seed=0)
    mirror = tmp_path / "mirror"
    for model in MUSETALK_FILES:
        served = mirror / str(model.default_url).removeprefix(HF + "/")
        served.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seeded / model.name, served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shim = tmp_path / "bin" / "mouthpiece"  # the console script pip installs in the image
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pipeline.cli "$@"\n')
    shim.chmod(0o755)
    args, runs = dockerfile_steps(ROOT / "infra/Dockerfile.gpu")
    models = tmp_path / "image-models"
    steps = [r.replace("/opt/mouthpiece/models", str(models)) for r in runs if "mouthpiece models" in r]
    assert len(steps) == 2  # wav2lip's, then musetalk's

    def build(**given: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            **args,
            **given,
            # the image's python and mouthpiece: this interpreter, running this tree
            "PATH": os.pathsep.join([str(shim.parent), str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYTHONPATH": str(ROOT),
            "NO_PROXY": "127.0.0.1,localhost",
            "MOUTHPIECE_DATA_DIR": str(tmp_path / "data"),
        }
        script = " && ".join(f"( {step} )" for step in steps)
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)

    try:
        refused = build()
        assert refused.returncode == 1 and "pass --build-arg WAV2LIP_URL" in refused.stderr
        assert not models.exists()
        made = build(GPU_RENDERERS="musetalk", MUSETALK_HF=f"http://127.0.0.1:{server.server_port}/")
        assert made.returncode == 0, made.stderr[-3000:]
    finally:
        server.shutdown()
    for model in MUSETALK_FILES:
        assert (models / model.name).read_bytes() == (seeded / model.name).read_bytes(), model.name
    assert not (models / "wav2lip_gan.pth").exists()
    load_models(models)
