"""The web console: live jobs and stage graphs, previews, uploads, cancel and retry, operations, and
/metrics — mounted at ``/`` of the HTTP service (``mouthpiece up``, ``mouthpiece ingress``).
docs/console.md describes it."""

from pipeline.console.app import Console

__all__ = ["Console"]
