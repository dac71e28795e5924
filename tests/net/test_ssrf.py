"""poll_url against hostile URLs: the SSRF matrix, numeric spellings, redirects, the allow-list.

A sentinel HTTP server listens on 127.0.0.1 and ::1. Without an allowance every
hostile URL is refused — at add_job time when its host is a literal address,
at check time (the job fails) when it is a name — and the sentinel sees no
connection at all. With the operator's explicit allowance the same URLs pass,
and those that point at loopback reach the sentinel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import circleback
from circleback import Caller, JobStatus, Settings
from circleback import ValidationError as CirclebackValidationError
from circleback.errors import ConfigurationError
from circleback.net.netguard import (
    AddressRefused,
    NetworkPolicy,
    classify_address,
    parse_http_url,
    parse_ip_literal,
)
from circleback.testing import ManualClock, TestingPlugin

from ..http_servers import HttpServer, Reply, Request, json_reply
from ..pacing import QUICK


@attrs.frozen
class Case:
    """A hostile URL, the allow-list entry that admits it, and the sentinel it then reaches."""

    url: str
    allow: str | None  # None: refused whatever the allowance (a scheme other than http)
    reaches: str | None = None  # "v4" / "v6": the sentinel it reaches once allowed


MATRIX = [
    # IPv4 loopback, literally and in every numeric spelling a resolver accepts
    Case("http://127.0.0.1:{p4}/", "127.0.0.1", "v4"),
    Case("http://127.1:{p4}/", "127.0.0.0/8", "v4"),
    Case("http://127.0.1:{p4}/", "127.0.0.0/8", "v4"),
    Case("http://2130706433:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://0x7f000001:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://0x7F.0.0.1:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://0x7f.1:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://0177.0.0.1:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://017700000001:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://127.000.000.001:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://127.0.0.1.:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://0.0.0.0:{p4}/", "0.0.0.0/32", "v4"),
    Case("http://0:{p4}/", "0.0.0.0/32", "v4"),
    # IPv4 loopback inside IPv6
    Case("http://[::ffff:127.0.0.1]:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://[::ffff:7f00:1]:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://[0:0:0:0:0:ffff:127.0.0.1]:{p4}/", "127.0.0.1/32", "v4"),
    Case("http://[64:ff9b::7f00:1]/", "127.0.0.1/32"),
    Case("http://[2002:7f00:1::]/", "2002::/16"),
    Case("http://[::127.0.0.1]/", "::/96"),
    # IPv6 loopback, unspecified, unique-local, link-local, multicast, documentation
    Case("http://[::1]:{p6}/", "::1", "v6"),
    Case("http://[0:0:0:0:0:0:0:1]:{p6}/", "::1/128", "v6"),
    Case("http://[::]:{p6}/", "::/128", "v6"),
    Case("http://[fc00::1]/", "fc00::/7"),
    Case("http://[fd12:3456:789a::1]:8080/", "fd00::/8"),
    Case("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    Case("http://[fe80::1]/", "fe80::/10"),
    Case("http://[fe80::1%25eth0]/", "fe80::/10"),
    Case("http://[ff02::1]/", "ff00::/8"),
    Case("http://[2001:db8::1]/", "2001:db8::/32"),
    # private ranges
    Case("http://10.0.0.1/", "10.0.0.0/8"),
    Case("http://10.255.255.254:8080/admin", "10.0.0.0/8"),
    Case("http://172.16.0.1/", "172.16.0.0/12"),
    Case("http://172.31.255.255/", "172.16.0.0/12"),
    Case("http://192.168.0.1/", "192.168.0.0/16"),
    Case("https://192.168.1.1:8443/", "192.168.0.0/16"),
    Case("http://012.0.0.1/", "10.0.0.0/8"),
    Case("http://0xc0a80001/", "192.168.0.0/16"),
    # cloud metadata, literally and encoded
    Case("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254"),
    Case("http://2852039166/latest/meta-data/", "169.254.169.254"),
    Case("http://0xa9fea9fe/", "169.254.169.254"),
    Case("http://0251.0376.0251.0376/", "169.254.169.254"),
    Case("http://169.254.43518/", "169.254.169.254"),
    Case("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
    Case("http://[::ffff:a9fe:a9fe]/", "169.254.169.254"),
    Case("http://169.254.170.2/v2/credentials", "169.254.170.2"),
    Case("http://100.100.100.200/latest/meta-data/", "100.100.100.200"),
    Case("http://168.63.129.16/machine", "168.63.129.16"),
    # link-local, CGNAT, multicast, broadcast, reserved, benchmarking, documentation
    Case("http://169.254.1.1/", "169.254.0.0/16"),
    Case("http://100.64.0.1/", "100.64.0.0/10"),
    Case("http://100.127.255.254/", "100.64.0.0/10"),
    Case("http://224.0.0.1/", "224.0.0.0/4"),
    Case("http://239.255.255.250:1900/", "224.0.0.0/4"),
    Case("http://255.255.255.255/", "255.255.255.255"),
    Case("http://240.0.0.1/", "240.0.0.0/4"),
    Case("http://198.18.0.1/", "198.18.0.0/15"),
    Case("http://192.0.2.1/", "192.0.2.0/24"),
    Case("http://192.0.0.192/", "192.0.0.0/24"),
    # host names that resolve to loopback (refused after resolution, at check time)
    Case("http://localhost:{p4}/", "localhost", "v4"),
    Case("http://LOCALHOST:{p4}/", "127.0.0.0/8", "v4"),
    # other schemes: never allowed
    Case("file:///etc/passwd", None),
    Case("gopher://127.0.0.1:{p4}/_GET%20/", None),
    Case("ftp://127.0.0.1:{p4}/", None),
    Case("dict://127.0.0.1:{p4}/info", None),
    Case("ldap://127.0.0.1:{p4}/", None),
]


@attrs.define
class Sentinel:
    """HTTP servers on 127.0.0.1 and ::1 that must see nothing unless the operator allows it."""

    v4: HttpServer
    v6: HttpServer

    def url(self, template: str) -> str:
        return template.replace("{p4}", str(self.v4.port)).replace("{p6}", str(self.v6.port))

    @property
    def connections(self) -> int:
        return self.v4.connections + self.v6.connections

    @property
    def requests(self) -> int:
        return len(self.v4.requests) + len(self.v6.requests)


@pytest.fixture
def sentinel() -> Iterator[Sentinel]:
    def app(request: Request) -> Reply:
        return json_reply({"sentinel": True})

    with HttpServer(app, host="127.0.0.1") as v4, HttpServer(app, host="::1") as v6:
        yield Sentinel(v4, v6)


@asynccontextmanager
async def stepping(settings: Settings) -> AsyncIterator[circleback.Engine]:
    async with circleback.Engine(
        settings, plugins=[TestingPlugin()], load_entry_points=False, pacing=QUICK, worker=False,
        clock=ManualClock(),
    ) as engine, await engine.start_plugins():
        yield engine


def spec(url: str) -> dict[str, Any]:
    return {"job_type": "poll_url", "check_config": {"url": url},
            "on_success_message": "reached: {result}", "on_complete": "record",
            "max_attempts": 5}


def test_the_matrix_is_big_enough() -> None:
    assert len(MATRIX) >= 40
    assert len({case.url for case in MATRIX}) == len(MATRIX)


async def test_every_hostile_url_is_refused_and_the_sentinel_sees_nothing(
    make_settings: Callable[..., Settings], caller: Caller, sentinel: Sentinel
) -> None:
    refused_at_add: list[str] = []
    added: dict[str, Any] = {}
    async with stepping(make_settings(allow_networks=())) as engine:
        for case in MATRIX:
            url = sentinel.url(case.url)
            try:
                job = await engine.scheduler.add_job(caller, spec(url))
            except CirclebackValidationError as exc:
                assert exc.field == "check_config.url", url
                refused_at_add.append(url)
            else:
                added[url] = job
        # localhost always means loopback: refused when added, like the literal addresses.
        # Other host names are judged after resolution, at every check.
        assert added == {}
        assert await engine.run_due_jobs() == len(added)
        for url, job in added.items():
            checked = await engine.scheduler.get_job(caller, job.id)
            assert checked.status is JobStatus.FAILED, url
            assert checked.attempts == 1
            assert checked.last_error == (
                "blocked: localhost resolves to 127.0.0.1, which is a loopback address"
            )
        stored = await engine.scheduler.list_jobs(caller)
    assert len(stored) == len(added)  # nothing was written for the URLs refused at add_job
    assert len(refused_at_add) + len(added) == len(MATRIX)
    assert sentinel.connections == 0
    assert sentinel.requests == 0


async def test_the_same_urls_pass_when_the_operator_allows_them(
    make_settings: Callable[..., Settings], caller: Caller, sentinel: Sentinel
) -> None:
    allowed = [case for case in MATRIX if case.allow is not None]
    settings = make_settings(allow_networks=tuple({case.allow for case in allowed if case.allow}))
    reaching = [case for case in allowed if case.reaches]
    async with stepping(settings) as engine:
        jobs = {case: await engine.scheduler.add_job(caller, spec(sentinel.url(case.url)))
                for case in reaching}
        for case in allowed:
            engine.scheduler.validate(spec(sentinel.url(case.url)))  # passes: raises nothing
        for case in MATRIX:
            if case.allow is None:
                with pytest.raises(CirclebackValidationError):
                    engine.scheduler.validate(spec(sentinel.url(case.url)))
        assert await engine.run_due_jobs() == len(jobs)
        for case, job in jobs.items():
            checked = await engine.scheduler.get_job(caller, job.id)
            assert checked.status is JobStatus.COMPLETED, (case.url, checked.last_error)
            assert checked.last_result["body"] == {"sentinel": True}
    assert len(sentinel.v4.requests) == sum(case.reaches == "v4" for case in reaching)
    assert len(sentinel.v6.requests) == sum(case.reaches == "v6" for case in reaching)


@pytest.mark.parametrize("case", [case for case in MATRIX if case.allow], ids=lambda c: c.url)
async def test_each_allowance_admits_exactly_its_url(case: Case) -> None:
    url = parse_http_url(case.url.replace("{p4}", "8080").replace("{p6}", "8080"))
    assert url.host
    nothing, only_this = NetworkPolicy(()), NetworkPolicy([str(case.allow)])
    with pytest.raises(AddressRefused):
        nothing.check_url(url)
        await nothing.resolve(url.host, 80)
    only_this.check_url(url)
    addresses = await only_this.resolve(url.host, 80)
    assert addresses
    # an allowance for something else does not admit it
    other = NetworkPolicy(["203.0.113.7", "unrelated.example"])
    with pytest.raises(AddressRefused):
        other.check_url(url)
        await other.resolve(url.host, 80)


# -- redirects -------------------------------------------------------------------------------

REDIRECT_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://127.0.0.1:{p4}/",
    "http://2130706433:{p4}/",
    "http://0x7f.1:{p4}/",
    "http://[::1]:{p6}/",
    "http://[::ffff:127.0.0.1]:{p4}/",
    "http://0.0.0.0:{p4}/",
    "http://localhost:{p4}/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{p4}/_GET%20/",
]


@pytest.fixture
def redirector() -> Iterator[HttpServer]:
    """A server on 127.0.0.2 (allowed in the redirect tests) that redirects to ?to=..."""

    def app(request: Request) -> Reply:
        return Reply(status=302, headers={"Location": request.query["to"]})

    with HttpServer(app, host="127.0.0.2") as server:
        yield server


async def test_redirects_to_forbidden_addresses_are_refused(
    make_settings: Callable[..., Settings], caller: Caller, sentinel: Sentinel,
    redirector: HttpServer,
) -> None:
    settings = make_settings(allow_networks=("127.0.0.2/32",))
    async with stepping(settings) as engine:
        jobs = [
            await engine.scheduler.add_job(
                caller, spec(f"{redirector.url}/go?to={quote(sentinel.url(target), safe='')}")
            )
            for target in REDIRECT_TARGETS
        ]
        assert await engine.run_due_jobs() == len(jobs)
        errors = []
        for job in jobs:
            checked = await engine.scheduler.get_job(caller, job.id)
            assert checked.status is JobStatus.FAILED
            assert checked.last_error is not None
            errors.append(checked.last_error)
    assert len(redirector.requests) == len(REDIRECT_TARGETS)
    assert sentinel.connections == 0
    assert all(error.startswith("blocked: ") for error in errors), errors
    assert errors[0] == "blocked: 169.254.169.254 is a cloud metadata address"
    assert errors[-2] == "blocked: the scheme 'file' is not allowed (only http and https)"


async def test_redirects_pass_when_their_targets_are_allowed(
    make_settings: Callable[..., Settings], caller: Caller, sentinel: Sentinel,
    redirector: HttpServer,
) -> None:
    allow = ("127.0.0.2/32", "127.0.0.1/32", "::1", "0.0.0.0/32", "localhost")
    targets = [target for target in REDIRECT_TARGETS if "{p" in target and "gopher" not in target]
    async with stepping(make_settings(allow_networks=allow)) as engine:
        jobs = [
            await engine.scheduler.add_job(
                caller, spec(f"{redirector.url}/go?to={quote(sentinel.url(target), safe='')}")
            )
            for target in targets
        ]
        assert await engine.run_due_jobs() == len(jobs)
        for job in jobs:
            checked = await engine.scheduler.get_job(caller, job.id)
            assert checked.status is JobStatus.COMPLETED, checked.last_error
            assert checked.last_result["redirects"] == 1
    assert sentinel.requests == len(targets)


# -- numeric spellings and address classes ---------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("4294967295", "255.255.255.255"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("example.com", None),
        ("localhost", None),
        ("1x.example", None),
    ],
)
def test_numeric_spellings_are_read_like_the_resolver(host: str, address: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed is not None else None) == address


@pytest.mark.parametrize(
    "host", ["4294967296", "256.0.0.1", "1.2.3.4.5", "08.0.0.1", "0x1.0x100.0.1", "1.2.65536",
             "example.123", "[::ffff:1.2.3]"],
)
def test_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError):
        parse_ip_literal(host)
    with pytest.raises(AddressRefused):
        parse_http_url(f"http://{host}/")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_spelling_of_an_ipv4_address_means_that_address(number: int) -> None:
    address = ipaddress.IPv4Address(number)
    octets = [int(part) for part in str(address).split(".")]
    spellings = [
        str(number),
        hex(number),
        ".".join(f"0{octet:o}" for octet in octets),
        ".".join(hex(octet) for octet in octets),
        f"{octets[0]}.{octets[1]}.{(octets[2] << 8) | octets[3]}",
        f"{octets[0]}.{(octets[1] << 16) | (octets[2] << 8) | octets[3]}",
        str(address) + ".",
    ]
    for spelling in spellings:
        assert parse_ip_literal(spelling) == address, spelling
        assert parse_http_url(f"http://{spelling}:8080/x").host == str(address), spelling


_REFUSED_V4 = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
               "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16",
               "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
               "240.0.0.0/4"]


@st.composite
def refused_ipv4(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
    network = ipaddress.IPv4Network(draw(st.sampled_from(_REFUSED_V4)))
    offset = draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
    return network[offset], str(network)


@given(refused_ipv4(), st.sampled_from(["plain", "decimal", "hex", "mapped", "mapped-hex"]))
def test_non_public_ipv4_is_refused_in_any_spelling_unless_allowed(
    drawn: tuple[ipaddress.IPv4Address, str], spelling: str
) -> None:
    address, network = drawn
    host = {
        "plain": str(address),
        "decimal": str(int(address)),
        "hex": hex(int(address)),
        "mapped": f"[::ffff:{address}]",
        "mapped-hex": f"[{ipaddress.IPv6Address(int(address) | 0xFFFF00000000)}]",
    }[spelling]
    url = parse_http_url(f"http://{host}/")
    assert classify_address(address) is not None
    with pytest.raises(AddressRefused):
        NetworkPolicy(()).check_url(url)
    NetworkPolicy([network]).check_url(url)  # the operator's allowance admits it


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                "2a00:1450:4001:82a::200e", "64:ff9b::808:808", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_not_refused(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert classify_address(parsed) is None
    NetworkPolicy(()).check_url(parse_http_url(f"http://[{address}]/" if ":" in address
                                               else f"http://{address}/"))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("127.0.0.53", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("fd00::1", "a unique-local (private) address"),
        ("fe80::1", "a link-local address"),
        ("100.64.1.1", "a shared (carrier-grade NAT) address"),
        ("ff0e::1", "a multicast address"),
        ("::", "the unspecified address"),
        ("::ffff:10.0.0.1", "a private address, inside an IPv6 address"),
        ("2002:a00:1::", "a private address, inside an IPv6 address"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo tunnel address"),
    ],
)
def test_refusals_say_what_the_address_is(address: str, reason: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) == reason


async def test_names_allowed_by_the_operator_skip_the_address_checks() -> None:
    policy = NetworkPolicy(["LOCALHOST", "*.corp.example"])
    assert await policy.resolve("localhost.", 80) == [ipaddress.IPv4Address("127.0.0.1")]
    assert policy.allows_name("build.corp.example")
    assert policy.allows_name("a.b.corp.example")
    assert not policy.allows_name("corp.example.evil")
    assert not policy.allows_name("evilcorp.example")
    with pytest.raises(AddressRefused, match=r"localhost resolves to 127\.0\.0\.1"):
        await NetworkPolicy(()).resolve("localhost", 80)


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x.example", "-bad-.com",
                                   "a..b", "fe80::/200"])
def test_a_bad_allow_list_entry_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_networks"):
        NetworkPolicy([entry])


def test_the_allow_list_comes_from_the_environment() -> None:
    settings = Settings.from_env({"CIRCLEBACK_ALLOW_NETWORKS": "10.0.0.0/8, status.internal ,"})
    assert settings.allow_networks == ("10.0.0.0/8", "status.internal")
    policy = NetworkPolicy.from_allow_list(settings.allow_networks)
    policy.check_url(parse_http_url("http://10.2.3.4/"))
    assert policy.allows_name("status.internal")
    with pytest.raises(AddressRefused):
        policy.check_url(parse_http_url("http://192.168.1.1/"))


def test_localhost_is_refused_when_added_and_the_refusal_names_the_setting(
    settings: Settings,
) -> None:
    from circleback.checkers.poll_url import PollUrlChecker
    from circleback.core.abc import ValidationContext

    checker = PollUrlChecker()
    context = ValidationContext(settings=settings)
    for url in ("http://localhost:8080/health", "http://api.localhost/x", "http://127.0.0.1/"):
        with pytest.raises(CirclebackValidationError) as refused:
            checker.refine_config({"url": url}, context)
        assert "CIRCLEBACK_ALLOW_NETWORKS" in refused.value.message
    allowed = ValidationContext(settings=attrs.evolve(settings, allow_networks=("localhost",)))
    assert checker.refine_config({"url": "http://localhost:8080/health"}, allowed)["url"]
