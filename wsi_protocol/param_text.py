"""Job parameters travel as strings (``map<string, string>``); people write
numbers (JSON, YAML). One rule turns what they wrote into the API's string."""

from __future__ import annotations


def param_text(value: object) -> str:
    """A number as written (a float keeps its precision; JSON's 1e400 arrives
    as inf and is refused by the schema as not finite), a YAML bool as
    ``true``/``false``, a string as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
