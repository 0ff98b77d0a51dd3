"""A catalogued message, where it can be read, and a sighting of one in the evidence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from re import _constants as re_constants  # type: ignore[attr-defined]
from re import _parser as re_parser  # type: ignore[attr-defined]
from typing import Any

# where a line can be read, and the name evidence gives each text it scans
FLANNEL_LOG = "flannel log"
KUBE_PROXY_LOG = "kube-proxy log"
EVENT = "event"
NODE_CONDITION = "node condition"
KUBELET_JOURNAL = "kubelet journal"
K3S_JOURNAL = "k3s journal"
KERNEL_LOG = "kernel log"
DNS_LOG = "coredns log"  # the cluster DNS pods: the first pods to show a broken pod network
WHERE = (
    DNS_LOG,
    FLANNEL_LOG,
    KUBE_PROXY_LOG,
    EVENT,
    NODE_CONDITION,
    KUBELET_JOURNAL,
    K3S_JOURNAL,
    KERNEL_LOG,
)


@dataclass(frozen=True)
class Message:
    """One error a producer prints, and what it establishes."""

    finding: str
    pattern: str  # Python regex, searched in one line; anchored on the producer's fixed words
    producer: str
    source: str  # owner/repo:path[:function] it is printed from
    versions: str  # the releases that print it
    example: str  # one literal line as printed (the tests feed it back)
    where: tuple[str, ...]
    meaning: str = ""
    establishes: bool = True  # False: a line that only corroborates (informational, transient)
    restart_helps: bool = False  # would restarting flannel cure what it says?
    url: str = ""  # a public thread where it was seen

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


@dataclass(frozen=True)
class Sighting:
    """A catalogued line found in the evidence: on which node, in which text, quoted."""

    message: Message
    node: str  # "" when the text cannot be tied to a node
    source: str  # where it was read, as a finding quotes it
    line: str
    count: int = 1  # how many times it was seen there

    @property
    def finding(self) -> str:
        return self.message.finding


@dataclass
class Catalogue:
    messages: tuple[Message, ...]
    _by_where: dict[str, tuple[re.Pattern[str], tuple[Message, ...]]] = field(
        default_factory=dict, repr=False
    )
    _words: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None] = field(
        default_factory=dict, repr=False
    )
    _by_word: dict[str, tuple[list[int], dict[tuple[str, bool], list[int]]]] = field(
        default_factory=dict, repr=False
    )
    _tokens: dict[str, _WordTokens | None] = field(default_factory=dict, repr=False)

    def for_where(self, where: str) -> tuple[re.Pattern[str], tuple[Message, ...]]:
        """One combined pattern for everything readable in `where` (one search per line), and
        the messages it stands for."""
        if where not in self._by_where:
            chosen = tuple(m for m in self.messages if where in m.where)
            combined = "|".join(_scoped(m.pattern) for m in chosen) or r"(?!x)x"
            self._by_where[where] = (re.compile(combined), chosen)
        return self._by_where[where]

    def words(self, where: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(words matched as they are, words matched ignoring case, in lower case): every
        match of one of `where`'s messages holds one of them (`required_words`); None when a
        message has none (then every line is searched)."""
        if where not in self._words:
            words = [required_words(m.pattern) for m in self.for_where(where)[1]]
            known = [w for ws in words if ws is not None for w in ws]
            self._words[where] = (
                (
                    tuple(dict.fromkeys(w for w, ignore in known if not ignore)),
                    tuple(dict.fromkeys(w for w, ignore in known if ignore)),
                )
                if all(w is not None for w in words)
                else None
            )
        return self._words[where]

    def scan(self, where: str, text: str, node: str, source: str) -> Iterator[Sighting]:
        """The catalogued lines in `text`, the last of each message with how often it came.

        A line that holds none of the messages' required words (`required_words`) cannot
        match and is not searched: the combined pattern costs its length in alternatives per
        character (a 5,000-node bundle's flannel logs are 12 MB), a word test a few."""
        return self.sightings_of(where, self.found_in(where, text), node, source)

    def found_in(self, where: str, text: str) -> tuple[tuple[int, str, int], ...]:
        """`scan` without the node and source: (the message's place in `for_where(where)`, the
        last line of it, how often it came), in the order first seen. Places, not messages,
        so that another process may scan a text and hand back what it found."""
        combined, chosen = self.for_where(where)
        words = self.words(where)
        found: dict[int, tuple[str, int]] = {}
        for original in _lines_to_search(text, words, self._word_tokens(where)):
            line = original.translate(FULLWIDTH)
            if words is not None and not _may_match(line, words):
                continue
            if not combined.search(line):
                continue
            for i in sorted(self._could_match(where, line)):  # in the messages' order
                if chosen[i].regex.search(line):
                    seen = found.get(i, ("", 0))[1]
                    found[i] = (original.strip()[:500], seen + 1)
        return tuple((i, line, count) for i, (line, count) in found.items())

    def sightings_of(
        self, where: str, found: Iterable[tuple[int, str, int]], node: str, source: str
    ) -> Iterator[Sighting]:
        """The sightings `found_in(where, ...)` stands for, on `node`, read in `source`."""
        chosen = self.for_where(where)[1]
        for i, line, count in found:
            yield Sighting(chosen[i], node, source, line, count)

    def _word_tokens(self, where: str) -> _WordTokens | None:
        if where not in self._tokens:
            words = self.words(where)
            self._tokens[where] = None if words is None else _WordTokens(words)
        return self._tokens[where]

    def _could_match(self, where: str, line: str) -> set[int]:
        """The messages of `where` (their places in `for_where`) whose required words `line`
        holds, or that have none: only these are searched in a line the combined pattern
        matched, not all of them (at 5,000 nodes, 150 searches per line of each broken node's
        log). Places, not messages: a frozen dataclass hashes every field each time."""
        if where not in self._by_word:
            by_word: dict[tuple[str, bool], list[int]] = {}
            always: list[int] = []
            for i, message in enumerate(self.for_where(where)[1]):
                words = required_words(message.pattern)
                if words is None:
                    always.append(i)
                for pair in words or ():
                    by_word.setdefault(pair, []).append(i)
            self._by_word[where] = (always, by_word)
        always, by_word = self._by_word[where]
        could = set(always)
        lower = line.lower()
        folds = not line.isascii()  # case folding beyond ASCII: as _may_match, search it
        tokens = None if folds else self._word_tokens(where)
        if tokens is not None:  # only the words the line's tokens allow (_WordTokens)
            sensitive, ignoring = tokens.held(lower)
            for needle in sensitive:
                if needle in line:
                    could.update(by_word[(needle, False)])
            for needle in ignoring:
                if needle in lower:
                    could.update(by_word[(needle, True)])
            return could
        for (needle, ignore), places in by_word.items():
            if (folds or needle in lower) if ignore else needle in line:
                could.update(places)
        return could


# punctuation an input method types in place of ASCII when a log is retyped or pasted through
# it (Chinese, Japanese): matched as the ASCII the producer printed
FULLWIDTH = str.maketrans(
    {
        "\uff1a": ": ",  # fullwidth colon
        "\uff0c": ", ",  # fullwidth comma
        "\uff08": "(",
        "\uff09": ")",
        "\u201c": '"',  # curly quotes
        "\u201d": '"',
    }
)


def required_words(pattern: str) -> tuple[tuple[str, bool], ...] | None:
    """Words one of which every match of `pattern` holds, each with whether it is matched
    ignoring case: the longest literal run of its top level, or one per branch of an
    alternation there; None when that cannot be told (then every line is searched)."""
    parsed = re_parser.parse(pattern)
    ignore = bool(parsed.state.flags & re.IGNORECASE)
    words = _sequence_words(list(parsed))
    if not words:
        return None
    return tuple((w.lower(), True) if ignore else (w, False) for w in words)


def _sequence_words(items: list[tuple[Any, Any]]) -> list[str] | None:
    best, run = "", ""
    for op, value in [*items, (None, None)]:
        if op is re_constants.LITERAL:
            run += chr(value)
            continue
        best, run = max(best, run, key=len), ""
    if len(best) >= 3:
        return [best]
    for op, value in items:  # a group or an alternation every match passes through
        if op is re_constants.SUBPATTERN and not value[1] and not value[2]:
            inner = _sequence_words(list(value[3]))
            if inner:
                return inner
        if op is re_constants.BRANCH:
            branches = [_sequence_words(list(b)) for b in value[1]]
            if all(branches):
                return [w for b in branches for w in b or ()]
    return [best] if best else None


def _may_match(line: str, words: tuple[tuple[str, ...], tuple[str, ...]]) -> bool:
    """Whether `line` holds one of the words (case-sensitive ones, ones ignoring case); the
    tests run in C (map), not a Python loop per word."""
    sensitive, ignoring = words
    if any(map(line.__contains__, sensitive)):
        return True
    if not ignoring:
        return False
    if not line.isascii():  # case folding beyond ASCII (U+017F matches s): search the line
        return True
    return any(map(line.lower().__contains__, ignoring))


# what ends a line for str.splitlines besides "\n" (in ASCII text: \r, \v, \f, \x1c-\x1e)
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c-\x1e]")


class _WordTokens:
    """Which of a place's words a text can hold at all, told from the text's tokens (its
    whitespace-separated runs, lowercased) in one split and a few set operations, not from a
    search of the whole text per word (150 words over 15 MB of flannel logs: 0.7 s).

    A word's inner tokens are its tokens with whitespace on both sides within the word itself:
    wherever the word occurs, each is a whole token of the text. A text whose tokens lack one
    of a word's inner tokens cannot hold the word; a word without inner tokens (`panic: `) is
    always searched. Each word is filed under one of its inner tokens, the one the fewest words
    share, so a text looks at the few words filed under the tokens it has."""

    def __init__(self, words: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
        self.always: tuple[list[str], list[str]] = ([], [])
        self.filed: dict[str, list[tuple[frozenset[str], str, bool]]] = {}
        inner = {
            (word, ignore): _inner_tokens(word.lower())
            for ignore, group in enumerate(words)
            for word in group
        }
        shared: dict[str, int] = {}
        for tokens in inner.values():
            for token in tokens:
                shared[token] = shared.get(token, 0) + 1
        for (word, ignore), tokens in inner.items():
            if not tokens:
                self.always[ignore].append(word)
                continue
            key = min(sorted(tokens), key=lambda t: (shared[t], -len(t)))
            self.filed.setdefault(key, []).append((tokens, word, bool(ignore)))
        self.keys = frozenset(self.filed)

    def held(self, lowered: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The words (case-sensitive ones, ones ignoring case) that ASCII text `lowered`, in
        lower case, may hold; each word it holds is among them."""
        tokens = set(lowered.split())
        sensitive, ignoring = list(self.always[0]), list(self.always[1])
        for key in self.keys.intersection(tokens):
            for needed, word, ignore in self.filed[key]:
                if needed <= tokens:
                    (ignoring if ignore else sensitive).append(word)
        return tuple(sensitive), tuple(ignoring)


def _inner_tokens(word: str) -> frozenset[str]:
    """The tokens of `word` with whitespace on both sides within it."""
    tokens = word.split()
    first = 0 if not word or word[0].isspace() else 1
    last = len(tokens) if word and word[-1].isspace() else len(tokens) - 1
    return frozenset(tokens[first:last])


def _lines_to_search(
    text: str,
    words: tuple[tuple[str, ...], tuple[str, ...]] | None,
    tokens: _WordTokens | None = None,
) -> Iterable[str]:
    """The lines of `text` that may hold one of `words`, in order; every line when that cannot
    be told cheaply. Each word is looked for in the whole text (a C search per word, not a
    Python step per line), and only the lines it is found in are returned, so a log without a
    catalogued word costs a search per word; `_may_match` is still the test for each line.
    Only ASCII text split at "\n" alone is read so (there each line is the same slice as
    splitlines gives, the FULLWIDTH marks cannot occur, and lower() keeps every offset).
    `tokens` (of the same words): only the words the text's tokens allow are looked for."""
    if words is None or not text.isascii() or _OTHER_BREAKS.search(text):
        return text.splitlines()
    sensitive, ignoring = words
    if "" in sensitive or "" in ignoring:
        return text.splitlines()
    lowered = text.lower()
    if tokens is not None:
        sensitive, ignoring = tokens.held(lowered)
    spans: set[tuple[int, int]] = set()
    for haystack, needles in ((text, sensitive), (lowered, ignoring)):
        for word in needles:
            at = haystack.find(word)
            while at >= 0:
                start = haystack.rfind("\n", 0, at) + 1
                end = haystack.find("\n", at)
                end = len(haystack) if end < 0 else end
                spans.add((start, end))
                at = haystack.find(word, end)
    return [text[start:end] for start, end in sorted(spans)]


_LEADING_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _scoped(pattern: str) -> str:
    """A pattern as one alternative of many: its leading `(?i)` becomes `(?i:...)`."""
    flags = _LEADING_FLAGS.match(pattern)
    if flags:
        return f"(?{flags.group(1)}:{pattern[flags.end() :]})"
    return f"(?:{pattern})"


def build(messages: Iterable[Message]) -> Catalogue:
    return Catalogue(tuple(messages))
