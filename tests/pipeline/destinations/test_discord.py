"""Publishing to Discord against the fake API: size fitting, link fallback, token expiry, gone webhooks,
idempotence, and failure messages."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.contracts import (
    REVEAL,
    DiscordInteractionDestination,
    DiscordWebhookDestination,
    JobSpec,
    Manifest,
    MediaInfo,
)
from pipeline.destinations.discord import bitrate_plan, notify_discord_failure, publish_to_discord
from pipeline.discord.api import WebhookGone
from pipeline.keys import spec_key
from pipeline.media import ffmpeg_binary, probe
from pipeline.messages import discord_text, users_fault
from pipeline.stage import StageContext
from pipeline.status import read_spec
from pipeline.testing import StageEnvironment
from stages.publish import run as publish_run
from tests.conftest import make_settings
from tests.pipeline.discord.conftest import APP_ID, FakeDiscord, ThreadServer

JOB = "j0123456789abcdef012"
TOKEN = "publish-token-" + "p" * 40
SECONDS = 4.0


@pytest.fixture(scope="module")
def _fake_discord() -> Iterator[tuple[FakeDiscord, ThreadServer]]:
    fake = FakeDiscord()
    server = ThreadServer(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture
def discord(_fake_discord: tuple[FakeDiscord, ThreadServer]) -> FakeDiscord:
    """The fake Discord API on loopback, emptied for this test."""
    _fake_discord[0].reset()
    return _fake_discord[0]


@pytest.fixture
def discord_origin(_fake_discord: tuple[FakeDiscord, ThreadServer]) -> str:
    return _fake_discord[1].origin


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s 640x360 MP4 with sound at high quality (about a megabyte): too big for small limits."""
    out = tmp_path_factory.mktemp("video") / "clip.mp4"
    settings = make_settings(out.parent)
    subprocess.run(
        [
            ffmpeg_binary(settings), "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={SECONDS}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}", "-c:v", "libx264", "-preset", "ultrafast",
            "-crf", "14", "-c:a", "aac", "-shortest", str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


def _settings(tmp: Path, origin: str, **extra: Any) -> Settings:
    return make_settings(tmp, discord_api_base=f"{origin}/api/v10", **extra)


def _ctx(settings: Settings, tmp: Path) -> StageContext:
    workdir = tmp / "work"
    workdir.mkdir(exist_ok=True)
    env = StageEnvironment(settings)
    spec = (
        read_spec(env.store, settings, JOB) if env.store.stat(settings.bucket_work, spec_key(JOB)) else None
    )
    return env.context(job_id=JOB, stage="publish", spec=spec, workdir=workdir)


def _manifest() -> Manifest:
    media = MediaInfo(audio_seconds=SECONDS, fps=25, width=640, height=360, frames=1, still=True)
    return Manifest(
        job_id=JOB, task="a0", stage="enhance", spec_key=spec_key(JOB), avatar_name="a.png", media=media
    )


def _interaction(age: timedelta = timedelta(0), **extra: Any) -> DiscordInteractionDestination:
    return DiscordInteractionDestination(
        application_id=APP_ID, token=SecretStr(TOKEN), created_at=datetime.now(UTC) - age, **extra
    )


def test_video_that_fits_is_attached_as_is(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """Under the limit, the final edit carries the video unchanged and the location has no token."""
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    where = publish_to_discord(ctx, _interaction(), video, "clip.mp4", _manifest())
    [edit] = discord.accepted("PATCH", "/messages/@original")
    assert edit.files["files[0]"] == ("clip.mp4", video.read_bytes())
    assert edit.payload["attachments"] == [{"id": 0, "filename": "clip.mp4"}]
    assert where == f"discord:interaction:{APP_ID}" and TOKEN not in where


def test_too_big_video_is_reencoded_under_the_interaction_limit(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """Over attachment_size_limit, the video is re-encoded at a computed bitrate to fit, keeping its
    length and sound; Discord (the fake, enforcing the same limit) accepts it."""
    limit = video.stat().st_size // 3
    discord.max_file_bytes = limit
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    publish_to_discord(ctx, _interaction(attachment_size_limit=limit), video, "clip.mp4", _manifest())
    [edit] = discord.accepted("PATCH")
    name, data = edit.files["files[0]"]
    assert name == "clip.mp4" and 0 < len(data) <= limit
    refit = tmp_path / "refit.mp4"
    refit.write_bytes(data)
    info = probe(refit)
    assert info.has_audio and info.has_video and abs(info.duration - SECONDS) < 0.3


def test_video_that_cannot_fit_is_linked(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """When no bitrate can fit the limit, the message says where the video is instead (local store)."""
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    publish_to_discord(ctx, _interaction(attachment_size_limit=4000), video, "clip.mp4", _manifest())
    [edit] = discord.accepted("PATCH")
    assert not edit.files and edit.payload["attachments"] == []
    assert edit.content == f"The video is too large to attach here; it is saved as outputs/{JOB}/clip.mp4."


@pytest.mark.integration
def test_link_is_presigned_on_s3(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path, s3_server: Any
) -> None:
    """On S3 the link is a presigned download URL of the object in the outputs bucket."""
    from tests.conftest import s3_settings

    settings = s3_settings(tmp_path, s3_server, discord_api_base=f"{discord_origin}/api/v10")
    ctx = _ctx(settings, tmp_path)
    publish_to_discord(ctx, _interaction(attachment_size_limit=4000), video, "clip.mp4", _manifest())
    [edit] = discord.accepted("PATCH")
    assert edit.content is not None and "link valid for 7 days" in edit.content
    assert (
        f"/{settings.bucket_outputs}/{JOB}/clip.mp4?" in edit.content and "X-Amz-Signature=" in edit.content
    )


def test_discord_refusing_the_size_falls_back_to_a_link(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """If Discord answers 413 although the file was under our limit, the reply links the video."""
    discord.max_file_bytes = 1000
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    publish_to_discord(ctx, _interaction(), video, "clip.mp4", _manifest())
    statuses = [r.status for r in discord.requests]
    assert statuses == [413, 200] and "too large to attach" in (discord.requests[-1].content or "")


def test_expired_token_uses_the_fallback_webhook(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """After 15 minutes the interaction token is not used; the fallback webhook gets the video."""
    hook = f"{discord_origin}/api/webhooks/42/fallback-{'f' * 30}"
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    where = publish_to_discord(
        ctx,
        _interaction(timedelta(minutes=16), fallback_webhook=SecretStr(hook)),
        video,
        "clip.mp4",
        _manifest(),
    )
    [post] = discord.accepted()
    assert post.method == "POST" and post.path == "/api/webhooks/42/fallback-" + "f" * 30
    assert [name for name, _ in post.files.values()] == ["clip.mp4"]
    assert where == "discord:webhook (fallback)"


def test_expired_token_without_fallback_posts_nothing(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """An expired token with no fallback makes no request and says so in the location."""
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    where = publish_to_discord(ctx, _interaction(timedelta(minutes=15)), video, "clip.mp4", _manifest())
    assert discord.requests == [] and "expired" in where


def test_gone_reply_uses_fallback_or_fails(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """A reply that answers 404 (deleted) goes to the fallback webhook; without one it is WebhookGone."""
    deleted = "deleted-reply-" + "x" * 30  # gone webhooks are remembered per process: a token of its own
    discord.gone.add(deleted)
    hook = f"{discord_origin}/api/webhooks/43/fallback-{'g' * 30}"
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    dest = _interaction(fallback_webhook=SecretStr(hook)).model_copy(update={"token": SecretStr(deleted)})
    where = publish_to_discord(ctx, dest, video, "clip.mp4", _manifest())
    assert where == "discord:webhook (fallback)" and len(discord.with_files()) == 1
    with pytest.raises(WebhookGone):
        publish_to_discord(
            ctx, dest.model_copy(update={"fallback_webhook": None}), video, "clip.mp4", _manifest()
        )


def test_channel_webhook_gets_content_and_video_after_a_429(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """A webhook destination posts its content with the video, once, after waiting out a 429."""
    discord.rate_limit_once = True
    hook = f"{discord_origin}/api/webhooks/44/channel-{'c' * 30}"
    ctx = _ctx(_settings(tmp_path, discord_origin), tmp_path)
    dest = DiscordWebhookDestination(url=SecretStr(hook), content="Welcome to Test Guild, Alice!")
    where = publish_to_discord(ctx, dest, video, "welcome.mp4", _manifest())
    posted = [r for r in discord.accepted("POST") if r.files]
    assert where.startswith("discord:webhook:message:") and len(posted) == 1  # the id Discord answered
    assert [r.status for r in discord.requests] == [429, 200]
    [post] = discord.with_files()
    assert post.content == "Welcome to Test Guild, Alice!"


def test_redelivered_publish_posts_once(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path, video: Path
) -> None:
    """Running the publish stage twice for the same task (a redelivery) edits the reply once."""
    settings = _settings(tmp_path, discord_origin)
    ctx = _ctx(settings, tmp_path)
    spec = JobSpec(name="clip", audio="voice.flac", destinations=[_interaction()])
    ctx.save_bytes(
        spec.model_dump_json(context=REVEAL).encode(), "spec.json", "application/json", key=spec_key(JOB)
    )
    manifest = _manifest()
    manifest.artifacts["final"] = ctx.save(video, "final.mp4", "video/mp4")
    for _ in range(2):
        publish_run(_ctx(settings, tmp_path), manifest)
    assert len(discord.with_files()) == 1


def test_failure_reaches_the_user_as_a_short_message(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """A job failure edits the reply with one short sentence and clears attachments."""
    settings = _settings(tmp_path, discord_origin)
    notify_discord_failure(settings, _interaction(), JOB, "audio_missing", "notes.txt has no sound in it")
    [edit] = discord.accepted("PATCH")
    assert edit.content == (
        "Sorry, I could not make that video. notes.txt has no sound in it. "
        "Send an .mp3, .wav, .ogg, .m4a or .flac voice clip."
    )
    assert edit.payload["attachments"] == []


def test_failure_notice_to_a_gone_webhook_does_not_raise(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """Telling a deleted webhook about a failure is best effort: no exception escapes."""
    discord.gone.add("deleted-hook")
    hook = SecretStr(f"{discord_origin}/api/webhooks/45/deleted-hook-{'d' * 30}")
    notify_discord_failure(
        _settings(tmp_path, discord_origin), DiscordWebhookDestination(url=hook), JOB, "internal", "boom"
    )
    assert [r.status for r in discord.requests] == [404]


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (
            "audio_missing",
            "clip.wav has no sound in it",
            "Sorry, I could not make that video. clip.wav has no sound",
        ),
        (
            "no_face",
            "no face found in cat.png",
            "Sorry, I could not make that video. no face found in cat.png",
        ),
        (
            "gave_up",
            "gave up after 5 runs: internal error",
            "Sorry, I could not make that video. Something went wrong",
        ),
        (
            "encoder_failed",
            "ffmpeg said [aost#0:0 @ 0x55] error -22",
            "Sorry, I could not make that video. Something",
        ),
        (
            "audio_too_long",
            "voice.mp3 is 900 s long; the limit is 600 s",
            "Sorry, I could not make that video. voice.mp3 is",
        ),
    ],
)
def test_failure_replies_come_from_the_catalogue(code: str, reason: str, message: str) -> None:
    """The user's own mistakes are told in their reason; everything else in the catalogue's sentence
    with a reference, never with tool output."""
    text = discord_text(code, reason, JOB)
    assert text.startswith(message) and len(text) < 350
    if not users_fault(code):
        assert reason not in text and JOB in text


def test_bitrate_plan_fits_and_scales_down() -> None:
    """Planned bitrates stay under the limit with margin, shrink the picture when low, and give up when
    not even a low bitrate fits."""
    plan = bitrate_plan(10 * 1024 * 1024, 30.0)
    assert plan is not None and (plan.video_kbps + plan.audio_kbps) * 30 / 8 * 1000 < 10 * 1024 * 1024 * 0.95
    assert plan.max_side == 720 or plan.max_side is None
    long = bitrate_plan(10 * 1024 * 1024, 600.0)
    assert long is not None and long.max_side is not None and long.max_side <= 480 and long.audio_kbps <= 64
    assert bitrate_plan(10 * 1024 * 1024, 3600.0) is None
