"""The definitions of every error circleback raises.

The tree, with each error's ``code``, is drawn in :mod:`circleback.errors`,
the public home that re-exports all of them; import them from there. This
module only defines them, so that every layer can raise them without importing
anything above ``core``.
"""

from __future__ import annotations

import uuid

__all__ = [
    "AddressRefused",
    "BrokenAnswer",
    "CirclebackError",
    "ConfigurationError",
    "ConflictingValues",
    "ConnectTimedOut",
    "DeliveryFailed",
    "FieldMissing",
    "HttpFailure",
    "JobNotFound",
    "LimitExceeded",
    "ModuleCallFailed",
    "Oversized",
    "PermissionDenied",
    "PluginError",
    "PoolTimedOut",
    "ReadTimedOut",
    "StoreError",
    "TimedOut",
    "UnknownTool",
    "UnsendableRequest",
    "UnstorableText",
    "UrlRefused",
    "ValidationError",
    "WorkflowNotFound",
]


class CirclebackError(Exception):
    """Root of every error circleback raises on purpose."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str | None]:
        """The error as the ``{code, message, field}`` object of the wire format."""
        return {"code": self.code, "message": self.message, "field": None}


class ValidationError(CirclebackError):
    """Input was refused; ``field`` is the dotted path of the offending value."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class LimitExceeded(ValidationError):
    """A quota protecting the engine was reached (for example active jobs per user)."""

    code = "limit_exceeded"


# The refusals below are the rules a JSON Schema cannot state; the README lists them.


class Oversized(ValidationError):
    """A value is bigger, as JSON, than its limit allows."""

    code = "oversized"


class UnstorableText(ValidationError):
    """Text holds a NUL character or a lone surrogate, which no database stores."""

    code = "unstorable_text"


class ConflictingValues(ValidationError):
    """Two fields contradict each other (a maximum below its minimum, a value both ways)."""

    code = "conflict"


class UrlRefused(ValidationError):
    """A URL whose literal address the network policy refuses."""

    code = "address_refused"


class PermissionDenied(CirclebackError):
    """The caller lacks the permission a tool requires."""

    code = "forbidden"


class JobNotFound(CirclebackError):
    """No job with this id exists for the caller (other users' jobs never exist)."""

    code = "not_found"

    def __init__(self, job_id: uuid.UUID | str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": "job_id"}


class WorkflowNotFound(CirclebackError):
    """No active job of the caller belongs to this workflow."""

    code = "not_found"

    def __init__(self, workflow_id: uuid.UUID | str) -> None:
        super().__init__(f"workflow {workflow_id} not found")
        self.workflow_id = workflow_id

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": "workflow_id"}


class PluginError(CirclebackError):
    """A plugin is missing, registered twice, or broke its contract."""

    code = "plugin_error"


class ConfigurationError(CirclebackError):
    """The settings or the environment are unusable."""

    code = "configuration"


class StoreError(CirclebackError):
    """The store cannot be used (for example a schema it does not understand)."""

    code = "store"


class UnknownTool(CirclebackError):
    """The call named a tool this module does not have."""

    code = "unknown_tool"

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": "tool"}


class DeliveryFailed(CirclebackError):
    """Raised by a notifier when a message did not go out; it will be retried later."""

    code = "delivery_failed"

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class ModuleCallFailed(CirclebackError):
    """Raised by a module caller when a tool call gave no result.

    ``poll_module`` counts it as "not yet" and keeps ``reason`` as the job's last error.
    """

    def __init__(self, reason: str, *, code: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        #: Machine-readable kind: ``not_configured``, ``unreachable``, ``tool_error``, ...
        self.code = code


class AddressRefused(CirclebackError):
    """A URL or an address it resolved to is not allowed; ``reason`` says why, for people."""

    code = "address_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FieldMissing(CirclebackError, LookupError):
    """A dotted path leads nowhere in the data; the message says where it stopped."""

    code = "field_missing"


class UnsendableRequest(CirclebackError, ValueError):
    """A request part that cannot go on the wire as given; ``str()`` names it."""

    code = "unsendable"


class BrokenAnswer(CirclebackError, ValueError):
    """An answer that breaks HTTP/1.1; ``str()`` says how."""

    code = "broken_answer"


class HttpFailure(CirclebackError):
    """A request that got no usable answer; ``str()`` says why, for the job's last error."""

    code = "http_failure"


class TimedOut(HttpFailure):
    """A step of the request took longer than its timeout; :attr:`what` names the step."""

    code = "timed_out"
    what = "timed out"


class ConnectTimedOut(TimedOut):
    """No connection within the connect timeout."""

    what = "timed out connecting"


class PoolTimedOut(TimedOut):
    """No free connection within the pool timeout."""

    what = "timed out waiting for a free connection"


class ReadTimedOut(TimedOut):
    """No answer within the read timeout."""

    what = "timed out waiting for an answer"
