"""The Discord REST client against a fake Discord API: multipart edits, 429s, gone webhooks, limits."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pipeline.discord.api import (
    Attachment,
    AttachmentTooLarge,
    DiscordApi,
    RetryPolicy,
    WebhookGone,
    execute_webhook,
)
from pipeline.discord.commands import ANNOUNCE_COMMAND, AVATAR_COMMAND, CHARACTERS_COMMAND, register
from pipeline.errors import ConfigError, RetryableError
from pipeline.webhooks import parse_webhook_url
from tests.conftest import make_settings
from tests.pipeline.discord.conftest import APP_ID, FakeDiscord

TOKEN = "interaction-token-" + "s" * 40


class Sleeps:
    """Records requested waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _api(origin: str, sleeps: Sleeps | None = None, max_wait: float = 30.0) -> DiscordApi:
    policy = RetryPolicy(max_retries=3, max_wait=max_wait, sleep=sleeps or Sleeps())
    return DiscordApi(f"{origin}/api/v10", policy=policy)


def _video(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"\0\0\0\x20ftypisom" + b"\1" * (size - 12))
    return path


def test_edit_original_sends_payload_json_and_files0(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """A file edit is one multipart PATCH to @original with payload_json (attachments[0]) and files[0]."""
    video = _video(tmp_path, 5000)
    with _api(discord_origin) as api:
        api.edit_original(APP_ID, TOKEN, "done", Attachment(video, "out.mp4"))
    [sent] = discord.requests
    assert sent.method == "PATCH" and sent.path == f"/api/v10/webhooks/{APP_ID}/{TOKEN}/messages/@original"
    assert sent.payload["content"] == "done"
    assert sent.payload["attachments"] == [{"id": 0, "filename": "out.mp4"}]
    assert sent.payload["allowed_mentions"] == {"parse": []}
    assert sent.files == {"files[0]": ("out.mp4", video.read_bytes())}


def test_one_429_is_waited_out_with_retry_after(discord: FakeDiscord, discord_origin: str) -> None:
    """A 429 is retried after the body's retry_after; the message is delivered once."""
    discord.rate_limit_once, discord.retry_after = True, 0.25
    sleeps = Sleeps()
    with _api(discord_origin, sleeps) as api:
        api.edit_original(APP_ID, TOKEN, "Rendering… 40%")
    assert [r.status for r in discord.requests] == [429, 200]
    assert sleeps.calls == [0.25]


def test_retry_after_header_is_used_without_a_body_value(discord: FakeDiscord, discord_origin: str) -> None:
    """Without retry_after in the body, the Retry-After header says how long to wait."""
    discord.rate_limit_once, discord.retry_after_in_body, discord.retry_after = True, False, 1.5
    sleeps = Sleeps()
    with _api(discord_origin, sleeps) as api:
        api.followup(APP_ID, TOKEN, "hello")
    assert sleeps.calls == [1.5] and discord.requests[-1].status == 200


def test_retries_are_bounded(discord: FakeDiscord, discord_origin: str) -> None:
    """A route that keeps answering 429 gives up after max_retries with a RetryableError."""
    discord.always_429 = True
    with _api(discord_origin) as api, pytest.raises(RetryableError, match="busy"):
        api.edit_original(APP_ID, TOKEN, "x")
    assert len(discord.requests) == 4


def test_long_rate_limit_is_deferred_not_slept(discord: FakeDiscord, discord_origin: str) -> None:
    """A retry_after longer than max_wait becomes a RetryableError deferring by that long."""
    discord.rate_limit_once, discord.retry_after = True, 90.0
    sleeps = Sleeps()
    with _api(discord_origin, sleeps, max_wait=10.0) as api, pytest.raises(RetryableError) as caught:
        api.edit_original(APP_ID, TOKEN, "x")
    assert caught.value.defer == 90.0 and sleeps.calls == []


def test_gone_webhook_raises_and_is_not_called_again(discord: FakeDiscord, discord_origin: str) -> None:
    """A 404 raises WebhookGone; later calls to that webhook fail at once, without a request."""
    token = "gone-token-" + "g" * 30
    discord.gone.add(token)
    with _api(discord_origin) as api:
        with pytest.raises(WebhookGone):
            api.edit_original(APP_ID, token, "x")
        with pytest.raises(WebhookGone):
            api.edit_original(APP_ID, token, "y")
    assert len(discord.requests) == 1


def test_file_over_ten_mib_is_refused_as_too_large(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """Discord's 413 for an oversized attachment raises AttachmentTooLarge (the caller then links instead)."""
    video = _video(tmp_path, 10 * 1024 * 1024 + 1)
    with _api(discord_origin) as api, pytest.raises(AttachmentTooLarge):
        api.edit_original(APP_ID, TOKEN, "x", Attachment(video, "big.mp4"))


def test_hanging_discord_times_out(discord: FakeDiscord, discord_origin: str) -> None:
    """Every request has a timeout: a Discord that does not answer becomes a RetryableError."""
    discord.delay = 0.6
    api = DiscordApi(
        f"{discord_origin}/api/v10", timeout=0.2, policy=RetryPolicy(max_retries=1, sleep=Sleeps())
    )
    with api, pytest.raises(RetryableError, match="ReadTimeout"):
        api.edit_original(APP_ID, TOKEN, "x")
    deadline = time.monotonic() + 3
    while len(discord.requests) < 2 and time.monotonic() < deadline:  # let the fake finish (next test)
        time.sleep(0.05)


def test_channel_webhook_posts_file_and_handles_429(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """execute_webhook (discord-webhook) posts content and the file, waiting out one 429."""
    discord.rate_limit_once = True
    url = f"{discord_origin}/api/webhooks/123/channel-token-{'c' * 30}"
    sleeps = Sleeps()
    execute_webhook(
        parse_webhook_url(url),
        "Welcome!",
        Attachment(_video(tmp_path, 3000), "w.mp4"),
        policy=RetryPolicy(sleep=sleeps),
    )
    assert [r.status for r in discord.requests] == [429, 200]
    sent = discord.requests[-1]
    assert sent.method == "POST" and sent.payload["content"] == "Welcome!"
    assert [name for name, _ in sent.files.values()] == ["w.mp4"]
    assert sleeps.calls == [0.05]


def test_gone_channel_webhook_raises(discord: FakeDiscord, discord_origin: str) -> None:
    """A deleted channel webhook (404) raises WebhookGone and is not called again."""
    token = "deleted-" + "d" * 30
    discord.gone.add(token)
    url = f"{discord_origin}/api/webhooks/9/{token}"
    for _ in range(2):
        with pytest.raises(WebhookGone):
            execute_webhook(parse_webhook_url(url), "hi")
    assert len(discord.requests) == 1


def test_no_url_or_token_is_logged(
    discord: FakeDiscord, discord_origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Retries and failures are logged without the URL or token (structlog and stdlib logging)."""
    caplog.set_level(logging.DEBUG)
    discord.rate_limit_once = True
    url = f"{discord_origin}/api/webhooks/55/hook-secret-{'h' * 30}"
    with capture_logs() as logs:
        with _api(discord_origin) as api:
            api.edit_original(APP_ID, TOKEN, "x")
        discord.rate_limit_once, discord._limited = True, False
        execute_webhook(parse_webhook_url(url), "x", policy=RetryPolicy(sleep=Sleeps()))
        discord.gone.add("hook-secret")
        with pytest.raises(WebhookGone) as caught:
            execute_webhook(parse_webhook_url(url + "x"), "x")
    text = repr(logs) + caplog.text + str(caught.value)
    assert any(e["event"] == "discord_rate_limited" for e in logs)
    assert TOKEN not in text and "hook-secret" not in text


def test_register_puts_command_definitions_with_the_bot_token(
    discord: FakeDiscord, discord_origin: str, tmp_path: Path
) -> None:
    """register() PUTs /applications/{id}/commands with 'Bot <token>' and typed options."""
    settings = make_settings(
        tmp_path, discord_application_id=APP_ID, discord_bot_token="bot-token-" + "b" * 30,
        discord_api_base=f"{discord_origin}/api/v10",
    )  # fmt: skip
    names = register(settings)
    [sent] = discord.requests
    assert names == ["avatar", "announce", "characters"]
    assert sent.method == "PUT" and sent.path == f"/api/v10/applications/{APP_ID}/commands"
    assert sent.headers["authorization"] == "Bot bot-token-" + "b" * 30
    assert sent.payload == [AVATAR_COMMAND, ANNOUNCE_COMMAND, CHARACTERS_COMMAND]
    options = {o["name"]: o for o in sent.payload[0]["options"]}
    assert options["audio"]["type"] == 11 and options["audio"]["required"] is True
    assert options["audio"]["file_types"] == ["audio", "video"]
    assert [c["value"] for c in options["style"]["choices"]] == ["auto", "photo", "cartoon"]
    assert options["text"]["type"] == 3
    assert options["character"]["autocomplete"] is True and options["character"]["max_length"] == 32
    subcommands = {o["name"]: o for o in sent.payload[2]["options"]}
    assert set(subcommands) == {"add", "list", "remove"} and all(o["type"] == 1 for o in subcommands.values())
    assert [o["type"] for o in subcommands["add"]["options"]] == [3, 11, 3, 3]


def test_register_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    """Registering needs the application id and bot token."""
    with pytest.raises(ConfigError, match="BOT_TOKEN"):
        register(make_settings(tmp_path, discord_application_id=APP_ID))
