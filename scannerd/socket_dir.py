"""The directory a Unix socket lives in, made or checked before the socket is bound there.

Under a directory anyone can write to (the non-root fallback /tmp/scannerd-<uid>), another user
may have made our directory first, or left a symlink there, to receive the HIS's connections
and with them every payment code. Such a directory is refused with a message saying what to do,
never used. Elsewhere (/run/scannerd from systemd, $XDG_RUNTIME_DIR, a site's own directory)
the parent's owner already decides who may create it, and the directory is made as before.
"""

from __future__ import annotations

import os
import stat

__all__ = ["UnsafeSocketDirectory", "ensure_socket_directory"]


class UnsafeSocketDirectory(OSError):
    """The socket's directory could be someone else's: the message says whose and how to fix."""


def ensure_socket_directory(directory: str, mode: int = 0o755) -> None:
    """Create `directory` (mode `mode`, parents too) or check the one that is there."""
    directory = directory or "."
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    shared_parent = bool(os.stat(parent).st_mode & stat.S_IWOTH)
    try:
        os.mkdir(directory, mode)
    except FileExistsError:
        pass
    if not shared_parent:
        if not os.path.isdir(directory):
            raise UnsafeSocketDirectory(f"{directory} exists and is not a directory")
        return
    st = os.lstat(directory)  # not stat(): a symlink planted in /tmp is itself the danger
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeSocketDirectory(f"{directory} is a symbolic link in the shared directory {parent}; "
                                    f"refusing to put the socket where it points (remove it, or set [socket] path)")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSocketDirectory(f"{directory} exists and is not a directory (remove it, or set [socket] path)")
    if st.st_uid not in (euid, 0):
        raise UnsafeSocketDirectory(f"{directory} belongs to uid {st.st_uid}, not to this user (uid {euid}): "
                                    f"another user could read the HIS connections; remove it, or set [socket] path")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeSocketDirectory(f"{directory} has mode {stat.S_IMODE(st.st_mode):04o}: others may replace the "
                                    f"socket; expected no write access for group and others (chmod go-w {directory})")
