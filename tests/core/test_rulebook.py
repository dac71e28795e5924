"""What the manifest publishes is what execute() accepts.

Hypothesis (through hypothesis-jsonschema) writes add_job arguments for every
job type from the JSON Schema the manifest publishes, as an LLM reading only
that schema would, and sends each through ``SchedulerTools.execute``. Every
call must be accepted, except the documented refusals (the README's table of
rules a schema cannot state), each recognised by its error code and checked
to be the rule it names.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError

from circleback import Caller, Limits, Settings
from circleback.core.dotted import matches
from circleback.core.schema import python_pattern
from circleback.core.storable import is_storable_json

from ..tools_support import context_of, tool_harness

#: The rules no JSON Schema can state, by error code (the README lists them).
DOCUMENTED_REFUSALS = frozenset(
    {"oversized", "unstorable_text", "conflict", "address_refused", "limit_exceeded"}
)
_LIMITS = Limits(min_interval_seconds=0.01, max_active_jobs_per_user=1_000_000)
#: Examples per job type (poll_url's conditional rules make its arguments slow to write),
#: and how many of them must be accepted: a URL written at random mostly names an
#: address the network policy refuses.
_EXAMPLES = {"delay": 60, "poll_url": 15, "poll_module": 60}
_ACCEPTED = {"delay": 30, "poll_url": 1, "poll_module": 30}


def _justified(code: str, arguments: dict[str, Any], limits: Limits) -> bool:
    """Whether refusing ``arguments`` with ``code`` applies the rule the code names."""
    config = arguments["check_config"]
    if code == "oversized":
        return len(json.dumps(config, separators=(",", ":"))) > limits.max_check_config_bytes
    if code == "unstorable_text":
        return not is_storable_json(arguments)
    if code == "address_refused":
        return arguments["job_type"] == "poll_url"
    if code == "conflict":
        interval = arguments.get("interval_seconds") or 30
        longest = arguments.get("max_interval_seconds")
        if longest is not None and longest < interval:
            return True
        if arguments["job_type"] != "poll_module" or "failure_values" not in config:
            return False
        same_field = config.get("failure_field", config["success_field"]) == config[
            "success_field"]
        successes = config["success_values"]
        successes = successes if isinstance(successes, list) else [successes]
        failures = config["failure_values"]
        failures = failures if isinstance(failures, list) else [failures]
        return same_field and any(matches(value, successes) for value in failures)
    return False


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaError]:
    if validator.is_type(instance, "string") and not re.search(python_pattern(pattern), instance):
        yield SchemaError(f"{instance!r} does not match {pattern!r}")


#: The published schema as ECMA-262 reads its patterns. hypothesis-jsonschema
#: checks some patterns with Python's re (whose ``$`` also matches before a final
#: newline), so a few of its strings are outside the schema; they are left out.
_Published = validators.extend(Draft202012Validator, validators={"pattern": _ecma_pattern})


def _branch(published: dict[str, Any], job_type: str) -> dict[str, Any]:
    """The published add_job schema with its ``job_type`` condition resolved to ``job_type``.

    The same rules: the top level as published, ``check_config`` as the branch
    the schema's ``if job_type == ...`` picks.
    """
    [then] = [branch["then"] for branch in published["allOf"]
              if branch["if"]["properties"]["job_type"]["const"] == job_type]
    schema = {key: value for key, value in published.items() if key != "allOf"}
    schema["properties"] = {**published["properties"], "job_type": {"const": job_type},
                            "check_config": then["properties"]["check_config"]}
    return schema


@pytest.mark.parametrize("job_type", ["delay", "poll_url", "poll_module"])
def test_arguments_written_from_the_published_schema_are_accepted(
    make_settings: Callable[..., Settings], caller: Caller, job_type: str
) -> None:
    config = make_settings(limits=_LIMITS, modules={"deployer": "http://127.0.0.1:9",
                                                    "ci": "http://127.0.0.1:9"})
    seen: Counter[str] = Counter()
    with tool_harness("asyncio", config) as harness:
        [add_job] = [tool for tool in harness.tools.manifest["tools"]
                     if tool["name"] == "scheduler.add_job"]
        schema = _branch(add_job["parameters"], job_type)
        context = context_of(caller)

        @settings(max_examples=_EXAMPLES[job_type], deadline=None, database=None,
                  derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(arguments=from_schema(schema).filter(_Published(schema).is_valid))
        def send(arguments: dict[str, Any]) -> None:
            answer = harness.execute("scheduler.add_job", arguments, context)
            if answer["ok"]:
                seen["accepted"] += 1
                job = answer["result"]["job"]
                assert job["job_type"] == job_type
                harness.execute("scheduler.cancel_job", {"job_id": job["id"]}, context)
                return
            error = answer["error"]
            seen[error["code"]] += 1
            assert error["code"] in DOCUMENTED_REFUSALS, (arguments, error)
            assert _justified(error["code"], arguments, config.limits), (arguments, error)

        send()
    assert seen["accepted"] >= _ACCEPTED[job_type], seen  # not vacuous


def test_the_readme_carries_the_rules_table() -> None:
    """The README's table of add_job fields is the one the rulebook makes."""
    from circleback.tools.rules_table import rules_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert rules_table(Settings()) in readme


@pytest.mark.parametrize(("pattern", "text", "matches_ecma"), [
    ("^[a-z]+$", "abc", True),
    ("^[a-z]+$", "abc\n", False),          # Python's $ would match before the newline
    ("^a$|^b$", "b\n", False),
    ("^[$]+$", "$$", True),                # a $ inside a class is a character
    ("^a\\$$", "a$", True),                # an escaped $ is a character
    ("^a\\$$", "a$\n", False),
])
def test_patterns_are_read_as_ecma_262_reads_them(
    pattern: str, text: str, matches_ecma: bool
) -> None:
    assert bool(re.search(python_pattern(pattern), text)) is matches_ecma
