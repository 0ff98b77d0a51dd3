"""What k8s.io/apimachinery does for the real API server, over plain JSON dicts.

Label and field selectors, the three PATCH flavours and name validation are where a fake API server
most often lies (kmock ignores selectors), and where a client bug stays hidden until production.
They are kept free of I/O here so `bot.lab.apiserver` stays about HTTP, storage and watch.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


class SelectorError(ValueError):
    """A label or field selector that the real server would reject with 400 BadRequest."""


class PatchError(ValueError):
    """A patch document that cannot be applied; `code` is the HTTP status the real server uses."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


# --- names -------------------------------------------------------------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_LABEL_RE = re.compile(_LABEL)
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def name_problem(name: str, name_format: str) -> str | None:
    """Why `name` is not a valid object name in `name_format` (subdomain, label, path), or None."""
    if name_format == "path":
        if name in (".", ".."):
            return f"may not be '{name}'"
        if "/" in name or "%" in name:
            return "may not contain '/' or '%'"
        return None
    if name_format == "label":
        if len(name) > 63:
            return "must be no more than 63 characters"
        return None if _LABEL_RE.fullmatch(name) else LABEL_MESSAGE
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if _SUBDOMAIN_RE.fullmatch(name) else SUBDOMAIN_MESSAGE


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and _LABEL_RE.fullmatch(name) is not None


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.fullmatch(prefix)):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r}")
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        raise SelectorError(
            f"unable to parse requirement: invalid label key {key!r}: name part must consist of "
            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )


def _check_label_value(value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE_RE.fullmatch(value):
        raise SelectorError(
            f"unable to parse requirement: invalid label value: {value!r}: a valid label must be "
            "an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )


# --- label selectors ---------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:(!=|==|=|!|<|>|\(|\)|,)|([^\s!=<>(),]+))")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, gt, lt
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(str(value)), int(next(iter(self.values)))
        except ValueError:
            return False
        return have > want if self.operator == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    """A parsed `labelSelector`: every requirement must hold (the comma is a conjunction)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the full grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`."""
        tokens = _tokenize(text or "")
        parser = _SelectorParser(tokens)
        return cls(tuple(parser.requirements()))

    @classmethod
    def from_api(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A `metav1.LabelSelector` (matchLabels plus matchExpressions), as in DaemonSet specs."""
        if not selector:
            return cls()
        reqs = [
            Requirement(k, "=", frozenset([str(v)]))
            for k, v in selector.get("matchLabels", {}).items()
        ]
        ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
        for expr in selector.get("matchExpressions", []) or []:
            op = ops.get(str(expr.get("operator")))
            if op is None:
                raise SelectorError(
                    f"{expr.get('operator')!r} is not a valid label selector operator"
                )
            reqs.append(Requirement(str(expr["key"]), op, frozenset(expr.get("values") or [])))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None:  # pragma: no cover - the pattern accepts every non-space character
            raise SelectorError(f"unable to parse requirement: unexpected input at {text[pos:]!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _SelectorParser:
    """Recursive descent over the tokens, following k8s.io/apimachinery/pkg/labels/selector.go."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def requirements(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        if self.peek() is None:
            return reqs
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                return reqs
            if tok != ",":
                raise SelectorError(f"found '{tok}', expected: ',' or 'end of string'")

    def identifier(self, what: str) -> str:
        tok = self.take()
        if tok is None or tok in _SYMBOLS:
            found = "end of string" if tok is None else tok
            raise SelectorError(f"unable to parse requirement: found '{found}', expected: {what}")
        return tok

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = self.identifier("identifier")
            _check_label_key(key)
            return Requirement(key, "!")
        key = self.identifier("identifier")
        _check_label_key(key)
        op = self.peek()
        if op is None or op == ",":
            return Requirement(key, "exists")
        self.take()
        if op in ("=", "=="):
            return Requirement(key, "=", frozenset([self.single_value()]))
        if op == "!=":
            return Requirement(key, "!=", frozenset([self.single_value()]))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set())
        if op in (">", "<"):
            value = self.identifier("identifier")
            try:
                int(value)
            except ValueError:
                raise SelectorError(
                    f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an "
                    f"integer: {value!r}"
                ) from None
            return Requirement(key, "gt" if op == ">" else "lt", frozenset([value]))
        raise SelectorError(
            f"unable to parse requirement: found '{op}', expected: in, notin, =, ==, !=, gt, lt"
        )

    def single_value(self) -> str:
        tok = self.peek()
        if tok is None or tok == ",":
            return ""
        value = self.identifier("identifier")
        _check_label_value(value)
        return value

    def value_set(self) -> frozenset[str]:
        opening = self.take()
        if opening != "(":
            found = "end of string" if opening is None else opening
            raise SelectorError(f"unable to parse requirement: found '{found}', expected: '('")
        values: list[str] = []
        while True:
            tok = self.peek()
            if tok == ")" and not values:
                raise SelectorError(
                    "unable to parse requirement: for 'in', 'notin' operators, values set can't "
                    "be empty"
                )
            if tok in (",", ")"):
                values.append("")
            else:
                value = self.identifier("identifier")
                _check_label_value(value)
                values.append(value)
            tok = self.take()
            if tok == ")":
                return frozenset(values)
            if tok != ",":
                found = "end of string" if tok is None else tok
                raise SelectorError(f"unable to parse requirement: found '{found}', expected: ','")


_SYMBOLS = frozenset(["!=", "==", "=", "!", "<", ">", "(", ")", ","])


# --- field selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class FieldSelector:
    """A parsed `fieldSelector`; the server checks `fields` against what the resource supports."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        reqs: list[FieldRequirement] = []
        for term in _split_unescaped(text or "", ","):
            if not term.strip():
                if text and text.strip():
                    raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
                continue
            for op in ("!=", "==", "="):
                index = _find_unescaped(term, op)
                if index >= 0:
                    field = term[:index].strip()
                    value = _unescape(term[index + len(op) :])
                    reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", value))
                    break
            else:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        return cls(tuple(reqs))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(r.field for r in self.requirements)

    def matches(self, values: Mapping[str, str]) -> bool:
        """`values` maps each selected field label to the value the server renders."""
        for req in self.requirements:
            equal = values.get(req.field, "") == req.value
            if equal != (req.operator == "="):
                return False
        return True

    def name(self) -> str | None:
        """The `metadata.name=x` term, which the real server answers from an index."""
        for req in self.requirements:
            if req.field == "metadata.name" and req.operator == "=":
                return req.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _find_unescaped(text: str, needle: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(needle, i):
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string the server compares a field selector with: missing is "", booleans lower-case."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, (dict, list)):
        return json.dumps(node, sort_keys=True)
    return str(node)


# --- patches -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that strategic merge patch merges element-wise, and the key that identifies an element
# (from the `patchMergeKey` tags of k8s.io/api). `ports` is resolved per element.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}
_PRIMITIVE_SETS = frozenset(["finalizers"])
_DELETE = object()


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch as kubectl sends it for built-in types.

    Like a merge patch, but lists with a merge key (containers by name, env by name, conditions by
    type, ...) merge element-wise, finalizers merge as a set, and the `$patch`, `$retainKeys`,
    `$deleteFromPrimitiveList/` and `$setElementOrder/` directives are honoured.
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return _DELETE
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            drop = value if isinstance(value, list) else [value]
            result[field] = [x for x in result.get(field) or [] if x not in drop]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    existing = list(current) if isinstance(current, list) else []
    if field in _PRIMITIVE_SETS:
        return existing + [x for x in patch if x not in existing]
    key = _MERGE_KEYS.get(field)
    if field == "ports":
        key = "containerPort" if any("containerPort" in p for p in patch + existing) else "port"
    if key is None or not all(isinstance(item, Mapping) for item in patch):
        return [copy.deepcopy(x) for x in patch if not _is_directive(x)]
    for item in patch:
        if item.get("$patch") == "replace":
            return [copy.deepcopy(x) for x in patch if not _is_directive(x)]
    for item in patch:
        index = next(
            (i for i, old in enumerate(existing) if _same_key(old, item, key)),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del existing[index]
        elif index is None:
            existing.append(copy.deepcopy(item))
        else:
            existing[index] = strategic_merge_patch(existing[index], item)
    return existing


def _is_directive(item: Any) -> bool:
    return isinstance(item, Mapping) and "$patch" in item


def _same_key(old: Any, new: Mapping[str, Any], key: str) -> bool:
    return isinstance(old, Mapping) and key in new and old.get(key) == new.get(key)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy and test, applied in order."""
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, Mapping) or "op" not in op:
            raise PatchError("Unexpected kind: operation is missing 'op'", 400)
        kind = op["op"]
        path = _pointer(op.get("path"))
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(_required(op, "value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path, verb="replace")
            doc = _add(doc, path, copy.deepcopy(_required(op, "value")))
        elif kind == "move":
            source = _pointer(op.get("from"))
            doc, value = _remove(doc, source, verb="move")
            doc = _add(doc, path, value)
        elif kind == "copy":
            value = _lookup(doc, _pointer(op.get("from")), "copy")
            doc = _add(doc, path, copy.deepcopy(value))
        elif kind == "test":
            if _lookup(doc, path, "test") != op.get("value"):
                raise PatchError(f"testing value {op.get('path')} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", 400)
    return doc


def _required(op: Mapping[str, Any], key: str) -> Any:
    if key not in op:
        raise PatchError(f"missing value for {op.get('op')} operation at {op.get('path')}")
    return op[key]


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer: {path!r}", 400)
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _pointer_text(parts: Iterable[str]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _container(doc: Any, parts: list[str], verb: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(
                f"{verb} operation does not apply: doc is missing path: {_pointer_text(parts)}"
            )
    return node


def _lookup(doc: Any, parts: list[str], verb: str) -> Any:
    if not parts:
        return doc
    node = _container(doc, parts, verb)
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    raise PatchError(
        f"{verb} operation does not apply: doc is missing path: {_pointer_text(parts)}"
    )


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    node = _container(doc, parts, "add")
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list):
        if last == "-":
            node.append(value)
        elif last.isdigit() and int(last) <= len(node):
            node.insert(int(last), value)
        else:
            raise PatchError(f"add operation does not apply: index out of range: {last}")
    else:
        raise PatchError(
            f"add operation does not apply: doc is missing path: {_pointer_text(parts)}"
        )
    return doc


def _remove(doc: Any, parts: list[str], verb: str = "remove") -> tuple[Any, Any]:
    if not parts:
        return None, doc
    node = _container(doc, parts, verb)
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return doc, node.pop(last)
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return doc, node.pop(int(last))
    raise PatchError(
        f"{verb} operation does not apply: doc is missing path: {_pointer_text(parts)}"
    )


MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)


def apply_patch(content_type: str, target: Obj, patch: Any) -> Any:
    """Apply `patch` of the given media type to a copy of `target`."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, Mapping):
        raise PatchError(
            "json: cannot unmarshal array into Go value of type map[string]interface {}", 400
        )
    if content_type == MERGE_PATCH:
        return merge_patch(copy.deepcopy(target), patch)
    if content_type == STRATEGIC_MERGE_PATCH:
        return strategic_merge_patch(copy.deepcopy(target), patch)
    raise PatchError(
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(PATCH_TYPES),
        415,
    )
