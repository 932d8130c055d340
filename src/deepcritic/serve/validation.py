"""Edge checks shared by every route: text is Unicode scalar values, integers fit, headers are ASCII.

JSON may escape a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a ``str`` that no
tokenizer, encoder or engine accepts (``UnicodeEncodeError`` deep inside a batch). Every decoded
body is walked once here and a string (or key) holding a surrogate is refused with a 400 naming
where it is (``messages[0].content``, ``instances[1].steps[0]``): surrogates are rejected, never
replaced, so what the model sees is what the client sent.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


class RequestError(ValueError):
    """A bad request: answered ``status`` (4xx) with ``{"error": "field '<name>': <reason>"}``."""

    def __init__(self, field_name: str, reason: str, status: int = 400):
        super().__init__(f"field '{field_name}': {reason}")
        self.field = field_name
        self.status = status


SEED_MAX = 2**63 - 1  # what every engine takes (torch.manual_seed, vLLM, numpy's SeedSequence)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else key


def _bad_text(text: str, field_name: str) -> RequestError:
    m = _SURROGATE.search(text)
    assert m is not None
    code = ord(m.group())
    return RequestError(
        field_name or "body",
        f"holds a lone UTF-16 surrogate U+{code:04X} at character {m.start()} "
        "(text must be valid Unicode: send each character, or a surrogate pair, not half of one)",
    )


def check_unicode(value: Any, path: str = "") -> None:
    """Raise :class:`RequestError` naming the first string (or object key) under ``value`` that
    holds a lone surrogate. Iterative, so deep nesting costs no recursion."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _bad_text(item, where)
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise _bad_text(key, _child(where, "<key>"))
                stack.append((sub, _child(where, key)))
        elif isinstance(item, list):
            stack.extend((sub, _child(where, i)) for i, sub in enumerate(item))


def ascii_int(raw: str, field_name: str, lo: int, hi: int) -> int:
    """A header value made of ASCII digits only (``str.isdigit`` also takes ``²`` and ``٣``),
    within ``lo..hi``."""
    text = raw.strip()
    if not text or len(text) > 20 or not text.isascii() or not text.isdigit():
        raise RequestError(field_name, f"must be ASCII digits in {lo}..{hi}, got {raw!r:.40}")
    value = int(text)
    if not lo <= value <= hi:
        raise RequestError(field_name, f"must be an integer in {lo}..{hi}, got {value}")
    return value
