"""MinIO bucket notifications (``event_source = "minio"``): the server publishes our routing table.

MinIO publishes to a NATS target per stage: ``MINIO_NOTIFY_NATS_*_<STAGE>`` environment variables on the
MinIO server (see ``docker-compose.yml``, ``minio_target_env``), each with ``SUBJECT`` set to the
stage's subject and ``JETSTREAM=on``. MinIO names such a target ``arn:minio:sqs::<stage>:nats``
(identifier lower-cased). ``configure_bucket_notifications`` then installs one rule per route on the
inputs and work buckets, for object-created events only (never the tagging events).
"""

from __future__ import annotations

from minio import Minio
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig, SuffixFilterRule

from pipeline.config import Settings
from pipeline.contracts import CREATED_EVENTS
from pipeline.keys import routing_table, subject_for
from pipeline.storage.s3 import S3Store


def target_arn(stage: str) -> str:
    return f"arn:minio:sqs::{stage}:nats"


def minio_target_env(settings: Settings, nats_address: str) -> dict[str, str]:
    """The MinIO server environment that defines one JetStream target per stage of the chain."""
    env: dict[str, str] = {}
    for stage in settings.chain[:]:
        ident = stage.upper()
        env[f"MINIO_NOTIFY_NATS_ENABLE_{ident}"] = "on"
        env[f"MINIO_NOTIFY_NATS_ADDRESS_{ident}"] = nats_address
        env[f"MINIO_NOTIFY_NATS_SUBJECT_{ident}"] = subject_for(settings, stage)
        env[f"MINIO_NOTIFY_NATS_JETSTREAM_{ident}"] = "on"
    return env


def notification_configs(settings: Settings) -> dict[str, NotificationConfig]:
    """Per bucket, the notification rules that implement ``routing_table``."""
    queues: dict[str, list[QueueConfig]] = {}
    for i, route in enumerate(routing_table(settings)):
        queues.setdefault(route.bucket, []).append(
            QueueConfig(
                queue=target_arn(route.stage),
                events=list(CREATED_EVENTS),
                config_id=f"mouthpiece-{route.stage}-{i}",
                prefix_filter_rule=PrefixFilterRule(route.prefix) if route.prefix else None,
                suffix_filter_rule=SuffixFilterRule(route.suffix) if route.suffix else None,
            )
        )
    return {bucket: NotificationConfig(queue_config_list=q) for bucket, q in queues.items()}


def configure_bucket_notifications(settings: Settings, client: Minio | None = None) -> list[str]:
    """Install the rules on the MinIO server; returns a line per rule, for people."""
    client = client or S3Store.from_settings(settings).client
    lines = []
    for bucket, config in notification_configs(settings).items():
        client.set_bucket_notification(bucket, config)
        for q in config.queue_config_list:
            prefix = q.prefix_filter_rule.value if q.prefix_filter_rule else ""
            suffix = q.suffix_filter_rule.value if q.suffix_filter_rule else ""
            lines.append(f"{bucket}: {prefix}*{suffix} -> {q.queue}")
    return lines
