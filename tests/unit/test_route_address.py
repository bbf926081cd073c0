"""The address a worker bound to every interface gives the scheduler: this
host's own on the route to it (no packet is sent to find it)."""

from __future__ import annotations

import socket

import pytest

from wsi_runtime.serving import StartupError, route_address


def test_towards_a_loopback_scheduler_the_address_is_loopback() -> None:
    assert route_address("127.0.0.1:50051", 50052) == "127.0.0.1:50052"
    assert route_address("localhost:50051", 7) in ("127.0.0.1:7", "[::1]:7")


def test_an_ipv6_scheduler_gets_a_bracketed_address() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect(("::1", 9))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert route_address("[::1]:50051", 50052) == "[::1]:50052"


@pytest.mark.parametrize("target", ["no-such-host.invalid:50051", "127.0.0.1:port"])
def test_a_scheduler_it_cannot_place_says_to_give_the_address(target: str) -> None:
    with pytest.raises(StartupError, match="give --advertise-address"):
        route_address(target, 50052)
