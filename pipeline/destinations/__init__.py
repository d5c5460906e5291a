"""Destinations: where a finished job goes and where its failure is told — the policy of which a job may
name (``policy``), and one target per kind: a folder (``folder``), Discord (``discord``).

The policy's checks are re-exported here (``from pipeline.destinations import check_destinations``).
"""

from pipeline.destinations.policy import (
    WEBHOOK_HINT,
    allowed_webhook,
    check_destination,
    check_destinations,
    is_allowed,
    output_folder,
    webhook_allowed,
)

__all__ = [
    "WEBHOOK_HINT",
    "allowed_webhook",
    "check_destination",
    "check_destinations",
    "is_allowed",
    "output_folder",
    "webhook_allowed",
]
