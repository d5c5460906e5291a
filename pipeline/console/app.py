"""The console's routes: server-rendered pages, a JSON API, server-sent events and ``/metrics``.

    GET  /                        the jobs, newest first, paged; failed drops
    GET  /jobs/{id}               a job: stage graph, inputs, the video with subtitles, quality, downloads
    GET  /jobs/{id}/files/{name}  an output file (video, subtitles, report), with byte ranges
    GET  /jobs/{id}/inputs/{which} the voice clip (``audio``) or a task's avatar (``a0``...), sniffed
    GET  /new, POST /jobs         the new-job form; submitting goes to the new job's page
    POST /jobs/{id}/cancel        cancel (pipeline.control.cancel_job)
    POST /jobs/{id}/retry         run the failed stages again (pipeline.reconcile.retry_job)
    GET  /ops                     dead letters (with Retry), queues and workers per stage, model files
    GET  /events[?job=ID]         server-sent events: ``job`` (a summary changed), ``progress``, ``drops``
    GET  /login, POST /login, POST /logout
    GET  /api/session             the CSRF token for API clients using the session cookie
    GET  /api/jobs[?page=N], GET /api/jobs/{id}, POST /api/jobs, POST /api/jobs/{id}/cancel|retry,
    GET  /api/drops, GET /api/ops
    GET  /metrics                 Prometheus text format
    GET  /characters, POST /characters, POST /characters/{handle}/remove, GET /characters/{handle}/picture,
    GET  /api/characters          the character library (pipeline.console.characters)

Access rules are in ``pipeline.console.auth``. Pages are plain HTML with one script and one style sheet
(no inline script: the Content-Security-Policy allows only this origin).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.console.actions import Actions
from pipeline.console.api import Api
from pipeline.console.base import HERE
from pipeline.console.characters import CharacterPages
from pipeline.console.files import Files
from pipeline.console.pages import Pages


class Console(Pages, CharacterPages, Files, Actions, Api):
    """The console of one process. ``routes()`` are mounted at ``/`` of the HTTP service; ``start`` and
    ``close`` run its job index."""

    def routes(self) -> list[BaseRoute]:
        page, api, public = self._page, self._api, self._public
        return [
            Route("/", page(self.home), methods=["GET"]),
            Route("/new", page(self.new_form), methods=["GET"]),
            Route("/jobs", self._upload(self.create, api=False), methods=["POST"]),
            Route("/jobs/{job_id}", page(self.job_page), methods=["GET"]),
            Route("/jobs/{job_id}/files/{name}", page(self.output_file), methods=["GET"]),
            Route("/jobs/{job_id}/inputs/{which}", page(self.input_file), methods=["GET"]),
            Route("/jobs/{job_id}/cancel", page(self.cancel), methods=["POST"]),
            Route("/jobs/{job_id}/retry", page(self.retry), methods=["POST"]),
            Route("/ops", page(self.ops_page), methods=["GET"]),
            Route("/events", api(self.events), methods=["GET"]),
            Route("/login", public(self.login_form), methods=["GET"]),
            Route("/login", self._sign_in(self.login), methods=["POST"]),
            Route("/logout", public(self.logout), methods=["POST"]),
            Route("/api/session", api(self.api_session), methods=["GET"]),
            Route("/api/jobs", api(self.api_jobs), methods=["GET"]),
            Route("/api/jobs", self._upload(self.create, api=True), methods=["POST"]),
            Route("/api/jobs/{job_id}", api(self.api_job), methods=["GET"]),
            Route("/api/jobs/{job_id}/cancel", api(self.cancel), methods=["POST"]),
            Route("/api/jobs/{job_id}/retry", api(self.retry), methods=["POST"]),
            Route("/api/drops", api(self.api_drops), methods=["GET"]),
            Route("/api/ops", api(self.api_ops), methods=["GET"]),
            Route("/metrics", api(self.metrics_endpoint), methods=["GET"]),
            Route("/characters", page(self.characters_page), methods=["GET"]),
            Route("/characters", self._upload(self.add_character, api=False), methods=["POST"]),
            Route("/characters/{handle}/remove", page(self.remove_character), methods=["POST"]),
            Route("/characters/{handle}/picture", page(self.character_picture), methods=["GET"]),
            Route("/api/characters", api(self.api_characters), methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
