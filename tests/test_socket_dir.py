"""The non-root fallback socket directory under /tmp is checked before use (issue 11 item 16)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from scannerd.socket_dir import UnsafeSocketDirectory, ensure_socket_directory

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a directory owned by another user needs root")


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A sticky, world-writable directory like /tmp."""
    d = tmp_path / "tmp"
    d.mkdir()
    d.chmod(0o1777)
    yield d


def test_made_fresh_with_a_private_mode(shared: Path) -> None:
    target = shared / f"scannerd-{os.geteuid()}"
    ensure_socket_directory(str(target))
    st = target.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert not st.st_mode & 0o022
    ensure_socket_directory(str(target))  # ours already: fine again


def test_writable_by_others_is_refused(shared: Path) -> None:
    target = shared / "scannerd-1000"
    target.mkdir()
    target.chmod(0o777)
    with pytest.raises(UnsafeSocketDirectory, match=r"has mode 0777: others may replace the socket; expected no write access .*chmod go-w"):
        ensure_socket_directory(str(target))


def test_a_planted_symlink_is_refused(shared: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    target = shared / "scannerd-1000"
    target.symlink_to(elsewhere)
    with pytest.raises(UnsafeSocketDirectory, match="is a symbolic link in the shared directory"):
        ensure_socket_directory(str(target))


def test_a_file_in_its_place_is_refused(shared: Path) -> None:
    target = shared / "scannerd-1000"
    target.write_text("")
    with pytest.raises(UnsafeSocketDirectory, match="exists and is not a directory"):
        ensure_socket_directory(str(target))


@needs_root
def test_owned_by_another_user_is_refused(shared: Path) -> None:
    target = shared / "scannerd-1000"
    target.mkdir(mode=0o755)
    os.chown(target, 65534, 65534)
    with pytest.raises(UnsafeSocketDirectory, match=r"belongs to uid 65534, not to this user \(uid 0\)"):
        ensure_socket_directory(str(target))


def test_outside_a_shared_directory_the_owner_of_the_parent_decides(tmp_path: Path) -> None:
    # /run/scannerd, $XDG_RUNTIME_DIR, a site's directory: made as before, group-writable allowed.
    parent = tmp_path / "run"
    parent.mkdir(mode=0o755)
    target = parent / "his"
    target.mkdir()
    target.chmod(0o775)
    ensure_socket_directory(str(target))
    ensure_socket_directory(str(parent / "new" / "deeper"))
    assert (parent / "new" / "deeper").is_dir()
