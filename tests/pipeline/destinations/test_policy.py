"""Which destinations a job spec may name on a deployment (its allow-lists), checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.contracts import DiscordInteractionDestination, DiscordWebhookDestination, FolderDestination
from pipeline.destinations import allowed_webhook, check_destination, output_folder
from pipeline.errors import InvalidInput
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://discord.com/api/webhooks/1/tok", True),
        ("https://ptb.discordapp.com/api/webhooks/1/tok", True),
        ("https://discord.com:443/api/webhooks/1/tok", True),
        ("http://discord.com/api/webhooks/1/tok", False),
        ("https://discord.com:8443/api/webhooks/1/tok", False),
        ("https://discord.com.evil.example/api/webhooks/1/tok", False),
        ("https://evil.example/api/webhooks/1/tok", False),
        ("http://127.0.0.1:9999/api/webhooks/1/tok", False),
        ("http://127.0.0.1:7000/api/webhooks/1/tok", True),  # the configured API base's origin
        ("http://127.0.0.1:7001/api/webhooks/1/tok", True),  # an origin listed in discord_webhook_hosts
        ("http://localhost:7000/api/webhooks/1/tok", False),
    ],
)
def test_webhooks_must_be_discord_or_an_allowed_origin(tmp_path: Path, url: str, allowed: bool) -> None:
    """https on Discord's hosts (port 443), the API base's origin, or an origin the operator lists;
    anything else (a loopback service, a look-alike host) is refused with a sentence naming the host."""
    settings = make_settings(
        tmp_path, discord_api_base="http://127.0.0.1:7000/api/v10",
        discord_webhook_hosts="discord.com,ptb.discordapp.com,http://127.0.0.1:7001",
    )  # fmt: skip
    if allowed:
        assert allowed_webhook(settings, SecretStr(url)).webhook_id == "1"
    else:
        with pytest.raises(InvalidInput, match="webhook") as caught:
            allowed_webhook(settings, SecretStr(url))
        assert "tok" not in caught.value.reason  # the token never appears in a reason


def test_fallback_webhooks_are_checked_like_any_webhook(tmp_path: Path) -> None:
    """An interaction destination's fallback webhook pointing at a loopback service is refused."""
    settings = make_settings(tmp_path)
    dest = DiscordInteractionDestination(
        application_id="1",
        token=SecretStr("t"),
        fallback_webhook=SecretStr("http://127.0.0.1:9/api/webhooks/1/x"),
    )
    with pytest.raises(InvalidInput, match=r"the fallback webhook in the job points at 127\.0\.0\.1"):
        check_destination(settings, dest)
    check_destination(settings, dest.model_copy(update={"fallback_webhook": None}))


def test_folders_must_be_the_output_folder_or_an_allowed_one(tmp_path: Path) -> None:
    """None → the output folder; inside it or inside output_dirs is allowed; anything else, including a
    link out of the output folder, is refused."""
    extra = tmp_path / "shared"
    settings = make_settings(tmp_path, output_dirs=[str(extra)])
    settings.outbox.mkdir(parents=True)
    (settings.outbox / "escape").symlink_to("/etc")
    assert output_folder(settings, FolderDestination()) == settings.outbox
    assert output_folder(settings, FolderDestination(path=str(extra / "team"))) == extra / "team"
    assert output_folder(settings, FolderDestination(path="outbox/sub")) == settings.outbox.resolve() / "sub"
    for path in ["/etc", "../../..", str(settings.outbox / "escape"), str(tmp_path)]:
        with pytest.raises(InvalidInput, match="not an allowed output folder"):
            output_folder(settings, FolderDestination(path=path))
    check_destination(
        settings, DiscordWebhookDestination(url=SecretStr("https://discord.com/api/webhooks/1/t"))
    )
