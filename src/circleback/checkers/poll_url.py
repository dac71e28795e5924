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

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from ..core.abc import Checker, Runtime, ValidationContext
from ..core.dotted import (
    FieldMissing,
    as_values,
    describe_value,
    lookup,
    matches,
    path_schema,
    values_schema,
)
from ..core.errors import UrlRefused
from ..core.hookspecs import hookimpl
from ..core.models import CheckOutcome, Job
from ..core.redaction import redact_url
from ..core.schema import ERROR_MESSAGE, any_case, needs, object_of, one_or_many
from ..net.netguard import AddressRefused, NetworkPolicy, parse_http_url

if TYPE_CHECKING:
    from ..core.settings import HttpTuning
    from ..net.guarded_client import GuardedClient

__all__ = ["MAX_REDIRECTS", "METHODS", "PollUrlChecker"]

#: The methods a poll may use.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Redirects followed at most per check, each checked like the first URL.
MAX_REDIRECTS: Final = 5
_MAX_URL_CHARS = 2048
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
#: The charsets a text body is decoded from, by the names servers give them.
_TEXT_CHARSETS: Final = {
    "utf-8": "utf-8", "utf8": "utf-8", "us-ascii": "ascii", "ascii": "ascii",
    "iso-8859-1": "latin-1", "latin1": "latin-1", "latin-1": "latin-1",
    "iso-8859-15": "iso8859-15", "windows-1252": "cp1252", "cp1252": "cp1252",
    "utf-16": "utf-16", "utf-16le": "utf-16-le", "utf-16be": "utf-16-be",
}


# -- reading answers ---------------------------------------------------------------------------


def _excerpt(content: bytes, charset: str | None) -> str:
    """The start of a text body, decoded: only the excerpt, only with a charset we know.

    A server names the charset, so only a short list is decoded (others could
    take minutes over a large body, or raise); the rest is shown as escaped bytes.
    """
    codec = _TEXT_CHARSETS.get((charset or "utf-8").strip().lower())
    head = content[: _EXCERPT_CHARS * 4]  # enough bytes for the excerpt in any of them
    text = head.decode(codec, errors="replace") if codec else head.decode(
        "ascii", errors="backslashreplace")
    if len(text) <= _EXCERPT_CHARS and len(head) == len(content):
        return text
    return text[:_EXCERPT_CHARS] + "…"


def _parse_json(content: bytes) -> Any:
    """The JSON body, read as UTF-8 (RFC 8259 §8.1) whatever charset the server names."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _NOT_JSON
    if not text.strip():
        return _NOT_JSON
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


@attrs.frozen(kw_only=True)
class _Answer:
    url: str
    status: int
    redirects: int
    content: bytes
    truncated: bool
    encoding: str
    #: Whether the body was decoded from its encoding (else it is as sent).
    decoded: bool
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

    # -- the rules ---------------------------------------------------------------------------

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        status = {"type": "integer", "minimum": 100, "maximum": 599}
        # The reserved names and every proxy- header, in any case.
        reserved = any_case(sorted(_RESERVED_HEADERS)).removesuffix(")$") + (
            "|[Pp][Rr][Oo][Xx][Yy]-.*)$")
        return object_of(
            {
                "url": {
                    "type": "string",
                    "maxLength": _MAX_URL_CHARS,
                    "allOf": [
                        {"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                         ERROR_MESSAGE: "must use http or https, as in "
                         "https://example.com/health"},
                        {"pattern": "^[^\\s\\u0000-\\u001f\\u007f]*$",
                         ERROR_MESSAGE: "must not contain spaces or control characters"},
                    ],
                    "description": "The http or https URL to request. It must reach a public "
                    "address (loopback, private and metadata addresses are refused).",
                },
                "method": {
                    "type": "string",
                    "pattern": any_case(METHODS),
                    ERROR_MESSAGE: {"pattern": f"must be one of {', '.join(METHODS)}"},
                    "examples": list(METHODS),
                    "default": "GET",
                    "description": f"The HTTP method, one of {', '.join(METHODS)} (any case).",
                },
                "expected_status": {
                    **one_or_many(status, _MAX_STATUSES,
                                  "The status code, or codes, that mean done."),
                    "default": 200,
                },
                "headers": {
                    "type": "object",
                    "maxProperties": _MAX_HEADERS,
                    "propertyNames": {"allOf": [
                        {"pattern": _HEADER_NAME.pattern,
                         ERROR_MESSAGE: "is not a valid header name"},
                        {"not": {"pattern": reserved},
                         ERROR_MESSAGE: "is set by circleback and cannot be given"},
                    ]},
                    "additionalProperties": {
                        "type": "string",
                        "maxLength": _MAX_HEADER_VALUE_CHARS,
                        "allOf": [{
                            "pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$",
                            ERROR_MESSAGE: "must not contain line breaks or control characters",
                        }],
                    },
                    "description": "Extra request headers (not Host, Cookie, Connection or "
                    "the other headers circleback sets itself).",
                },
                "json": {"description": "A JSON body to send (not with GET or HEAD)."},
                "response_field": path_schema(
                    "A dotted path into the JSON body, such as 'status' or 'checks.0.state'; "
                    "requires response_values."
                ),
                "response_values": values_schema("The values of response_field that mean done."),
            },
            ["url"],
            allOf=[
                needs("response_field", "response_values"),
                needs("response_values", "response_field"),
                # No body on a GET (which a missing method means) or a HEAD.
                {"if": {"anyOf": [{"not": {"required": ["method"]}},
                                  {"properties": {"method": {"pattern": any_case(["GET"])}}}]},
                 "then": {"not": {"required": ["json"]},
                          ERROR_MESSAGE: "a GET request has no body"}},
                {"if": {"properties": {"method": {"pattern": any_case(["HEAD"])}},
                        "required": ["method"]},
                 "then": {"not": {"anyOf": [{"required": ["json"]},
                                            {"required": ["response_field"]}]},
                          ERROR_MESSAGE: "a HEAD request has no body"}},
            ],
        )

    def refine_config(
        self, config: dict[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        """Normalise the URL and the method, list the statuses and values once each.

        The rule a schema cannot state: the URL must parse and its literal host
        must pass the network policy (``address_refused``).
        """
        try:
            url = parse_http_url(config["url"])
        except AddressRefused as exc:
            raise UrlRefused("url", exc.reason) from None
        policy = NetworkPolicy.from_allow_list(context.settings.allow_networks)
        try:
            policy.check_url(url)
            _check_reserved_name(policy, url.host)
        except AddressRefused as exc:
            raise UrlRefused(
                "url", f"may not be requested: {exc.reason} (an operator allows a host or "
                "range with CIRCLEBACK_ALLOW_NETWORKS)"
            ) from None
        normal: dict[str, Any] = {"url": str(url), "method": config.get("method", "GET").upper()}
        codes = as_values(config.get("expected_status", 200))
        normal["expected_status"] = list(dict.fromkeys(int(code) for code in codes))
        for key in ("headers", "json", "response_field"):
            if key in config:
                normal[key] = config[key]
        if "response_values" in config:
            normal["response_values"] = as_values(config["response_values"])
        return normal

    def describe(self, config: Mapping[str, Any]) -> str:
        codes = config.get("expected_status") or [200]
        wanted = " or ".join(str(code) for code in codes)
        url = redact_url(str(config.get("url")))
        text = f"{config.get('method', 'GET')} {url} (waiting for HTTP {wanted}"
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
                f"no complete answer from {redact_url(config['url'])} within "
                f"{tuning.total_timeout_seconds:g} s"
            )
        except AddressRefused as exc:
            return CheckOutcome.failed(f"blocked: {exc.reason}")
        except _TooManyRedirects as exc:
            return CheckOutcome.not_yet(str(exc))
        except TimedOut as exc:
            return CheckOutcome.not_yet(f"{exc.what} from {redact_url(config['url'])}")
        except HttpFailure as exc:
            return CheckOutcome.not_yet(f"request to {redact_url(config['url'])} failed: {exc}")
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
        from ..net.httpclient import decodes

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
                    return _Answer(
                        url=redact_url(str(url)),
                        status=response.status,
                        redirects=hop,
                        content=body,
                        truncated=truncated,
                        encoding=response.content_encoding,
                        decoded=decodes(response.content_encoding),
                        text=_excerpt(body, response.charset),
                        parsed=_NOT_JSON if truncated else _parse_json(body),
                    )
                method, headers, content = redirect_request(response, following, headers, content)
            url = following
        raise _TooManyRedirects(
            f"more than {MAX_REDIRECTS} redirects, the last to {redact_url(str(url))}")


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
    if not answer.decoded:
        return f"<{len(answer.content)} bytes in {answer.encoding} encoding>"
    if answer.parsed is not _NOT_JSON:
        compact = json.dumps(answer.parsed, separators=(",", ":"), ensure_ascii=False)
        if len(compact) <= _MAX_JSON_RESULT_CHARS:
            return answer.parsed
    return answer.text


@hookimpl
def circleback_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register the ``poll_url`` job type."""
    register(PollUrlChecker())


def _check_reserved_name(policy: NetworkPolicy, host: str) -> None:
    """Refuse ``localhost`` and ``*.localhost`` when the job is added, without DNS.

    These names always mean the loopback address (RFC 6761), so a job naming
    one would only fail at its first check. Every other name is judged after
    resolution, at every check.
    """
    name = host.rstrip(".").lower()
    if name != "localhost" and not name.endswith(".localhost"):
        return
    loopback = ipaddress.ip_address("127.0.0.1")
    reason = policy.refusal(name, loopback)
    if reason:
        raise AddressRefused(f"{name} is always {reason}")
