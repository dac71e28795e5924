"""The rulebook: every rule on what a caller may ask of the scheduler, declared once.

Each verb (``add_job``, ``list_jobs``, ``cancel_job``, ``cancel_workflow``)
has one JSON Schema, built here from the engine's plugins and limits: the
fields every job shares are declared below, each job type's ``check_config``
by its checker (:meth:`Checker.config_schema`). The same schema is what the
tool manifest publishes to the LLM and what :meth:`Rulebook.arguments` checks,
so what the LLM reads is what is enforced; the errors name the field.

A few rules no JSON Schema can state are applied after it, each with its own
error code (listed in the README): ``oversized`` (``check_config`` over its
byte limit), ``unstorable_text`` (a lone surrogate anywhere, or a NUL inside
free-form ``check_config`` values), ``conflict`` (``max_interval_seconds``
below ``interval_seconds``; a checker's cross-field rules), the checkers' own
refusals in :meth:`Checker.refine_config` (``address_refused`` for a URL the
network policy refuses), and ``limit_exceeded`` (the per-user quota, checked
when the job is written).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError

from .abc import ValidationContext
from .errors import ConflictingValues, Oversized, UnstorableText, ValidationError
from .models import JobSpec, JobStatus
from .registry import PluginRegistry
from .schema import JSON_SCHEMA_DIALECT, object_of, optional, python_pattern, text, uuid_string
from .schema_errors import describe_kind, field_name, to_validation_error
from .settings import Limits, Settings
from .storable import is_storable_json
from .validation import CALLER_FIELDS

__all__ = [
    "ADD_JOB",
    "CANCEL_JOB",
    "CANCEL_WORKFLOW",
    "CONTEXT_FIELDS",
    "LIST_JOBS",
    "MAX_BACKOFF",
    "VERBS",
    "Rulebook",
]

ADD_JOB: Final = "add_job"
LIST_JOBS: Final = "list_jobs"
CANCEL_JOB: Final = "cancel_job"
CANCEL_WORKFLOW: Final = "cancel_workflow"
#: The verbs, in the order the manifest lists them.
VERBS: Final = (ADD_JOB, LIST_JOBS, CANCEL_JOB, CANCEL_WORKFLOW)
#: What the orchestrator puts in the context; none of it is accepted as an argument.
CONTEXT_FIELDS: Final = frozenset(CALLER_FIELDS | {"permission"})
#: The largest factor by which a poll's interval may grow after each unmet check.
MAX_BACKOFF: Final = 10.0
_DEFAULT_ON_COMPLETE: Final = "notify"


def _is_finite_number(checker: object, value: object) -> bool:
    """JSON has no NaN or infinity, so a schema's "number" is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(python_pattern(pattern))


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[SchemaError]:
    """The ``pattern`` keyword with ECMA-262's ``$`` (the end of the text, nothing before it)."""
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield SchemaError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12, with "number" finite as JSON numbers are and patterns read as ECMA-262.
_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_finite_number),
)


def _shared_job_fields(plugins: PluginRegistry, limits: Limits) -> dict[str, Any]:
    """The add_job fields of every job type, ``check_config`` left open."""
    job_types = sorted(plugins.checkers)
    modes = sorted(plugins.notifiers)
    per_type = "; ".join(
        f"{name}: {plugins.checkers[name].description or 'see the schema'}" for name in job_types
    )
    per_mode = "; ".join(
        f"{name}: {plugins.notifiers[name].description or name}" for name in modes
    )
    return {
        "job_type": {"type": "string", "enum": job_types,
                     "description": f"What to watch. {per_type}"},
        "check_config": {
            "type": "object",
            "description": (
                "The condition's settings; their shape depends on job_type (see the "
                f"conditional schemas below). At most {limits.max_check_config_bytes} bytes "
                "as JSON."
            ),
        },
        "on_success_message": text(
            limits.max_message_chars,
            "Sent when the condition is met. {result} is replaced by the check's result "
            "(as text, shortened), {job_id} and {workflow_id} by the ids; no other "
            "placeholders exist. Must not contain NUL characters.",
        ),
        "on_failure_message": optional(text(
            limits.max_message_chars,
            "Sent when the job gives up (max_attempts checks without success). Same "
            "placeholders as on_success_message. Default: a message naming the job and its "
            "last error.",
        )),
        "on_complete": optional({
            "type": "string", "enum": modes, "default": _DEFAULT_ON_COMPLETE,
            "description": f"What to do with the message. {per_mode}",
        }),
        "workflow_id": optional(uuid_string(
            "Groups related jobs (a plain UUID you choose), so that list_jobs and "
            "cancel_workflow can act on them together."
        )),
        "interval_seconds": optional({
            "type": "number", "minimum": limits.min_interval_seconds,
            "maximum": limits.max_interval_seconds, "default": 30,
            "description": "Seconds between checks of a poll (the first check is immediate).",
        }),
        "max_attempts": optional({
            "type": "integer", "minimum": 1, "maximum": limits.max_attempts, "default": 120,
            "description": "Checks before the job gives up and fails (120 checks at 30 s is "
            "about an hour).",
        }),
        "backoff": optional({
            "type": "number", "minimum": 1, "maximum": MAX_BACKOFF, "default": 1,
            "description": "Multiply the interval by this after every unmet check (1: a fixed "
            "interval).",
        }),
        "max_interval_seconds": optional({
            "type": "number", "minimum": limits.min_interval_seconds,
            "maximum": limits.max_interval_seconds,
            "description": "Upper bound of the backed-off interval; at least interval_seconds.",
        }),
    }


def _verb_schemas(plugins: PluginRegistry, limits: Limits) -> dict[str, dict[str, Any]]:
    """The schema of every verb but add_job's conditional part."""
    return {
        ADD_JOB: object_of(_shared_job_fields(plugins, limits),
                           ["job_type", "check_config", "on_success_message"]),
        LIST_JOBS: object_of({
            "status_filter": optional({
                "type": "string", "enum": [status.value for status in JobStatus],
                "description": "Only jobs in this state; all of them when not given.",
            }),
            "workflow_id": optional(uuid_string("Only the jobs of this workflow.")),
            "limit": optional({
                "type": "integer", "minimum": 1, "maximum": limits.max_list_results,
                "default": limits.max_list_results,
                "description": "At most this many jobs, newest first.",
            }),
        }),
        CANCEL_JOB: object_of(
            {"job_id": uuid_string("The id of the job, as add_job or list_jobs answered it.")},
            ["job_id"],
        ),
        CANCEL_WORKFLOW: object_of(
            {"workflow_id": uuid_string("The workflow_id the jobs were added with.")},
            ["workflow_id"],
        ),
    }


class Rulebook:
    """The schemas and the checks of the scheduler's verbs for one engine's plugins and settings.

    Build it once per engine: it compiles a validator per verb and per job type.
    """

    def __init__(self, plugins: PluginRegistry, settings: Settings) -> None:
        self._plugins = plugins
        self._limits = settings.limits
        self._context = ValidationContext(settings=settings)
        self._schemas = _verb_schemas(plugins, self._limits)
        config_schemas = {
            name: checker.config_schema(self._context)
            for name, checker in sorted(plugins.checkers.items())
        }
        add_job = self._schemas[ADD_JOB]
        add_job["allOf"] = [
            {"if": {"properties": {"job_type": {"const": name}}, "required": ["job_type"]},
             "then": {"properties": {"check_config": schema}}}
            for name, schema in config_schemas.items()
        ]
        for schema in self._schemas.values():
            schema["$schema"] = JSON_SCHEMA_DIALECT
            Draft202012Validator.check_schema(schema)
        self._validators = {verb: _Validator(schema)
                            for verb, schema in self._schemas.items()}
        # add_job's arguments are checked against the branch of their job type only.
        shared = {key: value for key, value in add_job.items() if key != "allOf"}
        self._job_validators = {
            name: _Validator(
                {**shared, "properties": {**shared["properties"], "check_config": schema}}
            )
            for name, schema in config_schemas.items()
        }

    def schema(self, verb: str) -> dict[str, Any]:
        """The JSON Schema of ``verb``'s arguments (a fresh copy)."""
        return copy.deepcopy(self._schemas[verb])

    def arguments(self, verb: str, raw: Any) -> dict[str, Any]:
        """``raw`` checked against ``verb``'s schema, optional nulls left out.

        Raises :class:`ValidationError` for the first bad field.
        """
        arguments = self._plain(verb, raw)
        validator = self._validators[verb]
        if verb == ADD_JOB:
            job_type = arguments.get("job_type")
            validator = self._job_validators.get(job_type, validator) if isinstance(
                job_type, str) else validator
        error = next(iter(validator.iter_errors(arguments)), None)
        if error is not None:
            raise to_validation_error(error, unknown_key=self._unknown_key(error, arguments))
        if "check_config" in arguments:
            self._check_config_size(arguments["check_config"])
        for key, value in arguments.items():
            if isinstance(value, str) and not is_storable_json(value):
                raise UnstorableText(key, "must be valid Unicode text, not a lone surrogate")
        return arguments

    def job_spec(self, raw: Any) -> JobSpec:
        """add_job's arguments as a :class:`JobSpec`: checked, normalised, defaults filled in."""
        arguments = self.arguments(ADD_JOB, raw)
        job_type: str = arguments["job_type"]
        checker = self._plugins.checker(job_type)
        try:
            check_config = checker.refine_config(dict(arguments["check_config"]), self._context)
        except ValidationError as exc:
            field = f"check_config.{exc.field}" if exc.field else "check_config"
            raise type(exc)(field, exc.reason) from None
        self._check_storable(check_config)
        interval = float(arguments.get("interval_seconds", 30))
        max_interval = arguments.get("max_interval_seconds")
        if max_interval is not None and max_interval < interval:
            raise ConflictingValues(
                "max_interval_seconds", f"must be at least interval_seconds ({interval:g})"
            )
        workflow_id = arguments.get("workflow_id")
        return JobSpec(
            job_type=job_type,
            check_config=check_config,
            on_success_message=arguments["on_success_message"],
            on_failure_message=arguments.get("on_failure_message"),
            on_complete=arguments.get("on_complete", _DEFAULT_ON_COMPLETE),
            workflow_id=uuid.UUID(workflow_id) if workflow_id is not None else None,
            interval_seconds=interval,
            max_attempts=int(arguments.get("max_attempts", 120)),
            backoff=float(arguments.get("backoff", 1.0)),
            max_interval_seconds=float(max_interval) if max_interval is not None else None,
        )

    # -- the steps ---------------------------------------------------------------------------

    def _plain(self, verb: str, raw: Any) -> dict[str, Any]:
        """Refuse what is not an object of named arguments and the context's keys; drop nulls."""
        if not isinstance(raw, Mapping):
            raise ValidationError("arguments", f"must be an object, not {describe_kind(raw)}")
        properties: Mapping[str, Any] = self._schemas[verb]["properties"]
        required = self._schemas[verb]["required"]
        arguments: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                raise ValidationError("arguments", "keys must be strings")
            if key in CONTEXT_FIELDS:
                raise ValidationError(
                    key, "is set from the caller's context and cannot be given as an argument"
                )
            if not key:
                raise ValidationError("arguments", "an argument name must not be empty")
            if key not in properties:
                raise ValidationError(
                    field_name(key), f"is not an argument of {verb}; it takes "
                    f"{', '.join(properties)}"
                )
            if value is None and key not in required:
                continue
            arguments[key] = value
        return arguments

    def _check_config_size(self, config: Any) -> None:
        if not isinstance(config, Mapping):
            return  # the schema names the type
        try:
            size = len(json.dumps(config, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            raise ValidationError("check_config", "must be plain JSON data") from None
        if size > self._limits.max_check_config_bytes:
            raise Oversized(
                "check_config", f"must be at most {self._limits.max_check_config_bytes} bytes "
                f"as JSON, not {size}"
            )

    @staticmethod
    def _check_storable(check_config: Any) -> None:
        try:
            json.dumps(check_config, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            # NaN and infinity have no JSON form: PostgreSQL's JSONB refuses them.
            raise ValidationError("check_config", "must be plain JSON data") from None
        if not is_storable_json(check_config):
            raise UnstorableText(
                "check_config", "must not contain NUL characters or surrogates in its text"
            )

    def _unknown_key(self, error: Any, arguments: Mapping[str, Any]) -> str:
        """The reason for a key the schema does not know: inside check_config, per job type."""
        path = list(error.absolute_path)
        if path[:1] == ["check_config"] and len(path) == 1:
            return f"is not a known setting of a {arguments.get('job_type')} job"
        return "is not a known key"
