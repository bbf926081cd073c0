"""Page tokens and the echo of what a user sent in an error message."""

from __future__ import annotations

import pytest

from scheduler_service import page_tokens
from wsi_runtime.clipped import clipped


def test_a_token_gives_back_its_number_for_its_kind_only() -> None:
    token = page_tokens.encode("workflows", 120)
    assert page_tokens.decode("workflows", token) == 120
    with pytest.raises(ValueError, match="is not one this server issued"):
        page_tokens.decode("slides", token)
    with pytest.raises(ValueError, match="is not one this server issued"):
        page_tokens.decode("workflows", page_tokens.encode("workflows", -1))


def test_a_huge_token_is_refused_with_a_message_of_bounded_length() -> None:
    """100,000 characters echoed whole made a status message over gRPC's
    16 KB: the caller got RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT."""
    with pytest.raises(ValueError) as refused:
        page_tokens.decode("workflows", "A" * 100_000)
    message = str(refused.value)
    assert len(message) < 200
    assert message == (
        f"page_token '{'A' * 64}… (99,936 more characters)' is not one this server issued"
    )


@pytest.mark.parametrize(
    "text, limit, shown",
    [
        ("", 3, ""),
        ("abc", 3, "abc"),
        ("abcd", 3, "abc… (1 more characters)"),
        ("é" * 5, 1, "é… (4 more characters)"),
    ],
)
def test_clipped(text: str, limit: int, shown: str) -> None:
    assert clipped(text, limit) == shown
