"""The token file is read again when it changes (no restart to add or
revoke), fails closed when it goes, and add/revoke keep only hashes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wsi_runtime.token_file import TokenFile, TokenFileError, add_token, revoke_user


def test_added_and_revoked_tokens_take_effect_at_the_next_lookup(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    alice = add_token(path, "alice")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert alice not in path.read_text()
    tokens = TokenFile(path)
    assert tokens.user_of(alice) == "alice"
    bob = add_token(path, "bob")
    assert tokens.user_of(bob) == "bob"
    assert revoke_user(path, "alice") == 1
    assert tokens.user_of(alice) is None and tokens.user_of(bob) == "bob"
    path.unlink()  # gone: nobody gets in
    assert tokens.user_of(bob) is None
    path.write_text(f"# back\n{path.read_text() if path.exists() else ''}")
    assert tokens.user_of(bob) is None
    with pytest.raises(ValueError):
        add_token(path, "not a user")


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="WSI_AUTH_TOKENS"):
        TokenFile(tmp_path / "none.txt")


def test_add_token_on_a_hand_edited_file_keeps_every_token(tmp_path: Path) -> None:
    """No final newline, CRLF line ends, comments: the new line never joins
    the last one, and the file is replaced whole, owner-only, nothing left over."""
    path = tmp_path / "tokens.txt"
    alice = add_token(path, "alice")
    edited = "# team tokens\r\n" + path.read_text().rstrip("\n").replace("\n", "\r\n")
    path.write_text(edited, newline="")  # the last line has no newline
    bob = add_token(path, "bob")
    tokens = TokenFile(path)
    assert tokens.user_of(alice) == "alice" and tokens.user_of(bob) == "bob"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.txt", "tokens.txt.lock"]
    assert revoke_user(path, "alice") == 1
    assert tokens.user_of(alice) is None and tokens.user_of(bob) == "bob"
    assert path.read_text().startswith("# team tokens\n")


def test_revoking_on_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no API token file"):
        revoke_user(tmp_path / "none.txt", "alice")


def test_a_secret_volume_s_update_is_read_at_the_next_lookup(tmp_path: Path) -> None:
    """As the kubelet updates a mounted Secret: the file is a link through
    ``..data``, and the update swaps ``..data`` to a new folder at once."""
    old, new = tmp_path / "..2026_01", tmp_path / "..2026_02"
    old.mkdir()
    alice = add_token(old / "tokens.txt", "alice")
    (tmp_path / "..data").symlink_to(old.name)
    (tmp_path / "tokens.txt").symlink_to("..data/tokens.txt")
    tokens = TokenFile(tmp_path / "tokens.txt")
    assert tokens.user_of(alice) == "alice"
    new.mkdir()
    bob = add_token(new / "tokens.txt", "bob")  # alice is not in the new Secret
    (tmp_path / "..data_tmp").symlink_to(new.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert tokens.user_of(bob) == "bob"
    assert tokens.user_of(alice) is None
