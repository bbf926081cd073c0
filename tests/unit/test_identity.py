"""The identity rules, pure: both modes, the token file's format, bearer
headers, and the small parsers the guards use (peer addresses, Host)."""

from __future__ import annotations

import logging

import pytest

from scheduler_service.authentication import peer_host
from wsi_gateway.guards import host_name
from wsi_protocol.ids import is_scheduler_id
from wsi_runtime import identity
from wsi_runtime.identity import PermissionDenied, Unauthenticated, identify
from wsi_runtime.limits import RateLimiter
from wsi_runtime.serving import is_loopback, warn_trusted_headers

ALICE_TOKEN = "wsi_alice-secret"
TABLE = identity.parse_token_file(
    f"# comment\n\nalice {identity.token_hash(ALICE_TOKEN)}  # trailing comment\n"
)


def test_trusted_header_mode_takes_a_well_formed_user_id() -> None:
    assert identify("alice", None, None) == "alice"
    assert identify("alice", "Bearer whatever", None) == "alice"  # ignored in this mode
    for bad in (None, "", "a b", "é", "x" * 65, "tab\there", "a\x01"):
        with pytest.raises(Unauthenticated):
            identify(bad, None, None)


def test_token_mode_takes_the_tokens_user_only() -> None:
    lookup = TABLE.user_of
    assert identify(None, f"Bearer {ALICE_TOKEN}", lookup) == "alice"
    assert identify("alice", f"bearer   {ALICE_TOKEN} ", lookup) == "alice"
    with pytest.raises(PermissionDenied):
        identify("bob", f"Bearer {ALICE_TOKEN}", lookup)
    for header in (None, "", "Bearer", "Bearer wrong", f"Basic {ALICE_TOKEN}", ALICE_TOKEN):
        with pytest.raises(Unauthenticated):
            identify("alice", header, lookup)  # x-user-id alone proves nothing
    for header in ("Bearer é", "Bearer a\x01b", "Bearer " + "x" * 600):
        with pytest.raises(Unauthenticated, match="malformed"):
            identify(None, header, lookup)


def test_the_token_file_keeps_good_lines_and_reports_bad_ones() -> None:
    table = identity.parse_token_file(
        "alice " + "a" * 64 + "\n"
        "bad user " + "b" * 64 + "\n"
        "carol " + "c" * 63 + "\n"
        "dave " + "D" * 64 + "\n"  # upper-case hex is fine
        "é " + "e" * 64 + "\n"
    )
    assert table.users_by_hash == {"a" * 64: "alice", "d" * 64: "dave"}
    assert [p.split(":")[0] for p in table.problems] == ["line 2", "line 3", "line 5"]
    assert TABLE.problems == ()


def test_tokens_are_long_random_and_stored_as_hashes() -> None:
    first, second = identity.new_token(), identity.new_token()
    assert first != second and first.startswith("wsi_") and len(first) >= 40
    line = identity.token_line("alice", first)
    assert first not in line and identity.parse_token_file(line).user_of(first) == "alice"


def test_peer_hosts_drop_the_port() -> None:
    assert peer_host("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert peer_host("ipv6:[::1]:5") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


def test_host_names_drop_the_port() -> None:
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("attacker.example") == "attacker.example"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def test_trusted_headers_on_a_reachable_address_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="wsi.serving"):
        warn_trusted_headers("127.0.0.1", "the gateway")
        assert caplog.records == []
        warn_trusted_headers("0.0.0.0", "the gateway")
    assert "can act as any user" in caplog.text and "WSI_AUTH_TOKENS" in caplog.text


def test_failures_block_without_taking_a_token() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0)
    assert limiter.blocked("peer", 0.0) == 0.0  # never seen
    assert limiter.acquire("peer", 0.0) == 0.0 and limiter.acquire("peer", 0.0) == 0.0
    assert limiter.blocked("peer", 0.0) == pytest.approx(1.0)
    assert limiter.blocked("peer", 0.0) == pytest.approx(1.0)  # asking again takes nothing
    assert limiter.blocked("peer", 1.0) == 0.0
    assert limiter.blocked("other", 0.0) == 0.0


def test_only_scheduler_ids_name_a_results_folder() -> None:
    assert is_scheduler_id("4ab618c4-0001-431b-81e6-4237c208cdaf")
    for bad in ("", "..", "../x", "/tmp/x", "4AB618C4-0001-431B-81E6-4237C208CDAF", "a" * 36):
        assert not is_scheduler_id(bad)


def test_a_credential_sent_twice_counts_only_if_both_say_the_same() -> None:
    assert identity.one_value([], "header X-User-ID") is None
    assert identity.one_value(["alice"], "header X-User-ID") == "alice"
    assert identity.one_value(["alice", "alice"], "header X-User-ID") == "alice"
    with pytest.raises(Unauthenticated, match="X-User-ID is given 3 times with different values"):
        identity.one_value(["alice", "alice", "bob"], "header X-User-ID")
