"""Every error circleback raises, in one tree.

Every error derives from :class:`CirclebackError` and carries a machine-readable
``code`` so that front ends (the agent tools, the HTTP service, the CLI) can turn
it into a structured answer without parsing messages::

    CirclebackError                  code: "error"
    ├── ValidationError              code: "invalid"          (.field names the bad input)
    │   ├── LimitExceeded            code: "limit_exceeded"   (a per-user quota)
    │   ├── Oversized                code: "oversized"        (check_config over its byte limit)
    │   ├── UnstorableText           code: "unstorable_text"  (NUL or a lone surrogate)
    │   ├── ConflictingValues        code: "conflict"         (fields that contradict each other)
    │   └── UrlRefused               code: "address_refused"  (a URL the network policy refuses)
    ├── PermissionDenied             code: "forbidden"
    ├── JobNotFound                  code: "not_found"        (.job_id)
    ├── WorkflowNotFound             code: "not_found"        (.workflow_id)
    ├── UnknownTool                  code: "unknown_tool"     (a tool this module lacks)
    ├── PluginError                  code: "plugin_error"     (a plugin is missing or broken)
    ├── ConfigurationError           code: "configuration"    (bad settings or environment)
    ├── StoreError                   code: "store"            (the database refused or is unusable)
    ├── DeliveryFailed               code: "delivery_failed"  (a notifier; .retryable)
    ├── ModuleCallFailed             code: "error", or the caller's: "not_configured",
    │                                      "unreachable", "tool_error", ... (a module caller)
    ├── AddressRefused               code: "address_refused"  (the network policy said no)
    ├── FieldMissing                 code: "field_missing"    (a dotted path led nowhere)
    ├── UnsendableRequest            code: "unsendable"       (an HTTP request that cannot go out)
    ├── BrokenAnswer                 code: "broken_answer"    (an answer that breaks HTTP/1.1)
    └── HttpFailure                  code: "http_failure"     (a request got no usable answer)
        └── TimedOut                 code: "timed_out"        (.what names the step)
            ├── ConnectTimedOut      code: "timed_out"        (connecting)
            ├── PoolTimedOut         code: "timed_out"        (waiting for a free connection)
            └── ReadTimedOut         code: "timed_out"        (waiting for an answer)

``error.to_dict()`` gives the ``{code, message, field}`` object of the wire
format. The plugin-facing ones (:class:`DeliveryFailed`,
:class:`ModuleCallFailed`) are raised by plugins and turned into a retry, a
dead letter or a "not yet" by the engine; the network ones never leave a
check, which records them as the job's last error. A few private exceptions
steer control flow inside one module and never leave it.

:class:`CirclebackError`, :class:`ValidationError`, :class:`DeliveryFailed` and
:class:`ModuleCallFailed` are also importable from :mod:`circleback` itself.
"""

from __future__ import annotations

from .core import errors as _defined
from .core.errors import *  # noqa: F403  (every name of the tree, listed once in core/errors.py)

__all__ = list(_defined.__all__)
