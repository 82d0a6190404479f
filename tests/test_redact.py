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


# -- issue 16 item 7: what the attack found, table-driven --------------------------------------
# Rule (docs/processes.md, "Redaction"): a value is masked when (a) it follows a flag whose
# meaning is a password in a known tool (mysql -p, redis-cli -a, curl -u, sshpass -p, ...),
# (b) its option or key name looks secret (--pwd, password=, "token": ...), or (c) it looks
# like a credential by itself (user:password@ in a URL, known token prefixes, JWTs).
# Ordinary arguments (-p 8080 for a port, --user alice) are left alone.

import pytest  # noqa: E402

MASKED = [
    # (argv, the secret that must not appear)
    (["mysql", "-pSECRET1", "-u", "root", "db"], "SECRET1"),
    (["mysqldump", "-p", "SECRET2", "db"], "SECRET2"),
    (["/usr/bin/mariadb", "--password", "SECRET3"], "SECRET3"),
    (["sshpass", "-p", "SECRET4", "ssh", "host"], "SECRET4"),
    (["app", "--pwd", "SECRET5"], "SECRET5"),
    (["app", "--pwd=SECRET6"], "SECRET6"),
    (["curl", "-u", "alice:SECRET7", "https://example.invalid"], "SECRET7"),
    (["curl", "--user", "alice:SECRET8", "https://example.invalid"], "SECRET8"),
    (["curl", "-ualice:SECRET9", "https://example.invalid"], "SECRET9"),
    (["redis-cli", "-a", "SECRET10", "ping"], "SECRET10"),
    (["redis-cli", "-h", "db", "-aSECRET11"], "SECRET11"),
    (["psql", "postgres://u:SECRET12@db:5432/app"], "SECRET12"),
    (["psql", "postgresql://u:p@SECRET13@db/app"], "SECRET13"),  # an '@' in the password
    (["app", "--dsn", "mongodb+srv://admin:SECRET14@cluster0/x"], "SECRET14"),
    (["psql", "host=db user=u password=SECRET15 dbname=app"], "SECRET15"),
    (["app", "--conn", "Server=db;User Id=u;Password=SECRET16;Database=x"], "SECRET16"),
    (["app", "--conn", "Server=db;Uid=u;Pwd=SECRET17;"], "SECRET17"),
    (["app", "--config", '{"user": "u", "token": "SECRET18"}'], "SECRET18"),
    (["app", '{"auth": {"api_key": "SECRET19"}}'], "SECRET19"),
    (["app", "--set", "api_key=SECRET20"], "SECRET20"),
    (["app", "--header", "X-Api-Key: SECRET21"], "SECRET21"),
    (["app", "sk-SECRET22abcdefghijklmnop"], "SECRET22"),
    (["app", "ghp_SECRET23abcdefghijklmnopqrstuvwxyz"], "SECRET23"),
    (["app", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRUNSRVQyNCJ9.SECRET24sig"], "SECRET24"),
    (["mongosh", "-u", "admin", "-p", "SECRET25"], "SECRET25"),
    (["ldapsearch", "-w", "SECRET26", "-D", "cn=admin"], "SECRET26"),
    (["smbclient", "-U", "alice%SECRET27", "//host/share"], "SECRET27"),
    (["zip", "-PSECRET28", "out.zip", "f"], "SECRET28"),
    (["openssl", "enc", "-pass", "pass:SECRET29"], "SECRET29"),
    (["docker", "login", "-p", "SECRET30", "registry"], "SECRET30"),
    (["/usr/bin/env", "mysql", "-pSECRET31"], "SECRET31"),
    (["python", "-m", "mycli", "--password", "SECRET32"], "SECRET32"),
    # credential headers: the whole value, any scheme, any length
    (["curl", "-H", "Authorization: Bearer SECRET33", "https://example.invalid"], "SECRET33"),
    (["app", "--header", "authorization: Token SECRET34"], "SECRET34"),
    (["app", "--header=Proxy-Authorization: Basic SECRET35"], "SECRET35"),
    (["app", "Authorization=ApiKey key=SECRET36"], "SECRET36"),
    (["curl", "-H", "Cookie: theme=dark; sid=SECRET37"], "SECRET37"),
    (["app", "X-Authorization:SECRET38"], "SECRET38"),
]

KEPT = [
    # (argv, what must survive unchanged)
    (["python", "-m", "http.server", "-p", "8080"], "-p 8080"),
    (["python", "-m", "http.server", "8080", "--bind", "127.0.0.1"], "--bind 127.0.0.1"),
    (["ssh", "-p", "2222", "host"], "-p 2222"),
    (["curl", "-o", "out.html", "https://example.invalid/page?id=3"], "https://example.invalid/page?id=3"),
    (["git", "log", "-p", "HEAD"], "-p HEAD"),
    (["mysql", "-u", "root", "-h", "db"], "-u root -h db"),
    (["app", "--user", "alice", "--workers=4"], "--user alice --workers=4"),
    (["redis-cli", "-h", "db", "-p", "6379"], "-p 6379"),
    (["app", '{"user": "alice", "count": 3}'], '{"user": "alice", "count": 3}'),
    (["app", "key=value", "mode=fast"], "key=value mode=fast"),
    (["app", "https://example.invalid/a@b"], "https://example.invalid/a@b"),
    (["gunicorn", "-w", "4", "app:app"], "-w 4 app:app"),
]


@pytest.mark.parametrize(("argv", "secret"), MASKED, ids=[s for _, s in MASKED])
def test_credentials_are_masked(argv: list[str], secret: str) -> None:
    out = " ".join(redact_argv(argv))
    assert secret not in out, out
    assert "***" in out


@pytest.mark.parametrize(("argv", "kept"), KEPT, ids=[k for _, k in KEPT])
def test_ordinary_arguments_are_kept(argv: list[str], kept: str) -> None:
    assert kept in " ".join(redact_argv(argv))


def test_curl_user_keeps_the_user_name() -> None:
    assert redact_argv(["curl", "-u", "alice:pw", "u"]) == ["curl", "-u", "alice:***", "u"]


def test_the_cheap_checks_before_each_pattern_never_skip_a_match() -> None:
    """redact_text runs a pattern only on text holding what its matches must hold (so that
    most arguments need no pattern compiled): the result is the one of running every
    pattern, over the tables above and 20 000 random arguments built from their pieces."""
    import random

    from memdiag import redact as r

    def every_pattern(text: str) -> str:
        text = r._URL_CREDS.sub(lambda m: f"{m.group('scheme')}{r.MASK}@", text)
        text = r._QUERY_SECRET.sub(lambda m: f"{m.group('key')}{r.MASK}", text)
        text = r._BEARER.sub(lambda m: f"{m.group('p')}{r.MASK}", text)
        text = r._JSON_SECRET.sub(lambda m: m.group("k") + ('"***"' if m.group("v").startswith('"') else r.MASK), text)
        text = r._AUTH_HEADER.sub(lambda m: m.group("k") + r.MASK, text)
        text = r._KV_SECRET.sub(lambda m: m.group("k") + m.group("sep") + r.MASK, text)
        return r._TOKEN_LIKE.sub(r.MASK, text)

    pieces = [a for argv, _ in MASKED + KEPT for a in argv] + [
        "Bearer", "basic", "BASIC", "Authorization", "COOKIE", "\t", " ", "\u00a0", "://", "@", "?", "&", "=", ":",
        '"', "'", "token", "Pass",
        "sk-", "ghp_", "github_pat_", "xoxb-", "AKIA", "AIza", "eyJ", ".", "abcdefghijklmnopqrstuvwxyz0123456789",
    ]  # fmt: skip
    rng = random.Random(17)
    texts = pieces + ["".join(rng.choices(pieces, k=rng.randint(1, 6))) for _ in range(20_000)]
    for text in texts:
        assert r.redact_text(text) == every_pattern(text), text
