"""Discord address shapes: what a job may name, and request paths built only from checked parts."""

from __future__ import annotations

import pytest

from pipeline.webhooks import interaction_path, parse_webhook_url


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        (
            "https://discord.com/api/webhooks/123/abc-DEF_9",
            ("https", "discord.com", 443, "123", "abc-DEF_9", None),
        ),
        (
            "https://canary.discord.com/api/v10/webhooks/1/t/",
            ("https", "canary.discord.com", 443, "1", "t", None),
        ),
        ("https://discord.com/api/webhooks/5/t?thread_id=77", ("https", "discord.com", 443, "5", "t", "77")),
        ("http://127.0.0.1:9000/api/webhooks/5/t", ("http", "127.0.0.1", 9000, "5", "t", None)),
    ],
)
def test_webhook_urls_in_discords_shape_are_parsed(url: str, parts: tuple[object, ...]) -> None:
    """Webhook URLs in Discord's shape become checked parts; the rebuilt URL has no query."""
    hook = parse_webhook_url(url)
    assert (hook.scheme, hook.host, hook.port, hook.webhook_id, hook.token, hook.thread_id) == parts
    assert hook.url.endswith(f"/api/webhooks/{parts[3]}/{parts[4]}")


@pytest.mark.parametrize(
    "url",
    [
        "https://discord.com/api/webhooks/../../users/@me",
        "https://discord.com/api/webhooks/12/tok/../../../admin",
        "https://discord.com/api/webhooks/abc/tok",
        "https://discord.com/api/channels/1/messages",
        "https://user:pw@discord.com/api/webhooks/1/t",
        "https://discord.com/api/webhooks/1/t#frag",
        "https://discord.com/api/webhooks/1/t?wait=true&x=1",
        "https://discord.com/api/webhooks/1/t%2F..%2Fx",
        "ftp://discord.com/api/webhooks/1/t",
        "file:///etc/passwd",
        "https://discord.com/api/webhooks/1/t\nHost: evil",
        "not a url",
        "https://discord.com:99999/api/webhooks/1/t",
    ],
)
def test_anything_else_is_not_a_webhook(url: str) -> None:
    """Traversal, other API paths, user info, fragments, other query parameters, encoded slashes, other
    schemes and header injection are all refused."""
    with pytest.raises(ValueError):
        parse_webhook_url(url)


def test_interaction_paths_cannot_leave_webhooks() -> None:
    """A digits-only application id and a URL-safe token make /webhooks/<app>/<token>/...; a '../' in
    either is refused before any request exists."""
    assert (
        interaction_path("42", "tok.en-_", "messages", "@original")
        == "/webhooks/42/tok.en-_/messages/@original"
    )
    for app, token in [
        ("../../../../../admin/users", "t"),
        ("42", "../../delete-all"),
        ("42", ".."),
        ("4 2", "t"),
    ]:
        with pytest.raises(ValueError):
            interaction_path(app, token, "messages", "@original")
