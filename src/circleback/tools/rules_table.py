"""The add_job rules as a Markdown table, made from the schema the manifest publishes.

The README carries this table (a test checks it is the current one), so what
people read is what the LLM reads and what :mod:`circleback.core.rulebook`
enforces. ``python -m circleback.tools.rules_table`` prints it for the default settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core import rulebook as verbs
from ..core.registry import PluginRegistry
from ..core.rulebook import Rulebook
from ..core.schema import ERROR_MESSAGE
from ..core.settings import Settings

__all__ = ["rules_table"]

_KINDS = {"array": "list", "object": "object", "string": "string", "number": "number",
          "integer": "integer", "boolean": "boolean", "null": "null"}


def _kind(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, str):
        return _KINDS.get(kind, kind)
    if isinstance(kind, list):
        return " or ".join(_KINDS.get(str(k), str(k)) for k in kind if k != "null")
    forms = schema.get("oneOf")
    if isinstance(forms, list):
        return " or ".join(_kind(form) for form in forms)
    return "any JSON"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _rules(schema: Mapping[str, Any], required: bool) -> str:
    parts = ["required" if required else "optional"]
    enum = [value for value in schema.get("enum", ()) if value is not None]
    if "enum" in schema:
        parts.append("one of " + (", ".join(f"`{v}`" for v in enum) or "the configured names"))
    for keyword, words in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤")):
        if keyword in schema:
            parts.append(f"{words} {_number(schema[keyword])}")
    if "maxLength" in schema:
        parts.append(f"at most {schema['maxLength']} characters")
    if "maxProperties" in schema:
        parts.append(f"at most {schema['maxProperties']} entries")
    for form in schema.get("oneOf", ()):
        if "minimum" in form and "maximum" in form:
            parts.append(f"each {_number(form['minimum'])} to {_number(form['maximum'])}")
        if "maxItems" in form:
            parts.append(f"a list of 1 to {form['maxItems']}")
    messages = schema.get(ERROR_MESSAGE)
    if isinstance(messages, Mapping):
        parts.extend(str(text) for keyword, text in messages.items() if keyword == "pattern")
    for sub in schema.get("allOf", ()):
        if isinstance(sub.get(ERROR_MESSAGE), str):
            parts.append(sub[ERROR_MESSAGE])
    if "default" in schema:
        parts.append(f"default `{schema['default']}`")
    return "; ".join(parts)


def _rows(prefix: str, schema: Mapping[str, Any]) -> list[str]:
    required = set(schema.get("required", ()))
    rows = []
    for name, field in schema.get("properties", {}).items():
        if prefix == "" and name == "check_config":
            field = {**field, "description": "The condition's settings: see below."}
        description = " ".join(str(field.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {_kind(field)} | {_rules(field, name in required)} "
                    f"| {description} |")
    return rows


def rules_table(settings: Settings, plugins: PluginRegistry | None = None) -> str:
    """The Markdown table of add_job's fields, then one table per job type's ``check_config``."""
    if plugins is None:
        from ..engine.plugins import make_plugin_manager

        plugins = PluginRegistry.from_manager(make_plugin_manager(load_entry_points=False))
    schema = Rulebook(plugins, settings).schema(verbs.ADD_JOB)
    header = ["| field | type | rules | meaning |", "|---|---|---|---|"]
    lines = [*header, *_rows("", schema)]
    for branch in schema.get("allOf", ()):
        job_type = branch["if"]["properties"]["job_type"]["const"]
        config = branch["then"]["properties"]["check_config"]
        lines += ["", f"`check_config` of a `{job_type}` job:", "", *header,
                  *_rows("", config)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(rules_table(Settings()), end="")
