"""The SSRF guard's judgement, as pure functions over tables of addresses.

Connect-time enforcement against real receivers is in test_dispatch.py."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from cronsvc.errors import CronSvcError, TargetNotAllowed
from cronsvc.netguard import GuardedResolver, TargetPolicy, literal_address, parse_cidr
from tests.fakes import ScriptedResolver

DEFAULT = TargetPolicy()

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.1", "private"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("::ffff:127.0.0.1", "127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "10.0.0.1, a private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "127.0.0.1, a loopback"),  # 6to4
    ("64:ff9b::a00:1", "10.0.0.1, a private"),  # NAT64
    ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
    ("fec0::1", "site-local"),
    ("64:ff9b:1::1", "reserved"),  # local-use NAT64
    ("0.1.2.3", "private"),
    ("240.0.0.1", "private"),
    ("255.255.255.255", "private"),
    ("192.0.2.1", "private"),  # documentation
    ("2001:db8::1", "private"),  # documentation
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.32.0.1",  # just past 172.16/12
    "2001:4860:4860::8888",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_addresses_that_are_not_globally_routable_are_refused(address: str, why: str) -> None:
    reason = DEFAULT.refusal(ip_address(address))

    assert reason is not None
    assert why in reason
    with pytest.raises(TargetNotAllowed) as caught:
        DEFAULT.check(address, host="hooks.example.org")
    assert isinstance(caught.value, CronSvcError)
    assert "hooks.example.org" in str(caught.value)
    assert str(ip_address(address)) in str(caught.value)


@pytest.mark.parametrize("address", ALLOWED)
def test_globally_routable_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.refusal(ip_address(address)) is None
    DEFAULT.check(address)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # one 32-bit decimal number
        ("127.1", "127.0.0.1"),  # short form: the last part fills the rest
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),  # hex part
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),  # octal part
        ("017700000001", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),  # a trailing dot, as in a fully qualified name
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_ip_literals_are_read_in_every_form_the_system_resolver_accepts(
    host: str, address: str
) -> None:
    assert literal_address(host) == ip_address(address)
    if ":" not in host and "0x" not in host:
        # What the C library makes of it, for the forms inet_aton knows.
        assert socket.inet_aton(host.removesuffix(".")) == ip_address(address).packed
    with pytest.raises(TargetNotAllowed):
        DEFAULT.check_host(host)


@pytest.mark.parametrize(
    "host", ["example.org", "hooks.example.org.", "1.2.3.4.5", "256.0.0.1", "08.0.0.1", "0x", "a1"]
)
def test_names_are_not_taken_for_ip_literals(host: str) -> None:
    assert literal_address(host) is None
    DEFAULT.check_host(host)  # judged when connecting, on what they resolve to


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "app.localhost"])
def test_localhost_names_are_refused_without_dns(host: str) -> None:
    with pytest.raises(TargetNotAllowed, match="loopback"):
        DEFAULT.check_host(host)


def test_public_literals_pass_the_host_check() -> None:
    DEFAULT.check_host("8.8.8.8")
    DEFAULT.check_host("[2001:4860:4860::8888]")


def test_allowed_cidrs_open_their_range_and_nothing_else() -> None:
    policy = TargetPolicy.from_settings(allow_private=False, allowed_cidrs=["10.20.0.0/16"])

    assert policy.refusal(IPv4Address("10.20.3.4")) is None
    assert policy.refusal(IPv6Address("::ffff:10.20.3.4")) is None, "judged by its IPv4"
    assert policy.refusal(IPv4Address("10.21.0.1")) is not None
    assert policy.refusal(IPv4Address("127.0.0.1")) is not None
    policy.check_host("10.20.0.1")
    with pytest.raises(TargetNotAllowed):
        policy.check_host("10.21.0.1")


def test_allow_private_opens_everything_but_cloud_metadata() -> None:
    policy = TargetPolicy(allow_private=True)

    for address in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fe80::1", "100.64.0.1"):
        assert policy.refusal(ip_address(address)) is None, address
    policy.check_host("localhost")
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        assert policy.refusal(ip_address(address)) == "a cloud metadata address", address


def test_metadata_is_reachable_only_when_named_in_allowed_cidrs() -> None:
    policy = TargetPolicy.from_settings(allow_private=True, allowed_cidrs=["169.254.169.254"])

    assert policy.refusal(IPv4Address("169.254.169.254")) is None


def test_a_string_that_is_no_address_is_refused() -> None:
    with pytest.raises(TargetNotAllowed, match="not an IP address"):
        TargetPolicy(allow_private=True).check("example.org")


@pytest.mark.parametrize("text", ["10.0.0.1/8", "nope", "10.0.0.0/33", ""])
def test_bad_cidrs_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cidr(text)
    with pytest.raises(ValueError):
        TargetPolicy.from_settings(allow_private=False, allowed_cidrs=[text])


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            "127.0.0.1",
            "127.0.0.1 is a loopback address: not an allowed webhook target unless "
            "webhook.allow_private_targets is true (CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS=true) "
            "or webhook.allowed_cidrs includes it",
        ),
        (
            "localhost",
            "localhost (127.0.0.1) is a loopback address: not an allowed webhook target unless "
            "webhook.allow_private_targets is true (CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS=true) "
            "or webhook.allowed_cidrs includes it",
        ),
        (
            "169.254.169.254",
            "169.254.169.254 is a cloud metadata address: not an allowed webhook target "
            "unless webhook.allowed_cidrs includes it",
        ),
    ],
)
def test_a_refusal_names_the_setting_that_would_allow_the_target(host: str, message: str) -> None:
    with pytest.raises(TargetNotAllowed) as caught:
        DEFAULT.check_host(host)

    assert str(caught.value) == message


def test_an_answer_that_is_no_address_names_no_setting() -> None:
    with pytest.raises(TargetNotAllowed) as caught:
        TargetPolicy(allow_private=True).check("example.org")

    assert "webhook." not in str(caught.value)


def test_the_message_names_host_and_address_and_nothing_else() -> None:
    error = TargetNotAllowed("hooks.example.org", "10.0.0.7", "a private address")

    assert str(error) == (
        "hooks.example.org (10.0.0.7) is a private address: not an allowed webhook target"
    )


# --- the resolver wrapper, over a scripted resolver ----------------------------


async def test_resolver_returns_exactly_the_checked_addresses_as_numeric_hosts() -> None:
    inner = ScriptedResolver(["8.8.8.8", "2001:4860:4860::8888"])
    guard = GuardedResolver(DEFAULT, inner)

    answer = await guard.resolve("hooks.example.org", 443)

    assert [(a["host"], a["port"], a["hostname"]) for a in answer] == [
        ("8.8.8.8", 443, "hooks.example.org"),
        ("2001:4860:4860::8888", 443, "hooks.example.org"),
    ]
    assert all(a["flags"] & socket.AI_NUMERICHOST for a in answer)


async def test_resolver_refuses_the_whole_answer_if_one_address_is_refused() -> None:
    guard = GuardedResolver(DEFAULT, ScriptedResolver(["8.8.8.8", "10.0.0.1"]))

    with pytest.raises(TargetNotAllowed) as caught:
        await guard.resolve("mixed.example.org", 80)

    assert "mixed.example.org (10.0.0.1)" in str(caught.value)


async def test_resolver_refuses_an_answer_that_is_no_address() -> None:
    inner = ScriptedResolver(["elsewhere.example"])
    guard = GuardedResolver(TargetPolicy(allow_private=True), inner)

    with pytest.raises(TargetNotAllowed):
        await guard.resolve("odd.example.org", 80)


async def test_resolver_closes_only_an_inner_resolver_it_made() -> None:
    inner = ScriptedResolver(["8.8.8.8"])

    await GuardedResolver(DEFAULT, inner).close()

    assert inner.closed is False


def test_the_readmes_first_job_says_how_to_call_a_receiver_on_this_machine() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    first_job = readme.split("## A first job", 1)[1].split("\n## ", 1)[0]

    for setting in (
        "webhook.allow_private_targets",
        "CRONSVC_WEBHOOK_ALLOW_PRIVATE_TARGETS=true",
        "webhook.allowed_cidrs",
    ):
        assert setting in first_job
