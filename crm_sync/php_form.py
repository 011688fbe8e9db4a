"""PHP-style form encoding (`a[b][0]=1`), as Bitrix24 speaks it.

Bitrix24 is PHP: the commands of a `batch` call are query strings in PHP's `http_build_query`
form (`telephony.externalcall.show?CALL_ID=x&USER_ID[0]=11&USER_ID[1]=24`), and its event
handlers receive `application/x-www-form-urlencoded` bodies in the same form
(`data[CALL_ID]=...&auth[application_token]=...`). `encode` writes that form from plain data,
`decode` reads it back into nested dicts (keys that are all 0..n-1 become lists).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    return str(value)


def _pairs(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for key, inner in value.items():
            out += _pairs(f"{prefix}[{key}]", inner)
        return out
    if isinstance(value, list | tuple):
        out = []
        for index, inner in enumerate(value):
            out += _pairs(f"{prefix}[{index}]", inner)
        return out
    return [(prefix, _scalar(value))]


def encode(params: Mapping[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        pairs += _pairs(str(key), value)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        fixed = {k: _listify(v) for k, v in node.items()}
        if fixed and all(k.isdigit() for k in fixed) and sorted(int(k) for k in fixed) == list(
                range(len(fixed))):
            return [fixed[str(i)] for i in range(len(fixed))]
        return fixed
    return node


def decode(query: str) -> dict[str, Any]:
    """A PHP-style query string as nested dicts and lists; values stay strings."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if match is None:
            root[raw_key] = value
            continue
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            if parts[i + 1] == "":  # `a[]=x`: append
                parts[i + 1] = str(len(nxt))
            node = nxt
        node[parts[-1]] = value
    result: dict[str, Any] = _listify(root)
    return result
