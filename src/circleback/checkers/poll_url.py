"""``poll_url``: request a URL every interval until it answers as expected.

``check_config``::

    {"url": "https://deploy.example.com/health",   # required, http or https
     "method": "GET",                               # GET HEAD POST PUT PATCH DELETE
     "expected_status": 200,                        # a code or a list of codes
     "headers": {"Authorization": "Bearer ..."},    # optional
     "json": {...},                                 # optional body (POST, PUT, PATCH, DELETE)
     "response_field": "status",                    # optional dotted path into a JSON body
     "response_values": ["ok"]}                     # ... and the values that count as done

The condition holds when the status is expected and, with ``response_field``,
that field of the JSON body is one of ``response_values``. Anything else —
another status, a timeout, a refused connection — is "not yet" (the service may
still be deploying), kept as the job's last error.

The URL was written by an LLM, so every request goes through the
:class:`~circleback.net.netguard.NetworkPolicy` (see that module): the
connection is made by :class:`~circleback.net.guarded_client.GuardedClient`,
which resolves the host once, checks every address and dials only a checked
one; redirects are followed by hand, at
most five, each hop checked the same way; bodies are read up to
``Settings.http.max_response_bytes`` and cut there. A URL whose literal address
is refused is refused when the job is added; a host name that resolves to a
refused address fails the job at its check.

The check's result, handed to ``{result}``: ``{"url", "status", "elapsed_ms",
"body"}`` — the JSON body, or a text excerpt — plus ``"truncated": true`` when
the body was cut and ``"redirects"`` when some were followed.

httpx (for its URL type) and the HTTP client module are imported when a URL is
first validated or checked, and the client is made at the first check: an
engine whose jobs never poll a URL does not load them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from ..core.abc import Checker, Runtime, ValidationContext
from ..core.dotted import (
    FieldMissing,
    describe_value,
    lookup,
    matches,
    validate_path,
    validate_values,
)
from ..core.errors import ValidationError
from ..core.hookspecs import hookimpl
from ..core.models import CheckOutcome, Job
from ..core.validation import require_number, require_string
from ..net.netguard import AddressRefused, NetworkPolicy, parse_http_url

if TYPE_CHECKING:
    from ..core.settings import HttpTuning
    from ..net.guarded_client import GuardedClient, Response

__all__ = ["MAX_REDIRECTS", "METHODS", "PollUrlChecker"]

#: The methods a poll may use.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Redirects followed at most per check, each checked like the first URL.
MAX_REDIRECTS: Final = 5
_CONFIG_KEYS = frozenset(
    {"url", "method", "expected_status", "headers", "json", "response_field", "response_values"}
)
_MAX_STATUSES = 20
_MAX_HEADERS = 20
_MAX_HEADER_VALUE_CHARS = 2048
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
#: Headers the checker sets itself or that would change where or how the request goes.
_RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "expect", "accept-encoding", "proxy-authorization", "proxy-connection",
        "cookie",
    }
)
#: A JSON body up to this size (as compact text) is kept whole in the result.
_MAX_JSON_RESULT_CHARS = 8_000
#: Otherwise the result keeps this much of the body as text.
_EXCERPT_CHARS = 1_000
_NOT_JSON: Final = object()


# -- reading answers ---------------------------------------------------------------------------


def _text(content: bytes, response: Response) -> str:
    try:
        return content.decode(response.charset or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def _parse_json(text: str) -> Any:
    if not text.strip():
        return _NOT_JSON
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"


@attrs.frozen(kw_only=True)
class _Answer:
    url: str
    status: int
    redirects: int
    content: bytes
    truncated: bool
    encoding: str
    text: str
    parsed: Any


class _TooManyRedirects(Exception):
    pass


# -- the checker -------------------------------------------------------------------------------


class PollUrlChecker(Checker):
    """Requests a URL each interval; done when the status (and optional body field) match."""

    job_type = "poll_url"
    description = (
        "Request an http(s) URL every interval until it answers with an expected status "
        "(and, optionally, a JSON body field with one of the given values)."
    )

    def __init__(self) -> None:
        self._client: GuardedClient | None = None
        self._policy: NetworkPolicy | None = None
        self._tuning: HttpTuning | None = None

    # -- validation --------------------------------------------------------------------------

    def validate_config(
        self, config: Mapping[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        unknown = sorted(str(key) for key in config if key not in _CONFIG_KEYS)
        if unknown:
            raise ValidationError(unknown[0], "is not a known setting of a poll_url job")
        if "url" not in config:
            raise ValidationError("url", "is required")
        raw_url = require_string(config["url"], "url", max_chars=2048)
        try:
            url = parse_http_url(raw_url)
        except AddressRefused as exc:
            raise ValidationError("url", exc.reason) from None
        try:
            NetworkPolicy.from_allow_list(context.settings.allow_networks).check_url(url)
        except AddressRefused as exc:
            raise ValidationError("url", f"may not be requested: {exc.reason}") from None
        normal: dict[str, Any] = {"url": str(url)}

        method = config.get("method", "GET")
        if not isinstance(method, str) or not method.isascii() or method.upper() not in METHODS:
            raise ValidationError("method", f"must be one of {', '.join(METHODS)}")
        normal["method"] = method.upper()
        normal["expected_status"] = _validate_statuses(config.get("expected_status", 200))
        if "headers" in config:
            normal["headers"] = _validate_headers(config["headers"])
        if "json" in config:
            if normal["method"] in ("GET", "HEAD"):
                raise ValidationError("json", f"a {normal['method']} request has no body")
            normal["json"] = config["json"]
        has_field, has_values = "response_field" in config, "response_values" in config
        if has_field != has_values:
            missing = "response_values" if has_field else "response_field"
            raise ValidationError(missing, "is required with " + (
                "response_field" if has_field else "response_values"))
        if has_field:
            if normal["method"] == "HEAD":
                raise ValidationError("response_field", "a HEAD request has no body to look into")
            normal["response_field"] = validate_path(config["response_field"], "response_field")
            normal["response_values"] = validate_values(
                config["response_values"], "response_values"
            )
        return normal

    def config_schema(self) -> dict[str, Any]:
        status = {"type": "integer", "minimum": 100, "maximum": 599}
        scalar = {"type": ["string", "number", "boolean", "null"]}
        return {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "maxLength": 2048,
                    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                    "description": "The http or https URL to request. It must reach a public "
                    "address (loopback, private and metadata addresses are refused).",
                },
                "method": {
                    "type": "string",
                    "pattern": _any_case(METHODS),
                    "examples": list(METHODS),
                    "default": "GET",
                    "description": f"The HTTP method, one of {', '.join(METHODS)} (any case).",
                },
                "expected_status": {
                    "description": "The status code, or codes, that mean done.",
                    "default": 200,
                    "oneOf": [
                        status,
                        {"type": "array", "items": status, "minItems": 1,
                         "maxItems": _MAX_STATUSES, "uniqueItems": True},
                    ],
                },
                "headers": {
                    "type": "object",
                    "description": "Extra request headers.",
                    "maxProperties": _MAX_HEADERS,
                    "propertyNames": {"pattern": _HEADER_NAME.pattern},
                    "additionalProperties": {
                        "type": "string", "maxLength": _MAX_HEADER_VALUE_CHARS
                    },
                },
                "json": {"description": "A JSON body to send (not with GET or HEAD)."},
                "response_field": {
                    "type": "string",
                    "maxLength": 256,
                    "description": "A dotted path into the JSON body, such as 'status' or "
                    "'checks.0.state'; requires response_values.",
                },
                "response_values": {
                    "description": "The values of response_field that mean done.",
                    "oneOf": [
                        scalar,
                        {"type": "array", "items": scalar, "minItems": 1, "maxItems": 50},
                    ],
                },
            },
            "required": ["url"],
            "additionalProperties": False,
            "dependentRequired": {
                "response_field": ["response_values"],
                "response_values": ["response_field"],
            },
            "allOf": [
                # No body on a GET or HEAD (left out, the method is GET).
                {"if": {"properties": {"method": {"pattern": _any_case(("GET", "HEAD"))}}},
                 "then": {"not": {"required": ["json"]}}},
                # Nothing to look into on a HEAD.
                {"if": {"properties": {"method": {"pattern": _any_case(("HEAD",))}},
                        "required": ["method"]},
                 "then": {"not": {"required": ["response_field"]}}},
            ],
        }

    def describe(self, config: Mapping[str, Any]) -> str:
        codes = config.get("expected_status") or [200]
        wanted = " or ".join(str(code) for code in codes)
        text = f"{config.get('method', 'GET')} {config.get('url')} (waiting for HTTP {wanted}"
        if config.get("response_field"):
            values = describe_value(config.get("response_values"))
            text += f" with {config['response_field']} in {values}"
        return text + ")"

    # -- running -----------------------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        """Take the policy and tuning; the HTTP client is made at the first check.

        With a CA file configured the client is made at once, so a file that
        cannot be used stops the engine at its start rather than failing checks.
        """
        self._policy = NetworkPolicy.from_allow_list(runtime.settings.allow_networks)
        self._tuning = runtime.settings.http
        if self._tuning.ca_file:
            self._http(self._policy, self._tuning)

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._policy = self._tuning = None
        if client is not None:
            await client.aclose()

    def _http(self, policy: NetworkPolicy, tuning: HttpTuning) -> GuardedClient:
        """The engine's one client, made on first use.

        Nothing awaits between the test and the assignment, so checks that start
        together share one client.
        """
        client = self._client
        if client is None:
            from ..net.guarded_client import GuardedClient

            client = self._client = GuardedClient(tuning, policy)
        return client

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        policy, client_tuning = self._policy, self._tuning
        if policy is None or client_tuning is None:
            return CheckOutcome.not_yet("poll_url is not running (its engine did not start it)")
        from ..net.guarded_client import HttpFailure, TimedOut

        client = self._http(policy, client_tuning)
        config = job.check_config
        tuning = runtime.settings.http
        started = anyio.current_time()
        try:
            # A bare cancel scope rather than fail_after: the same deadline, cheaper per check.
            with anyio.CancelScope(deadline=started + tuning.total_timeout_seconds) as scope:
                answer = await self._fetch(client, policy, config, tuning.max_response_bytes)
            if scope.cancelled_caught:
                raise TimeoutError
        except TimeoutError:
            return CheckOutcome.not_yet(
                f"no complete answer from {config['url']} within "
                f"{tuning.total_timeout_seconds:g} s"
            )
        except AddressRefused as exc:
            return CheckOutcome.failed(f"blocked: {exc.reason}")
        except _TooManyRedirects as exc:
            return CheckOutcome.not_yet(str(exc))
        except TimedOut as exc:
            return CheckOutcome.not_yet(f"{exc.what} from {config['url']}")
        except HttpFailure as exc:
            return CheckOutcome.not_yet(f"request to {config['url']} failed: {exc}")
        elapsed_ms = round((anyio.current_time() - started) * 1000)
        return _judge(config, answer, elapsed_ms, tuning.max_response_bytes)

    async def _fetch(
        self,
        client: GuardedClient,
        policy: NetworkPolicy,
        config: Mapping[str, Any],
        limit: int,
    ) -> _Answer:
        from ..net.guarded_client import redirect_request

        method: str = config["method"]
        headers: dict[str, str] = dict(config.get("headers") or {})
        content: bytes | None = None
        if "json" in config:
            content = json.dumps(config["json"], separators=(",", ":")).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["content-type"] = "application/json"
        url = parse_http_url(config["url"])
        expected = config["expected_status"]
        for hop in range(MAX_REDIRECTS + 1):
            policy.check_url(url)
            async with client.request(method, url, headers=headers, content=content) as response:
                # An expected status is the answer, whatever its Location says.
                following = None if response.status in expected else response.redirect_target()
                if following is None:
                    body, truncated = await response.read_capped(limit)
                    text = _text(body, response)
                    return _Answer(
                        url=str(url),
                        status=response.status,
                        redirects=hop,
                        content=body,
                        truncated=truncated,
                        encoding=response.content_encoding,
                        text=text,
                        parsed=_NOT_JSON if truncated else _parse_json(text),
                    )
                method, headers, content = redirect_request(response, following, headers, content)
            url = following
        raise _TooManyRedirects(f"more than {MAX_REDIRECTS} redirects, the last to {url}")


def _judge(config: Mapping[str, Any], answer: _Answer, elapsed_ms: int, limit: int) -> CheckOutcome:
    result: dict[str, Any] = {
        "url": answer.url,
        "status": answer.status,
        "elapsed_ms": elapsed_ms,
        "body": _result_body(answer),
    }
    if answer.truncated:
        result["truncated"] = True
    if answer.redirects:
        result["redirects"] = answer.redirects
    expected: list[int] = config["expected_status"]
    if answer.status not in expected:
        wanted = " or ".join(str(code) for code in expected)
        return CheckOutcome.not_yet(
            f"HTTP {answer.status} from {answer.url}, waiting for {wanted}", result
        )
    field = config.get("response_field")
    if field:
        if answer.parsed is _NOT_JSON:
            why = f"was cut at {limit} bytes" if answer.truncated else "is not JSON"
            return CheckOutcome.not_yet(
                f"the body {why}, so response_field {field} cannot be read", result
            )
        try:
            value = lookup(answer.parsed, field)
        except FieldMissing as exc:
            return CheckOutcome.not_yet(f"response_field {field} is missing: {exc}", result)
        if not matches(value, config["response_values"]):
            return CheckOutcome.not_yet(
                f"{field} is {describe_value(value)}, waiting for one of "
                f"{describe_value(config['response_values'])}",
                result,
            )
    return CheckOutcome.met(result)


def _result_body(answer: _Answer) -> Any:
    if answer.encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        return f"<{len(answer.content)} bytes in {answer.encoding} encoding>"
    if answer.parsed is not _NOT_JSON:
        compact = json.dumps(answer.parsed, separators=(",", ":"), ensure_ascii=False)
        if len(compact) <= _MAX_JSON_RESULT_CHARS:
            return answer.parsed
    return _excerpt(answer.text)


def _any_case(words: Iterable[str]) -> str:
    """A JSON Schema pattern matching exactly ``words`` in any ASCII case ("get", "Post")."""
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" for c in word) for word in words)
    return f"^(?:{'|'.join(spelled)})$"


def _validate_statuses(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValidationError("expected_status", "must list at least one status code")
    if len(values) > _MAX_STATUSES:
        raise ValidationError("expected_status", f"must list at most {_MAX_STATUSES} codes")
    codes: list[int] = []
    for index, item in enumerate(values):
        where = f"expected_status.{index}" if isinstance(value, list) else "expected_status"
        code = int(require_number(item, where, integer=True, minimum=100, maximum=599))
        if code not in codes:
            codes.append(code)
    return codes


def _validate_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("headers", "must be an object of header names and string values")
    if len(value) > _MAX_HEADERS:
        raise ValidationError("headers", f"must have at most {_MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValidationError("headers", f"{str(name)[:64]!r} is not a valid header name")
        where = f"headers.{name}"
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("proxy-"):
            raise ValidationError(where, "is set by circleback and cannot be given")
        if not isinstance(text, str):
            raise ValidationError(where, "must be a string")
        if len(text) > _MAX_HEADER_VALUE_CHARS:
            raise ValidationError(where, f"must be at most {_MAX_HEADER_VALUE_CHARS} characters")
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text):
            raise ValidationError(where, "must not contain line breaks or control characters")
        headers[name] = text
    return headers


@hookimpl
def circleback_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register the ``poll_url`` job type."""
    register(PollUrlChecker())
