"""Mask secrets in command output, in time linear in the output's length.

Two kinds of secret are masked with ``***``: the literal secrets the agent knows (its own
token, configured passwords), and values that *look* like secrets because of the word in
front of them (``DB Root Password: xyz``, ``--admin-password xyz``, ``"db_password": "xyz"``,
``│ Admin Password │ xyz │``, ``token is xyz``, ``Bearer xyz``, ``https://user:xyz@host``), and
what a frontend's access log shows of a request: password-reset keys (``?key=xyz``), passwords
and session ids in a query or cookie (``pwd=xyz``, ``sid=xyz``) and any ``Authorization:`` header
(``Authorization: token key:secret``).  Viewers may follow live logs (issue 21.9).

Why it is built this way: a regex that starts with a run such as ``[\\w.-]*`` before an
alternation of words is tried at every position and rescans the run each time, so a long
line costs quadratic time (milliseconds per kilobyte, seconds for a big migrate log), and
even a plain case-insensitive alternation scans at only ~10 MB/s.  Here the work is anchored
on the secret words instead:

1. ``str.find`` over the lower-cased text (hundreds of MB/s) decides whether there is any
   trigger word at all; most output has none and is returned untouched;
2. each occurrence of a secret word is an anchor; the rest of its key is a run whose end is
   found once and shared by every anchor inside that run, and the pattern for the value is
   tried once per run end, with possessive quantifiers so nothing is rescanned.

An over-redacted line is harmless and an under-redacted one is not, so bare values run to
the end of their line or table cell.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"

_CELL = "│┃║|"
# How far before its secret word a --flag may start ("--db-root-password").
_FLAG_REACH = 100

# Where a secret-looking value may follow: each trigger is found with str.find (fast even on
# long lines, unlike a regex alternation that is retried at every position), then checked here.
_WORD_AT = re.compile(r"pass(?:word|wd|phrase)|secret|token")
_KEY_PREFIX = re.compile(r"(?:api|encryption|access)[_-]?\Z")
_WORD_OR_HYPHEN_RUN = re.compile(r"[\w-]*+\Z")

_QUOTED = r"\"(?:[^\"\\\n]|\\.){0,1024}+\"|'[^'\n]{0,1024}+'"
_BARE = "[^\\s" + _CELL + "][^\\r\\n" + _CELL + "]*+"

# The value patterns after a secret word are split in two: the rest of the key (a run of
# characters that may hold more secret words: its end is found once and shared by all of
# them, see _RunEnds) and what follows that run (tried once per run end).
#
# JSON / YAML / env style: "db_password": "xyz", Password: xyz, DB_PASSWORD=xyz.
_KEY_VALUE = (re.compile(r"[\w.-]*+"), re.compile(r"[\"']?\s*+[:=]\s*+(?P<value>%s|%s)" % (_QUOTED, _BARE)))
# Command-line flags: --admin-password xyz (the "--" before the word is checked separately).
_FLAG = (re.compile(r"[\w-]*+"), re.compile(r"(?:=|\s++)(?P<value>\S++)"))
# Rich box tables as printed by `fm info`: │ DB Root Password │ xyz │
_TABLE_CELL = (re.compile(r"[\w .-]*+"), re.compile(r"\s*+[%s]\s*+(?P<value>%s)" % (_CELL, _BARE)))
# Prose, right after the word: "root password is xyz", "password set to xyz"
_PROSE = re.compile(r"\s++(?:is|was set to|set to)\s++(?P<value>\S++)")
# HTTP credentials: Authorization: Bearer xyz; scheme://user:xyz@host
_BEARER = re.compile(r"\s++(?P<value>\S++)")
# Authorization: <scheme> value, also as a quoted key ('authorization': 'token k:s'); the scheme stays.
_AUTHORIZATION = re.compile(r"[\"']?\s*+[:=]\s*+[\"']?[a-z]++\s++(?P<value>[^\s\"']++)")
# A query or cookie parameter's value: up to the next separator.
_PARAM_VALUE = re.compile(r"(?P<value>[^&;,\s\"'<>]++)")
#: Parameters whose value is a secret, and the characters that may stand before them.  ``key=`` only
#: right after ``?``/``&``/``;`` (Frappe's /update-password?key=...), not inside longer names.
_PARAMS = {"key=": "?&;", "pwd=": None, "sid=": None}
_URL_PASSWORD = re.compile(r"[^/\s:@]++:(?P<value>[^@\s/]++)@")

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace each known secret, and values that look like passwords or tokens, by ``***``."""
    if secrets:
        text = mask_known_secrets(text, secrets)
    lowered = _lower(text)
    # The common case, decided at the speed of str.find (spelled out: this runs for every line).
    if not (
        "pass" in lowered
        or "secret" in lowered
        or "key" in lowered
        or "token" in lowered
        or "bearer" in lowered
        or "://" in lowered
        or "pwd=" in lowered
        or "sid=" in lowered
        or "authorization" in lowered
    ):
        return text
    # Secret words first; then, on what is left, bearer tokens and URL passwords (a value
    # masked by one pass is not looked at again by the next).
    anchors = _word_anchors(lowered)
    if anchors:
        text = _mask_values(text, anchors, lowered)
    for literal in ("bearer", "://", *_PARAMS):
        if literal in lowered:
            lowered = _lower(text)
            text = _mask_values(text, _literal_anchors(lowered, literal), lowered)
    return text


def mask_known_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace each known secret by ``***`` (and nothing else: for output that is parsed, not shown)."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _lower(text: str) -> str:
    """Lower case with the same length as ``text``, so positions in one are positions in the other."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return text.translate(_ASCII_LOWER)  # a few characters (e.g. "İ") grow when lower-cased


def _word_anchors(lowered: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every secret word in the text, in order."""
    anchors: list[tuple[int, int, str]] = []
    for trigger in ("pass", "secret", "token"):
        pos = lowered.find(trigger)
        while pos >= 0:
            word = _WORD_AT.match(lowered, pos)
            if word:
                anchors.append((pos, word.end(), "word"))
            pos = lowered.find(trigger, pos + 1)
    pos = lowered.find("authorization")
    while pos >= 0:
        anchors.append((pos, pos + len("authorization"), "authorization"))
        pos = lowered.find("authorization", pos + 1)
    pos = lowered.find("key")
    while pos >= 0:
        # api_key, api-key, apikey, encryption_key, access_key, ...
        prefix = _KEY_PREFIX.search(lowered, max(0, pos - 11), pos)
        if prefix:
            anchors.append((prefix.start(), pos + 3, "word"))
        pos = lowered.find("key", pos + 3)
    anchors.sort()
    return anchors


def _literal_anchors(lowered: str, literal: str) -> list[tuple[int, int, str]]:
    anchors = []
    pos = lowered.find(literal)
    while pos >= 0:
        anchors.append((pos, pos + len(literal), literal))
        pos = lowered.find(literal, pos + len(literal))
    return anchors


def _mask_values(text: str, anchors: list[tuple[int, int, str]], lowered: str) -> str:
    """Mask the value after every anchor, left to right."""
    parts = []
    done = 0  # everything before this index is already in parts
    runs = _RunEnds(lowered)
    for anchor in anchors:
        if anchor[0] < done:
            continue  # inside a value already masked
        value = _value_after(anchor, lowered, runs)
        if value is None:
            continue
        start, end = value
        raw = text[start:end]
        kept = raw.rstrip()  # a bare value ends before the padding of its table cell
        parts.append(text[done:start])
        parts.append(_mask_value(kept) + raw[len(kept) :])
        done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _value_after(anchor: tuple[int, int, str], lowered: str, runs: _RunEnds) -> tuple[int, int] | None:
    """The span of the secret value this anchor introduces, or None."""
    start, end, kind = anchor
    if kind == "://":
        match = _URL_PASSWORD.match(lowered, end)
    elif kind in _PARAMS:
        before = lowered[start - 1] if start > 0 else ""
        allowed = _PARAMS[kind]
        if (allowed is not None and before not in allowed) or (allowed is None and before and _is_word_char(before)):
            return None
        match = _PARAM_VALUE.match(lowered, end)
    elif kind == "authorization":
        match = _AUTHORIZATION.match(lowered, end)
    elif kind == "bearer":
        if start > 0 and _is_word_char(lowered[start - 1]):
            return None
        match = _BEARER.match(lowered, end)
    else:
        # key=value first, also for "--flag=value": its value runs to the end of the line like any
        # other bare value, in case it holds spaces.
        match = runs.after(_KEY_VALUE, end)
        if match is None and _is_flag(lowered, start):
            match = runs.after(_FLAG, end)
        match = match or runs.after(_TABLE_CELL, end) or _PROSE.match(lowered, end)
    if match is None:
        return None
    return match.span("value")


class _RunEnds:
    """Matches "rest of the key, then a tail" so that each character is scanned about once.

    Several secret words can sit in one run ("password_token_secret..."); from each of them the
    run ends at the same place, so its end, and what the tail pattern finds there, are kept.
    """

    def __init__(self, lowered: str):
        self.lowered = lowered
        self.spans: dict[re.Pattern, tuple[int, int]] = {}
        self.tails: dict[tuple[re.Pattern, int], re.Match | None] = {}

    def after(self, pattern: tuple[re.Pattern, re.Pattern], pos: int) -> re.Match | None:
        run, tail = pattern
        start, end = self.spans.get(run, (-1, -1))
        if not start <= pos <= end:  # a new run: the characters from pos on were not scanned yet
            matched = run.match(self.lowered, pos)  # runs are `*` patterns: they always match, maybe empty
            end = matched.end() if matched else pos
            self.spans[run] = (pos, end)
        key = (tail, end)
        if key not in self.tails:
            self.tails[key] = tail.match(self.lowered, end)
        return self.tails[key]


def _is_flag(lowered: str, word_start: int) -> bool:
    """True when the secret word ends a run of word characters and '-' that holds "--" (a ``--flag``)."""
    dashes = lowered.rfind("--", max(0, word_start - _FLAG_REACH), word_start)
    if dashes < 0:
        return False
    # Only word characters and '-' may stand between the dashes and the word.
    return _WORD_OR_HYPHEN_RUN.match(lowered, dashes, word_start) is not None


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _mask_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + MASK + value[0]
    return MASK
