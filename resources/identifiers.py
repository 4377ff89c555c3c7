"""The one rule for identifiers a source sends (DMA ids, meter ids, plant codes).

Such a value later goes into a URL path segment or a lake file name, so it must not be able to change
where a request goes or where a file lands. Conform rejects rows that break the rule
(``Column(identifier=True)``); the HTTP clients refuse to put such a value into a request. No Dagster and
no polars here: the clients import it too.
"""

import re

# The characters refused, as a pattern Python's re and polars' (Rust) regex both read the same way.
UNSAFE_IDENTIFIER_PATTERN = r"[/\\?#%\s\x00-\x1f\x7f]"
IDENTIFIER_MAX = 200
_UNSAFE_IDENTIFIER = re.compile(UNSAFE_IDENTIFIER_PATTERN)
_IDENTIFIER_MAX = IDENTIFIER_MAX


def is_safe_identifier(value: object) -> bool:
    """True when ``value`` can go into a URL path segment or a file name as it is.

    Refused: anything but non-empty text, ``.`` and ``..`` (a path collapses them), ``/`` and ``\\``
    (separators), ``?``, ``#`` and ``%`` (URL syntax and escapes), whitespace and control characters,
    and more than 200 characters.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= _IDENTIFIER_MAX
        and value not in {".", ".."}
        and _UNSAFE_IDENTIFIER.search(value) is None
    )


def identifier_problem(value: object) -> str | None:
    """What is wrong with ``value`` as an identifier, as a predicate ("is '..', a relative path segment"),
    or ``None`` when it is safe. Conform and the HTTP clients both word their errors with it."""
    if is_safe_identifier(value):
        return None
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, expected a string"
    if not value:
        return "is empty"
    if value in {".", ".."}:
        return f"is {value!r}, a relative path segment"
    if len(value) > _IDENTIFIER_MAX:
        return f"is {len(value)} characters long, at most {_IDENTIFIER_MAX} expected"
    bad = _UNSAFE_IDENTIFIER.search(value)
    char = bad.group(0) if bad else "?"
    if char in "/\\":
        return "contains a path separator"
    if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
        return "contains whitespace or a control character"
    return f"contains {char!r}; expected no '?', '#' or '%' (URL syntax)"
