"""Keeping secrets out of everything flannel-bot says, writes and stores.

Why: what the bot reads (probe output, journals, pod logs, ConfigMaps, what people type) carries
credentials (kubeconfigs, env files, flags, JSON logs, private keys), and a Slack channel, a report
or a support bundle has more readers than the cluster has admins. Every exit passes its text
through `redact`, or its data through `scrub`: the Slack client, the terminal, reports, bundles,
logs and the audit store. Pure: strings in, strings out.

Each rule names the lowercase words that must appear for it to apply, so text with no hint of a
secret (most of it) costs one lowercasing and a few substring searches. The formats tried, and
the look-alikes that must stay readable, are in tests/secret_corpus.py; `bench/secrets.py` prints
how many of each pass.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

MASK: Final = "[REDACTED]"
_PRIVATE_KEY: Final = "[REDACTED PRIVATE KEY]"
_SHAPED: Final = "[REDACTED TOKEN]"

# What a secret-holding name ends with: `POSTGRES_PASSWORD`, `client-secret`, `aws_access_key`,
# WireGuard's `PrivateKey` and `PresharedKey`, flannel's wireguard `PSK`, Azure's `AccountKey`.
_NAME_ENDINGS = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|private[_-]?key|pre[_-]?shared[_-]?key|psk|account[_-]?key"
    r"|client[_-]?(?:key|certificate)[_-]?data|credentials?"
)
# JSON keys add docker's `auth` and GCP's `private_key_id`.
_JSON_WORDS = _NAME_ENDINGS + r"|auth|private[_-]?key[_-]?id"
# lowercase words one of which a text with such a name holds
_KEY_HINTS = ("pass", "secret", "token", "key", "credential", "certificate", "psk")
_JSON_HINTS = (*_KEY_HINTS, "auth")
_KEY = rf"[\w.-]*?(?:{_NAME_ENDINGS})"
_JSON_KEY = rf"[\w.-]*?(?:{_JSON_WORDS})"
_SECRET_KEY = re.compile(rf"(?i){_JSON_KEY}")
_SECRET_FLAG = re.compile(rf"(?i)--?[\w-]*?(?:{_NAME_ENDINGS})")
# values that name no secret: booleans, empties, references to one kept elsewhere (a variable,
# a file: the bot's own `private_key = "~/.ssh/flannel-bot"`)
_NOT_SECRET = re.compile(
    r"(?i)(?:|true|false|null|none|nil|yes|no|~|\$.*|(?:~|\.\.?)?/.*|\[REDACTED.*)"
)
_EVENT_SUFFIX = re.compile(r"1[6-9a-f][0-9a-f]{14}")
_A_FIELD = re.compile(r"[A-Za-z][\w-]*[:=](?!=|$)")
# where a word may start: after a non-word character, or after a JSON escape (`\n`, `\t`), whose
# letter would otherwise glue the word to it in text that is JSON (a JSON log line, a report)
_W = r"(?:(?<=\\[nrt])|(?<![A-Za-z0-9_]))"
_PEM_NAME = r"-----(?:BEGIN|END) [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
# a value after `key=`: quoted, quoted inside a JSON string (\"…\"), or up to a space, quote,
# backslash or separator; never half of a JSON escape, so redacting JSON text keeps it JSON
_VALUE = r"\"[^\"\n]*\"|'[^'\n]*'|\\\"(?:[^\"\\\n]|\\[^\"])*\\\"|[^\s\"'&\\,;]+"


def _plain(value: str) -> str:
    if len(value) >= 4 and value.startswith('\\"') and value.endswith('\\"'):
        return value[2:-2]
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[1:-1]
    return value


def _masked(value: str) -> str:
    quote = value[: (len(value) - len(_plain(value))) // 2]
    return quote + MASK + quote


def _keep(value: str) -> bool:
    return _NOT_SECRET.fullmatch(_plain(value)) is not None


def _prose(value: str) -> bool:
    """`creating token: timed out`, `etcdPassword: version:false`, `token: x509: …`: the word
    after the colon is the sentence or the next field, not a secret."""
    return (
        (value.isalpha() and value.islower()) or value.endswith(":") or bool(_A_FIELD.match(value))
    )


def _value_after_key(match: re.Match[str]) -> str:
    """The secret after `key=`, `key: ` or `--flag `, unless it is plainly not one."""
    value = match["value"]
    if _keep(value):
        return match[0]
    mid_line_colon = match["sep"].strip() == ":" and match.groupdict().get("line") is None
    if mid_line_colon and value == _plain(value) and _prose(value):
        return match[0]
    return match[0][: match.start("value") - match.start()] + _masked(value)


def _json_value(match: re.Match[str]) -> str:
    if _keep(match["value"]):
        return match[0]
    return match[0][: match.start("value") - match.start()] + MASK + match["close"]


def _base64_pem(match: re.Match[str]) -> str:
    """Base64 of a PEM block (kubeconfig `client-key-data`, a Secret's `tls.key`): a private key
    is redacted, a certificate is public and kept."""
    head = match[0][:64]
    try:
        decoded = base64.b64decode(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return _PRIVATE_KEY
    return match[0] if b"PRIVATE KEY" not in decoded else _PRIVATE_KEY


def _authorization(match: re.Match[str]) -> str:
    return match["head"] + (match["scheme"] or "") + MASK


def _bootstrap_token(match: re.Match[str]) -> str:
    """`abcdef.0123456789abcdef` standing alone (in JSON text, after a `\\n` too); not a longer
    word, not digits only, and not an Event's name (`<object>.<UnixNano in hex>`)."""
    text, start, token = match.string, match.start(), match[0]
    before = text[start - 1 : start]
    alone = (
        not before
        or not (before.isalnum() or before in "_.-")
        or (text[start - 2 : start] in ("\\n", "\\t"))
    )
    if not alone or token.replace(".", "").isdigit() or _EVENT_SUFFIX.fullmatch(token[7:]):
        return token
    return "[REDACTED BOOTSTRAP TOKEN]"


@dataclass(frozen=True)
class _Rule:
    hints: tuple[str, ...]  # lowercase words one of which the text must hold; () for always
    pattern: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]


_RULES: Final = (
    # private keys of every kind, to their END line, or to the end of a cut text or JSON string
    _Rule(
        ("private key",),
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[^\\\"']|\\[^\"'])*?"
            rf"(?:{_PEM_NAME}|(?=\\*[\"']|\Z))",
            re.S,
        ),
        _PRIVATE_KEY,
    ),
    # the tail of a key whose BEGIN line was cut off (a log tailed mid-key), lines or JSON `\n`s
    _Rule(
        ("private key",),
        re.compile(
            r"(?m)(?:^(?:[^\n]*[\s:\]])?[A-Za-z0-9+/]{16,}={0,2}[ \t]*\r?\n)+[^\n]*?" + _PEM_NAME
        ),
        _PRIVATE_KEY,
    ),
    _Rule(
        ("private key",),
        re.compile(rf"(?:(?<=\\n)|(?<=[\"\s]))(?:[A-Za-z0-9+/]{{16,}}={{0,2}}\\n)+{_PEM_NAME}"),
        _PRIVATE_KEY,
    ),
    _Rule(("ls0tls1crudjti",), re.compile(_W + r"LS0tLS1CRUdJTi[A-Za-z0-9+/]*={0,2}"), _base64_pem),
    # JSON and Python-dict keys: "password": "…", {"name": "X_TOKEN", "value": "…"}, and the same
    # inside JSON strings (\"token\": \"…\"), however deep
    _Rule(
        _JSON_HINTS,
        re.compile(
            rf"(?i)(?P<e>\\*)\"name(?P=e)\"\s*:\s*(?P=e)\"{_KEY}(?P=e)\"\s*,\s*"
            r"(?P=e)\"value(?P=e)\"\s*:\s*(?P=e)\"(?P<value>[^\"\\\n]+)(?P<close>(?P=e)\")"
        ),
        _json_value,
    ),
    _Rule(
        _JSON_HINTS,
        re.compile(
            rf"(?i)(?P<q>[\"']){_JSON_KEY}(?P=q)\s*:\s*(?P<vq>[\"'])"
            r"(?P<value>(?:(?!(?P=vq))[^\\\n]|\\.)+)(?P<close>(?P=vq))"
        ),
        _json_value,
    ),
    _Rule(
        _JSON_HINTS,
        re.compile(
            rf"(?i)(?P<e>\\+)\"{_JSON_KEY}(?P=e)\"\s*:\s*(?P=e)\""
            r"(?P<value>[^\"\\\n]+)(?P<close>(?P=e)\")"
        ),
        _json_value,
    ),
    # tokens whose shape says what they are
    _Rule(
        ("xox", "xapp"),
        re.compile(_W + r"(?:(?:xoxe\.)?xox[a-z]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,})"),
        "[REDACTED SLACK TOKEN]",
    ),
    _Rule(
        ("hooks.slack.com",),
        re.compile(_W + r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+"),
        "hooks.slack.com/" + MASK,
    ),
    _Rule(
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        re.compile(_W + r"gh[pousr]_[A-Za-z0-9]{36,}"),
        _SHAPED,
    ),
    _Rule(("github_pat_",), re.compile(_W + r"github_pat_[A-Za-z0-9_]{22,}"), _SHAPED),
    _Rule(("glpat-",), re.compile(_W + r"glpat-[A-Za-z0-9_-]{20,}"), _SHAPED),
    _Rule(("npm_",), re.compile(_W + r"npm_[A-Za-z0-9]{36}"), _SHAPED),
    _Rule(
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
        re.compile(_W + r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
        _SHAPED,
    ),
    _Rule(("aiza",), re.compile(_W + r"AIza[0-9A-Za-z_-]{35}"), _SHAPED),
    _Rule(("hvs.", "hvb.", "hvr."), re.compile(_W + r"hv[sbr]\.[A-Za-z0-9_-]{24,}"), _SHAPED),
    _Rule(("sha256~",), re.compile(_W + r"sha256~[A-Za-z0-9_-]{20,}"), _SHAPED),
    _Rule(("k10",), re.compile(_W + r"K10[0-9a-f]{64}::[^\s\"'\\]+"), _SHAPED),
    _Rule(
        ("akia", "asia", "abia", "acca"),  # access key ids: long-term, temporary, and kin
        re.compile(_W + r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        "[REDACTED AWS KEY ID]",
    ),
    _Rule(
        ("eyj",),
        re.compile(_W + r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}(?:\.[A-Za-z0-9_-]*)?"),
        "[REDACTED JWT]",
    ),
    # key=value, key: value (YAML, env files, logfmt, query strings, Go's %+v) and --flag value
    _Rule(
        _KEY_HINTS,
        re.compile(
            rf"(?im)(?P<line>^[ \t]*(?:-[ \t]+)?)?(?:(?<=\\[nrt])|(?<![\w./-]))(?P<key>{_KEY})"
            rf"(?P<sep>[ \t]*=[ \t]*|:[ \t]*)(?P<value>{_VALUE})"
        ),
        _value_after_key,
    ),
    _Rule(
        _KEY_HINTS,
        re.compile(
            rf"(?i)(?:(?<=\\[nrt])|(?<!\S))--?[\w-]*?(?:{_NAME_ENDINGS})(?P<sep>[ \t]+)(?!-)"
            rf"(?P<value>{_VALUE})"
        ),
        _value_after_key,
    ),
    # credentials in URLs and on command lines: https://user:pass@host, curl -u user:pass
    _Rule(
        ("://",),
        re.compile(_W + r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@\"'<>]*):[^\s/?#@\"'<>]+@"),
        rf"\1:{MASK}@",
    ),
    _Rule(
        ("-u",),
        re.compile(r"(?:(?<=\\[nrt])|(?<!\S))(-u|--user)([ =][^\s:]+):[^\s\"'\\]+"),
        rf"\1\2:{MASK}",
    ),
    # HTTP headers: the whole value after the scheme
    _Rule(
        ("authorization", "cookie"),
        re.compile(
            r"(?i)(?P<head>" + _W + r"(?:(?:proxy-)?authorization|(?:set-)?cookie)"
            r"[\"']?\s*[:=]\s*[\"']?)"
            r"(?P<scheme>(?:basic|bearer|token|digest|negotiate|ntlm|aws4-hmac-sha256|apikey)\s+)?"
            r"(?:[^\"'\\\r\n]|\\[^\"'\\nr])+"
        ),
        _authorization,
    ),
    _Rule(
        ("bearer",),
        re.compile(
            r"("
            + _W
            + r"(?i:bearer)\s+)(?=[A-Za-z0-9._~+/=-]*[0-9A-Z._~+/=-])[A-Za-z0-9._~+/=-]{12,}"
        ),
        rf"\1{MASK}",
    ),
    # kubeadm/k3s bootstrap tokens, bare (`kubeadm token list`); an Event's name has the same
    # shape, `<object>.<UnixNano in hex>`, and is left alone
    _Rule((), re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}(?![\w.-])"), _bootstrap_token),
)
_HINTS: Final = tuple(sorted({hint for rule in _RULES for hint in rule.hints}))
_UNHINTED: Final = tuple(rule for rule in _RULES if not rule.hints)


def redact(text: str) -> str:
    """`text` with every secret this module recognises replaced by a `[REDACTED …]` marker.

    Idempotent, so exits may apply it again to text an earlier one already redacted."""
    if len(text) < _SHORTEST:
        return text
    if len(text) <= _MEMO_LENGTH:
        return _redact_short(text)
    return _redact(text)


# no rule matches fewer characters (`psk=x`); short texts recur (node names, kinds, commands, a
# probe's usual output), so a report of a million events redacts each of them once
_SHORTEST: Final = 5
_MEMO_LENGTH: Final = 512


@functools.lru_cache(maxsize=1 << 16)
def _redact_short(text: str) -> str:
    return _redact(text)


# "pass" is the hint of password, passwd and passphrase: in ASCII text that holds none of them
# it is bypass, passed or compass, and no rule it stands for can match (beyond ASCII a rule that
# ignores case matches s to U+017F, so there the hint stays). A diagnose reply that says
# "bypasses" (br_netfilter) went through the key=value rules: 0.4 s at 5,000 nodes.
_PASS_WORDS: Final = ("password", "passwd", "passphrase")


def _redact(text: str) -> str:
    lowered = text.lower()
    present = {hint for hint in _HINTS if hint in lowered}
    if "pass" in present and text.isascii() and not any(w in lowered for w in _PASS_WORDS):
        present.discard("pass")
    for rule in _RULES if present else _UNHINTED:
        if rule.hints and present.isdisjoint(rule.hints):
            continue
        text = rule.pattern.sub(rule.replace, text)
    return text


def scrub(value: Any, text: Callable[[str], str] = redact) -> Any:
    """`value` (JSON-like) with `text` applied to every string, and the value of every key that
    names a secret (`password`, `client_secret`, an EnvVar named `DB_TOKEN`) masked whole.

    Unchanged parts are the same objects, so scrubbing a large report that holds no secret
    allocates nothing; and a container whose JSON text shows that nothing in it could change
    (`_plainly_clean`) is not walked at all."""
    if isinstance(value, str):
        return text(value)
    if text is redact and isinstance(value, dict | list | tuple) and _plainly_clean(value):
        return value
    return _scrub(value, text)


def _any_of(words: Iterable[bytes]) -> re.Pattern[bytes]:
    """A pattern matching where any of `words` occurs, as a trie (`a(?:uth|kia)|k(?:ey|10)`):
    about twice as fast as searching for each word in turn. A word holding another is left
    out, as the shorter one is found wherever it is."""
    kept = {w for w in words if not any(o != w and o in w for o in words)}
    trie: dict[int, Any] = {}
    for word in kept:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[-1] = {}  # a word ends here

    def branch(node: dict[int, Any]) -> bytes:
        if -1 in node:
            return b""
        alts = [re.escape(bytes([char])) + branch(rest) for char, rest in sorted(node.items())]
        return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"

    return re.compile(branch(trie))


# where some rule or secret key name could apply: one of the hint words (lowercase), or what the
# one rule without hints needs, a bootstrap token's `.` and 16 characters
_HINTED: Final = _any_of({hint.encode() for hint in (*_HINTS, *_JSON_HINTS, *_KEY_HINTS)})
_UNHINTED_SHAPE: Final = re.compile(rb"\.[a-z0-9]{16}")
_json_text: tuple[Callable[[Any], bytes], tuple[type[Exception], ...]] | None = None


def _plainly_clean(value: Any) -> bool:
    """Whether `scrub(value)` is `value` itself, shown from its JSON text, which holds every
    string and key in it as written (ASCII is never escaped): a rule or a secret key name needs
    one of the hint words in some string, lowercased; the one rule without hints needs the
    shape `_UNHINTED_SHAPE`. Text that is not all ASCII (`str.lower` maps the Kelvin sign to a
    `k`), or a value JSON cannot write, is not shown clean. An export of a million audit events
    walks only the few that hold a hint (bench/report_1m.py --exports)."""
    global _json_text
    if _json_text is None:
        import msgspec.json  # here: 24 ms that commands which never scrub do not pay

        _json_text = msgspec.json.encode, (msgspec.EncodeError, TypeError, ValueError)
    encode, unwritable = _json_text
    try:
        raw = encode(value)
    except RecursionError:
        return False
    except unwritable:
        return False
    if not raw.isascii():
        return False
    return not _HINTED.search(raw.lower()) and not _UNHINTED_SHAPE.search(raw)


def _scrub(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return _scrub_dict(value, text)
    if isinstance(value, list | tuple):
        return _scrub_list(value, text)
    return value


@functools.lru_cache(maxsize=4096)
def _secret_name(key: str) -> bool:
    return _SECRET_KEY.fullmatch(key) is not None


@functools.lru_cache(maxsize=4096)
def _secret_flag(word: str) -> bool:
    return _SECRET_FLAG.fullmatch(word) is not None


def _scrub_dict(value: dict[Any, Any], text: Callable[[str], str]) -> dict[Any, Any]:
    name = value.get("name")
    env_secret = isinstance(name, str) and _secret_name(name)  # a Kubernetes EnvVar
    out: dict[Any, Any] | None = None
    for key, item in value.items():
        if isinstance(item, str):
            secret = (env_secret and key == "value") or (isinstance(key, str) and _secret_name(key))
            new: Any = MASK if secret and not _keep(item) else text(item)
        elif isinstance(item, dict | list | tuple):
            new = _scrub(item, text)
        else:
            continue
        if new is not item:
            if out is None:
                out = dict(value)
            out[key] = new
    return value if out is None else out


def _scrub_list(value: list[Any] | tuple[Any, ...], text: Callable[[str], str]) -> Any:
    out: list[Any] | None = None
    after_flag = False
    for i, item in enumerate(value):
        if isinstance(item, str):
            if after_flag and not item.startswith("-") and not _keep(item):
                new: Any = MASK  # ["--token", "abc"]: argv as a list
            else:
                new = text(item)
            after_flag = item.startswith("-") and _secret_flag(item)
        else:
            new, after_flag = _scrub(item, text), False
        if new is not item:
            if out is None:
                out = list(value)
            out[i] = new
    return value if out is None else out
