"""The errors circleback raises.

Every error derives from :class:`CirclebackError` and carries a machine-readable
``code`` so that front ends (the agent tools, the HTTP service, the CLI) can turn
it into a structured answer without parsing messages::

    CirclebackError                  code: "error"
    ├── ValidationError              code: "invalid"        (.field names the bad input)
    │   └── LimitExceeded            code: "limit_exceeded"
    ├── PermissionDenied             code: "forbidden"
    ├── JobNotFound                  code: "not_found"      (.job_id)
    ├── WorkflowNotFound             code: "not_found"      (.workflow_id)
    ├── PluginError                  code: "plugin_error"   (a plugin is missing or broken)
    ├── ConfigurationError           code: "configuration"  (bad settings or environment)
    └── StoreError                   code: "store"          (the database refused or is unusable)
"""

from __future__ import annotations

import uuid

__all__ = [
    "CirclebackError",
    "ConfigurationError",
    "JobNotFound",
    "LimitExceeded",
    "PermissionDenied",
    "PluginError",
    "StoreError",
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
