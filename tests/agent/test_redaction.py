"""Redaction of secrets in output: the cases it must mask, text it must leave alone, and inputs
that made the earlier backtracking patterns take seconds per kilobyte.

The adversarial inputs are sized so that a quadratic implementation would take minutes here;
their throughput is measured in tests/benchmarks/bench_redaction.py, not asserted.
"""

from __future__ import annotations

import pytest

from fmappliance.agent.redaction import mask_known_secrets
from fmappliance.agent.runner import redact_text, run_command


@pytest.mark.parametrize(
    "line, expected",
    [
        ("DB Root Password: rootpw123", "DB Root Password: ***"),
        ("password: lowercase-pw", "password: ***"),
        ("DB_PASSWORD=xyz", "DB_PASSWORD=***"),
        ('{"db_password": "dbpw", "db_name": "_abc"}', '{"db_password": "***", "db_name": "_abc"}'),
        ("api_key='k1' rest", "api_key='***' rest"),
        ("ENCRYPTION-KEY: abc/def==", "ENCRYPTION-KEY: ***"),
        ("│ Admin Password │ adminpw │", "│ Admin Password │ *** │"),
        ("| DB Root Password   | rootpw      | x |", "| DB Root Password   | ***      | x |"),
        ("--admin-password hunter2 --x", "--admin-password *** --x"),
        ("bench new-site --db-root-password=r00t", "bench new-site --db-root-password=***"),
        ("token is s3cr3t", "token is ***"),
        ("Administrator password set to hunter2", "Administrator password set to ***"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer ***"),
        ("fetching https://user:pa55@example.com/repo", "fetching https://user:***@example.com/repo"),
        ("PASSWORD:\n  on-the-next-line", "PASSWORD:\n  ***"),
        ("line one\nsecret = two\nline three", "line one\nsecret = ***\nline three"),
        # A frontend's access log (issue 21.9): reset keys, passwords and session ids in URLs, auth headers.
        (
            '"GET /update-password?key=Zx81aQ HTTP/1.1" 200',
            '"GET /update-password?key=*** HTTP/1.1" 200',
        ),
        ("GET /api/method/login?usr=a@b.c&pwd=hunter2&x=1", "GET /api/method/login?usr=a@b.c&pwd=***&x=1"),
        ("Cookie: sid=9f8e7d6c; system_user=yes", "Cookie: sid=***; system_user=yes"),
        ("GET /app?sid=9f8e7d6c HTTP/1.1", "GET /app?sid=*** HTTP/1.1"),
        ("Authorization: token 1a2b3c:4d5e6f", "Authorization: token ***"),
        ("{'Authorization': 'token 1a2b3c:4d5e6f'}", "{'Authorization': 'token ***'}"),
    ],
)
def test_values_that_look_like_secrets_are_masked(line, expected):
    assert redact_text(line) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Reset password for user Administrator",
        "Migrating site1.example.com",
        "Updating DocTypes for frappe        : [========================================] 100%",
        "Executing frappe.patches.v15_0.set_default_password_policy in site1 (_abc123)",
        "Backup Summary for site1 at 2026-11-30 05:00:00",
        "keyboard layout unchanged; monkey business",
        "monkey=banana; orsid=2; forwarded for 10.0.0.1",
        "Authorization failed for user guest",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


def test_known_secrets_are_masked_longest_first():
    assert redact_text("a tok-123456 b tok-123", ["tok-123", "tok-123456"]) == "a *** b ***"
    assert mask_known_secrets("password: x tok-1", ["tok-1"]) == "password: x ***"


def test_unicode_that_grows_when_lower_cased_keeps_positions_right():
    # "İ".lower() is two characters: a naive lower-cased copy would shift every position after it.
    assert redact_text("İİİ DB Password: hunter2 İ") == "İİİ DB Password: ***"
    assert redact_text("ÀÉÎ token=abc") == "ÀÉÎ token=***"


def test_a_long_line_without_secrets_comes_back_unchanged():
    for line in ("a" * 200_000, "x_" * 100_000, "-" * 200_000, " " * 200_000, "│" * 100_000, '{"k": 1} ' * 20_000):
        assert redact_text(line) == line


@pytest.mark.parametrize(
    "unit, repeat",
    [
        ("password", 25_000),  # one long key run holding thousands of secret words
        ("--password", 20_000),  # a flag prefix that reaches back across the run
        ("-" * 50, 4_000),  # dashes, then a word at the very end
        ("password   ", 20_000),  # words separated by spaces: each a possible table key
        ("password │", 20_000),  # each word a table key
        ("api_key-", 25_000),
        ("://a:", 40_000),  # URL anchors whose credentials never close with '@'
        ("bearer ", 30_000),
        ("token is ", 20_000),
    ],
)
def test_pathological_repetition_is_handled_and_masked_sensibly(unit, repeat):
    line = unit * repeat + "password: hunter2"
    out = redact_text(line)
    assert "hunter2" not in out
    assert out.endswith("***")


def test_an_unterminated_quote_still_masks_the_value():
    assert "abc" not in redact_text('token: "abc' + "x" * 50_000)
    assert redact_text('password: "' + "a" * 5_000 + '"').startswith("password: ")
    assert "a" * 10 not in redact_text('password: "' + "a" * 5_000 + '"')


def test_a_secret_word_inside_a_masked_value_does_not_double_mask():
    assert redact_text("password: token=abc") == "password: ***"
    assert redact_text("--db-password password --x") == "--db-password *** --x"


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_parsed_only_output_masks_known_secrets_but_skips_the_look_alike_patterns():
    lines = []
    result = run_command(
        ["sh", "-c", "echo 'password: visible'; echo 'tok-987654'"],
        timeout=5,
        redact=["tok-987654"],
        parsed_only=True,
        on_output=lines.append,
    )
    assert result.ok
    assert lines == ["password: visible", "***"]
    assert result.output == "password: visible\n***\n"
