"""Command-line redaction."""

from __future__ import annotations

from memdiag.redact import redact_argv, redact_url


def test_option_values_pairs_urls_and_headers_are_masked() -> None:
    argv = [
        "python",
        "app.py",
        "--password=hunter2",
        "--api-key",
        "sk-123456",
        "-t",
        "5",
        "DB_PASSWORD=swordfish",
        "postgres://admin:s3cret@db/prod",
        "https://x/y?token=abc&page=2",
        "Authorization: Bearer abcdefghijklmnop",
        "--port=8080",
    ]
    out = " ".join(redact_argv(argv))
    for secret in ("hunter2", "sk-123456", "swordfish", "s3cret", "abc&", "abcdefghijklmnop"):
        assert secret not in out, secret
    assert "--port=8080" in out and "-t 5" in out and "page=2" in out


def test_length_is_bounded() -> None:
    out = redact_argv(["x" * 10_000], max_len=100)
    assert len("".join(out)) <= 101


def test_url_without_secrets_is_unchanged() -> None:
    assert redact_url("https://example.invalid/path?page=2") == "https://example.invalid/path?page=2"
