"""A job spec cannot make mouthpiece send requests anywhere it names: a loopback "internal service"
and a path-injecting interaction destination, against the fake Discord API, receive nothing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.contracts import (
    REVEAL,
    DiscordInteractionDestination,
    JobSpec,
    Manifest,
    MediaInfo,
    job_id_for,
)
from pipeline.destinations.discord import notify_discord_failure, publish_to_discord
from pipeline.destinations.targets import tell_failure
from pipeline.discord.api import DiscordError
from pipeline.errors import InvalidInput
from pipeline.keys import spec_key
from pipeline.media import ffmpeg_binary
from pipeline.stage import StageContext
from pipeline.status import read_spec
from pipeline.storage import open_store
from pipeline.storage.base import ObjectInfo, ObjectStore
from pipeline.testing import StageEnvironment
from stages.publish import run as publish_run
from stages.validate import prepare_store
from tests.conftest import make_settings
from tests.pipeline.discord.conftest import FakeDiscord, ThreadServer


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[FakeDiscord, ThreadServer, FakeDiscord, ThreadServer]]:
    discord, internal = FakeDiscord(), FakeDiscord()
    discord_server, internal_server = (
        ThreadServer(discord.app()).start(),
        ThreadServer(internal.app()).start(),
    )
    yield discord, discord_server, internal, internal_server
    discord_server.stop()
    internal_server.stop()


@pytest.fixture
def world(
    tmp_path: Path, _servers: tuple[FakeDiscord, ThreadServer, FakeDiscord, ThreadServer]
) -> tuple[Settings, ObjectStore, FakeDiscord, FakeDiscord, int]:
    """Settings whose Discord API is the fake; the fake Discord, and a loopback service (its port) that
    must never be called."""
    discord, discord_server, internal, internal_server = _servers
    discord.reset()
    internal.reset()
    settings = make_settings(tmp_path, discord_api_base=f"{discord_server.origin}/api/v10")
    store = open_store(settings)
    prepare_store(store, settings)
    return settings, store, discord, internal, internal_server.port


def _spec_upload(store: ObjectStore, settings: Settings, assets: Path, spec: str) -> ObjectInfo:
    store.put(settings.bucket_inputs, "jobs/h/v.flac", assets / "jfk.flac")
    info = store.put(settings.bucket_inputs, "jobs/h/job.yaml", spec.encode())
    return info


def _video(tmp: Path, settings: Settings) -> Path:
    out = tmp / "final.mp4"
    subprocess.run(
        [ffmpeg_binary(settings), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=1",
         "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    return out


def _ctx(settings: Settings, store: ObjectStore, job_id: str, tmp: Path) -> StageContext:
    workdir = tmp / "publish-work"
    workdir.mkdir(exist_ok=True)
    spec = read_spec(store, settings, job_id) if store.stat(settings.bucket_work, spec_key(job_id)) else None
    return StageEnvironment(settings, store).context(
        job_id=job_id, stage="publish", spec=spec, workdir=workdir
    )


def _validate(settings: Settings, store: ObjectStore, up: ObjectInfo, job_id: str) -> None:
    StageEnvironment(settings, store).run("validate", up, job_id=job_id, task="job")


def test_spec_webhook_to_a_loopback_service_gets_nothing(
    world: tuple[Settings, ObjectStore, FakeDiscord, FakeDiscord, int], assets: Path, tmp_path: Path
) -> None:
    """A spec whose discord_webhook is http://127.0.0.1:<internal>/api/webhooks/1/... (Discord's path
    shape, not Discord's host) fails in validate before any media work; the failure notice and even a
    publish run forced on it send nothing to the internal service, and nothing lands in outputs/<job>/."""
    settings, store, discord, internal, port = world
    hook = f"http://127.0.0.1:{port}/api/webhooks/1/internal-{'i' * 20}"
    up = _spec_upload(
        store, settings, assets, f"audio: v.flac\ndestinations: [{{kind: discord_webhook, url: '{hook}'}}]\n"
    )
    job_id = job_id_for(up.bucket, up.key, up.etag)
    with pytest.raises(InvalidInput) as caught:
        _validate(settings, store, up, job_id)
    assert caught.value.reason.startswith(
        "the Discord webhook in job spec job.yaml points at 127.0.0.1, which is not Discord"
    )
    assert not list(store.list(settings.bucket_work, "cache/"))
    tell_failure(settings, store, job_id, caught.value.code, caught.value.reason)
    ctx = _ctx(settings, store, job_id, tmp_path)
    media = MediaInfo(audio_seconds=1.0, fps=25, width=160, height=120, frames=1, still=True)
    manifest = Manifest(
        job_id=job_id, task="a0", stage="enhance", spec_key=spec_key(job_id), avatar_name="a.png", media=media
    )
    manifest.artifacts["final"] = ctx.save(_video(tmp_path, settings), "final.mp4", "video/mp4")
    with pytest.raises(InvalidInput):
        publish_run(ctx, manifest)
    assert internal.requests == [] and discord.requests == []
    assert not list(store.list(settings.bucket_outputs, f"{job_id}/"))


def test_path_injection_through_an_interaction_destination_is_refused(
    world: tuple[Settings, ObjectStore, FakeDiscord, FakeDiscord, int], assets: Path, tmp_path: Path
) -> None:
    """application_id '../../../../../admin/users' and token '../../delete-all' are refused when the spec
    is read; a destination built around the contract (model_construct) is refused by the API client
    before any request: the fake Discord API sees nothing, least of all PATCH /delete-all/..."""
    settings, store, discord, _, _ = world
    spec = (
        "audio: v.flac\ndestinations:\n  - kind: discord_interaction\n"
        "    application_id: '../../../../../admin/users'\n    token: '../../delete-all'\n"
    )
    up = _spec_upload(store, settings, assets, spec)
    with pytest.raises(
        InvalidInput, match=r"job spec job\.yaml is not valid: 'destinations\[1\]\.application_id'"
    ):
        _validate(settings, store, up, job_id_for(up.bucket, up.key, up.etag))
    forged = DiscordInteractionDestination.model_construct(
        kind="discord_interaction", application_id="../../../../../admin/users",
        token=SecretStr("../../delete-all"), created_at=datetime.now(UTC), fallback_webhook=None,
        attachment_size_limit=None,
    )  # fmt: skip
    job_id = "j0123456789abcdef012"
    ctx = _ctx(settings, store, job_id, tmp_path)
    media = MediaInfo(audio_seconds=1.0, fps=25, width=160, height=120, frames=1, still=True)
    manifest = Manifest(
        job_id=job_id, task="a0", stage="enhance", spec_key=spec_key(job_id), avatar_name="a.png", media=media
    )
    with pytest.raises(DiscordError, match="malformed"):
        publish_to_discord(ctx, forged, _video(tmp_path, settings), "x.mp4", manifest)
    notify_discord_failure(settings, forged, job_id, "audio_too_short", "x.flac is too short")
    assert discord.requests == []


def test_a_stored_spec_with_a_forged_destination_publishes_nothing(
    world: tuple[Settings, ObjectStore, FakeDiscord, FakeDiscord, int], tmp_path: Path
) -> None:
    """Even a spec that reached the work bucket some other way (written without its checks) is refused by
    publish before the outputs bucket or any destination is touched."""
    settings, store, discord, internal, port = world
    job_id = "j00000000000000000ab"
    spec = JobSpec(audio="v.flac")
    data = spec.model_dump(mode="json", context=REVEAL)
    data["destinations"] = [{"kind": "discord_webhook", "url": f"http://127.0.0.1:{port}/api/webhooks/9/x"}]
    store.put(
        settings.bucket_work,
        spec_key(job_id),
        JobSpec.model_validate(data).model_dump_json(context=REVEAL).encode(),
    )
    ctx = _ctx(settings, store, job_id, tmp_path)
    media = MediaInfo(audio_seconds=1.0, fps=25, width=160, height=120, frames=1, still=True)
    manifest = Manifest(
        job_id=job_id, task="a0", stage="enhance", spec_key=spec_key(job_id), avatar_name="a.png", media=media
    )
    manifest.artifacts["final"] = ctx.save(_video(tmp_path, settings), "final.mp4", "video/mp4")
    with pytest.raises(InvalidInput, match="not Discord"):
        publish_run(ctx, manifest)
    assert internal.requests == [] and discord.requests == []
    assert not list(store.list(settings.bucket_outputs, f"{job_id}/"))
