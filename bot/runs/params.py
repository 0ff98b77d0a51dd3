"""Turning `key=value` words from chat into a runbook's frozen `Params`, or a clear refusal.

Only typed values get through: node names (DNS-1123), tuples of node names, enums, bounded ints and
booleans. There is deliberately no free-form string type, so nothing a user typed can reach a shell
except as a validated token.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from collections.abc import Mapping
from typing import Any

from flannel_bot.errors import ParameterError, shown
from flannel_bot.runs.runbook import DNS1123_SUBDOMAIN, INTERFACE_NAME, InterfaceName, NodeName

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_WHOLE_NUMBER = re.compile(r"\A-?[0-9]{1,18}\Z")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe_params(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and help of each parameter, for `runbooks` and `help` output."""
    hints = _field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default: Any = None
        if f.default is not dataclasses.MISSING:
            default = f.default.value if isinstance(f.default, enum.Enum) else f.default
            if isinstance(default, bool):
                default = "true" if default else "false"
            elif default in ("", ()):
                default = None  # optional, nothing by default
        out.append(
            {
                "name": f.name,
                "type": _type_name(kind),
                "required": required,
                "default": default,
                "help": f.metadata.get("help", ""),
            }
        )
    return out


def _type_name(kind: Any) -> str:
    if kind is NodeName:
        return "node"
    if typing.get_origin(kind) is tuple:
        return "node[,node...]"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "|".join(str(m.value) for m in kind)
    if kind is InterfaceName:
        return "interface"
    if kind is bool:
        return "true|false"
    if kind is int:
        return "integer"
    raise TypeError(f"unsupported parameter type {kind!r}")


def check_params_class(cls: type) -> None:
    """Raise TypeError at load time if a runbook declares a parameter type we cannot validate."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} must be a dataclass")
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__qualname__} must be a frozen dataclass")
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if typing.get_origin(kind) is tuple and typing.get_args(kind) != (NodeName, ...):
            raise TypeError(f"{cls.__qualname__}.{f.name}: only tuple[NodeName, ...] is supported")
        _type_name(kind)


def validate_node_name(value: str, key: str) -> NodeName:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ParameterError(
            f"`{key}={shown(value)}` is not a valid node name: node names are lowercase "
            "letters, digits, '-' and '.' (DNS-1123), at most 253 characters"
        )
    return NodeName(value)


def _convert(key: str, raw: str, kind: Any) -> Any:
    if kind is NodeName:
        return validate_node_name(raw, key)
    if typing.get_origin(kind) is tuple:
        names = [v for v in raw.split(",")]
        if not raw or any(not v for v in names):
            raise ParameterError(f"`{key}` needs one or more node names separated by commas")
        nodes = tuple(validate_node_name(v, key) for v in names)
        if len(set(nodes)) != len(nodes):
            raise ParameterError(f"`{key}={shown(raw)}` names a node twice")
        return nodes
    if kind is InterfaceName:
        if not INTERFACE_NAME.fullmatch(raw):
            raise ParameterError(
                f"`{key}={shown(raw)}` is not a network interface name: 1 to 15 letters, digits, "
                "'_', '.' or '-'"
            )
        return InterfaceName(raw)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        for member in kind:
            if raw == str(member.value):
                return member
        choices = ", ".join(str(m.value) for m in kind)
        raise ParameterError(f"`{key}={shown(raw)}` is not one of: {choices}")
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ParameterError(f"`{key}={shown(raw)}` must be true or false")
    if kind is int:
        # int() alone would also take " 1\n", "1_000" and other scripts' digits
        if not _WHOLE_NUMBER.fullmatch(raw):
            raise ParameterError(f"`{key}={shown(raw)}` must be a whole number")
        return int(raw, 10)
    raise TypeError(f"unsupported parameter type {kind!r}")


def parse_params(cls: type, raw: Mapping[str, str], ref: str) -> Any:
    """Build `cls` from raw strings; every problem is a ParameterError naming the fix."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_types(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        takes = ", ".join(fields) or "no parameters"
        raise ParameterError(f"{ref} has no parameter `{shown(unknown[0])}`; it takes: {takes}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(name, raw[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParameterError(
                f"{ref} needs `{name}=<{_type_name(hints[name])}>`"
                + (f" ({f.metadata['help']})" if f.metadata.get("help") else "")
            )
    try:
        return cls(**values)
    except ValueError as exc:
        raise ParameterError(f"{ref}: {exc}") from None


def params_to_json(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def node_names_in(params: Any) -> list[str]:
    """Every node a parameter names, for the plan-time existence check."""
    hints = _field_types(type(params))
    names: list[str] = []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if hints[f.name] is NodeName:
            names.append(value)
        elif typing.get_origin(hints[f.name]) is tuple:
            names.extend(value)
    return names
