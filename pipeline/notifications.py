"""MinIO-style bucket notifications (``event_source = "minio"``; MinIO and RustFS): the server publishes
our routing table to JetStream.

The server needs one NATS target per subject the routing table uses (``minio_target_env``: the
``MINIO_NOTIFY_NATS_*_<ID>`` environment of the server, see ``docker-compose.yml``). MinIO names a target
by the environment suffix exactly as written — ``MINIO_NOTIFY_NATS_ENABLE_VALIDATE`` is
``arn:minio:sqs::VALIDATE:nats`` (no case folding) — so ``target_id`` is upper case, and rules must use
that same id. Each target has a queue directory: events raised while NATS is unreachable wait on the
server's disk and are delivered later (at-least-once), instead of being dropped.

``configure_bucket_notifications`` (``mouthpiece init``) installs one rule per route, object-created
events only; S3 errors become one readable sentence (``ConfigError``).
"""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig, SuffixFilterRule

from pipeline.config import Settings
from pipeline.contracts import CREATED_EVENTS
from pipeline.errors import ConfigError
from pipeline.keys import Route, routing_table, subject_for
from pipeline.storage.s3 import S3Store

DEFAULT_QUEUE_DIR = "/data/.mouthpiece-events"


def target_id(stage: str, pool: str = "default") -> str:
    """The NATS target id of a (stage, pool) subject, as written in the server's environment."""
    return (stage if pool == "default" else f"{stage}_{pool}").upper().replace("-", "_")


def target_arn(stage: str, pool: str = "default") -> str:
    return f"arn:minio:sqs::{target_id(stage, pool)}:nats"


def route_subject(settings: Settings, route: Route) -> str:
    return subject_for(settings, route.stage, route.pool)


def minio_target_env(
    settings: Settings,
    nats_address: str,
    *,
    username: str | None = None,
    password: str | None = None,
    queue_dir: str = DEFAULT_QUEUE_DIR,
) -> dict[str, str]:
    """The server environment that defines one JetStream target per subject of the routing table."""
    env: dict[str, str] = {}
    seen: set[str] = set()
    for route in routing_table(settings):
        ident = target_id(route.stage, route.pool)
        if ident in seen:
            continue
        seen.add(ident)
        env[f"MINIO_NOTIFY_NATS_ENABLE_{ident}"] = "on"
        env[f"MINIO_NOTIFY_NATS_ADDRESS_{ident}"] = nats_address
        env[f"MINIO_NOTIFY_NATS_SUBJECT_{ident}"] = route_subject(settings, route)
        env[f"MINIO_NOTIFY_NATS_JETSTREAM_{ident}"] = "on"
        env[f"MINIO_NOTIFY_NATS_QUEUE_DIR_{ident}"] = f"{queue_dir}/{ident.lower()}"
        if username is not None and password is not None:
            env[f"MINIO_NOTIFY_NATS_USERNAME_{ident}"] = username
            env[f"MINIO_NOTIFY_NATS_PASSWORD_{ident}"] = password
    return env


def notification_configs(settings: Settings) -> dict[str, NotificationConfig]:
    """Per bucket, the notification rules that implement ``routing_table``."""
    queues: dict[str, list[QueueConfig]] = {}
    for i, route in enumerate(routing_table(settings)):
        queues.setdefault(route.bucket, []).append(
            QueueConfig(
                queue=target_arn(route.stage, route.pool),
                events=list(CREATED_EVENTS),
                config_id=f"mouthpiece-{target_id(route.stage, route.pool).lower()}-{i}",
                prefix_filter_rule=PrefixFilterRule(route.prefix) if route.prefix else None,
                suffix_filter_rule=SuffixFilterRule(route.suffix) if route.suffix else None,
            )
        )
    return {bucket: NotificationConfig(queue_config_list=q) for bucket, q in queues.items()}


def configure_bucket_notifications(settings: Settings, client: Minio | None = None) -> list[str]:
    """Install the rules on the server; returns a line per rule, for people. ``ConfigError`` with one
    readable sentence when the server refuses."""
    client = client or S3Store.from_settings(settings).client
    lines = []
    for bucket, config in notification_configs(settings).items():
        try:
            client.set_bucket_notification(bucket, config)
        except S3Error as exc:
            raise ConfigError(explain_s3_error(exc, bucket, config)) from None
        except OSError as exc:  # urllib3's connection errors are OSErrors too
            raise ConfigError(f"cannot reach the S3 server at {settings.s3_endpoint}: {exc}") from None
        for q in config.queue_config_list:
            prefix = q.prefix_filter_rule.value if q.prefix_filter_rule else ""
            suffix = q.suffix_filter_rule.value if q.suffix_filter_rule else ""
            lines.append(f"{bucket}: {prefix}*{suffix} -> {q.queue}")
    return lines


def explain_s3_error(exc: S3Error, bucket: str, config: NotificationConfig) -> str:
    """One sentence an operator can act on, for an S3 error from setting notifications on ``bucket``."""
    arns = ", ".join(dict.fromkeys(str(q.queue) for q in config.queue_config_list))
    code = exc.code or "error"
    if code == "InvalidArgument" or "ARN" in (exc.message or ""):
        ids = ", ".join(sorted({a.split(":")[4] for a in arns.split(", ")}))
        return (
            f"the S3 server has no notification target for bucket {bucket} ({arns}): set "
            f"MINIO_NOTIFY_NATS_ENABLE_<ID>=on and its ADDRESS, SUBJECT, JETSTREAM and QUEUE_DIR for each "
            f"id ({ids}) in the server's environment, restart it, then run `mouthpiece init` again"
        )
    if code in ("NotImplemented", "MethodNotAllowed", "XNotImplemented"):
        return (
            f"the S3 server does not support bucket notifications (bucket {bucket}); use "
            "MOUTHPIECE_EVENT_SOURCE=seaweedfs with SeaweedFS, or client for other servers"
        )
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"the S3 server refused our credentials for bucket {bucket} ({code}): check MOUTHPIECE_S3_ACCESS_KEY and MOUTHPIECE_S3_SECRET_KEY"
    if code == "NoSuchBucket":
        return f"bucket {bucket} does not exist on the S3 server"
    return f"the S3 server refused the notification rules for bucket {bucket}: {code} {exc.message or ''}".strip()
