"""`scannerd install [--prefix /] [--dry-run]`: put the service files in place.

Copies the systemd unit, the sysusers.d file, the udev rules and the modules-load.d list under
PREFIX/etc, creates PREFIX/etc/scannerd/config.toml from the example when there is none (never
overwrites it), and prints the commands that activate it all.  It changes nothing outside
PREFIX and starts nothing: the technician runs the printed commands (or an image build does).

The files have one source of truth, systemd/ and udev/ in the source tree.  A checkout finds
them beside the package; a pip-installed wheel carries them as data files under
<sys.prefix>/share/scannerd/ (pyproject.toml [tool.setuptools.data-files]).
"""

from __future__ import annotations

import argparse
import grp
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXEC = "/usr/local/bin/scannerd"
CONFIG_DEST = "etc/scannerd/config.toml"
# The daemon's group (systemd/scannerd.sysusers): it reads config.toml, others do not.
CONFIG_GROUP = "scannerd"
# Where ProtectHome=/PrivateTmp= hide files from the service: an ExecStart= there cannot run.
_HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")


@dataclass(frozen=True)
class Asset:
    source: str  # relative to the data root (source tree or share/scannerd)
    dest: str  # relative to PREFIX
    mode: int
    overwrite: bool = True  # False: an existing file is the admin's and is kept
    group: str = ""  # set the file's group to this one when it exists


ASSETS: tuple[Asset, ...] = (
    Asset("systemd/scannerd.service", "etc/systemd/system/scannerd.service", 0o644),
    Asset("systemd/scannerd.sysusers", "etc/sysusers.d/scannerd.conf", 0o644),
    Asset("systemd/scannerd-modules.conf", "etc/modules-load.d/scannerd.conf", 0o644),
    Asset("udev/70-scannerd.rules", "etc/udev/rules.d/70-scannerd.rules", 0o644),
    # The example is refreshed on every install, so an upgraded scannerd shows its new options
    # beside the admin's config; config.toml itself is created once and then left alone.
    Asset("config.toml.example", "etc/scannerd/config.toml.example", 0o644),
    # 0640 root:scannerd: a site soon puts an MQTT password or its hospital's number ranges in
    # it.  Client commands run by HIS users find the socket at its default path without it.
    Asset("config.toml.example", CONFIG_DEST, 0o640, overwrite=False, group=CONFIG_GROUP),
)


class InstallError(Exception):
    pass


def data_roots() -> list[Path]:
    """Where the service files may be, most specific first."""
    package = Path(__file__).resolve().parents[1]
    roots = [
        package.parent,  # a source checkout (or an editable install): <repo>/systemd, <repo>/udev
    ]
    for base in (sys.prefix, sysconfig.get_path("data"), site.getuserbase()):
        roots.append(Path(base) / "share" / "scannerd")
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def find_data(relpath: str) -> Path:
    for root in data_roots():
        candidate = root / relpath
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(r / relpath) for r in data_roots())
    raise InstallError(f"{relpath} not found (searched {searched}); is scannerd installed completely?")


def default_exec() -> str:
    """The scannerd that runs this command: the console script beside this interpreter."""
    beside = Path(sys.executable).parent / "scannerd"  # a venv's bin/, not resolved: keep the venv
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("scannerd")
    return os.path.abspath(found) if found else DEFAULT_EXEC


def unit_exec_arg(path: str) -> str:
    """ExecStart='s executable, escaped for a unit file: '%' is a specifier, blanks need quotes."""
    escaped = path.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_unit(text: str, exec_path: str) -> str:
    prefix = f"ExecStart={DEFAULT_EXEC} "
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    if len(hits) != 1:
        raise InstallError(f"unit template: expected one line starting {prefix!r}")
    i = hits[0]
    lines[i] = f"ExecStart={unit_exec_arg(exec_path)} " + lines[i][len(prefix):]
    return "".join(lines)


@dataclass
class Step:
    dest: Path
    action: str  # create | update | unchanged | keep
    content: bytes
    mode: int
    overwrite: bool
    group: str = ""


def group_id(name: str) -> int | None:
    """The gid of `name`, or None when there is no such group (yet: sysusers runs after us)."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def plan(prefix: Path, exec_path: str) -> list[Step]:
    steps: list[Step] = []
    for asset in ASSETS:
        content = find_data(asset.source).read_bytes()
        if asset.source == "systemd/scannerd.service":
            content = render_unit(content.decode(), exec_path).encode()
        dest = prefix / asset.dest
        if dest.exists() or dest.is_symlink():
            if not asset.overwrite:
                action = "keep"
            elif dest.is_file() and dest.read_bytes() == content:
                action = "unchanged"
            else:
                action = "update"
        else:
            action = "create"
        steps.append(Step(dest, action, content, asset.mode, asset.overwrite, asset.group))
    return steps


def write_atomic(dest: Path, content: bytes, mode: int, overwrite: bool = True, gid: int | None = None) -> bool:
    """Write via a temporary file: readers never see half a file.  With overwrite=False the
    final step is link(), which fails if dest appeared meanwhile: an admin's file always wins.
    Returns False when dest was kept."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        if gid is not None:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, mode)  # before it gets its name: never visible with a wider mode
        if overwrite:
            os.replace(tmp, dest)
            return True
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def commands_to_run() -> list[str]:
    # Order matters: the user and group before udev applies GROUP="scannerd", drivers loaded
    # (modules-load.d) before the service resolves its DeviceAllow= classes.
    return [
        "systemd-sysusers /etc/sysusers.d/scannerd.conf",
        # The group exists from here on; install could not give it the config if it did not.
        f"chgrp {CONFIG_GROUP} /{CONFIG_DEST}",
        "systemctl restart systemd-modules-load.service",
        "udevadm control --reload",
        ("udevadm trigger --action=add --subsystem-match=input --subsystem-match=hidraw"
         " --subsystem-match=tty --subsystem-match=usb"),
        "systemctl daemon-reload",
        "systemctl enable --now scannerd.service",
    ]


def install(prefix: Path, exec_path: str, dry_run: bool, out: list[str]) -> int:
    steps = plan(prefix, exec_path)
    would = "would " if dry_run else ""
    for step in steps:
        shown = step.dest
        if step.action == "keep":
            out.append(f"{would}keep      {shown} (exists; never overwritten)")
            continue
        if step.action == "unchanged":
            out.append(f"{would}leave     {shown} (unchanged)")
            if not dry_run:
                os.chmod(step.dest, step.mode)
            continue
        gid = group_id(step.group)
        owner = f", group {step.group}" if gid is not None else ""
        out.append(f"{would}{step.action:<9} {shown} (mode {step.mode:04o}{owner})")
        if step.group and gid is None:
            out.append(f"          (group {step.group} does not exist yet: the chgrp below gives it the file)")
        if not dry_run and not write_atomic(step.dest, step.content, step.mode, step.overwrite, gid):
            out[-1] = f"keep      {shown} (appeared meanwhile; never overwritten)"
    staged = prefix != Path("/")
    out.append("")
    if staged:
        out.append(f"# staged under {prefix}; on the target machine, as root:")
    else:
        out.append("# now, as root:")
    out.extend(commands_to_run())
    out.append("# on an upgrade of a running service: systemctl restart scannerd.service")
    out.append("# then: edit /etc/scannerd/config.toml, `scannerd check-config`, `systemctl reload scannerd`;")
    out.append("#       `systemctl status scannerd` shows the daemon's status line")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "install",
        help="install the systemd unit, sysusers, udev and modules-load files and a config example",
        description=(
            "Copy scannerd.service, the sysusers.d file, 70-scannerd.rules and the modules-load.d "
            "list under PREFIX/etc, create PREFIX/etc/scannerd/config.toml from the example if it "
            "does not exist (an existing config is never touched), and print the commands that "
            "activate them. Nothing is started."
        ),
    )
    p.add_argument("--prefix", default="/", type=Path,
                   help="root to install under (default /; a staging directory for images)")
    p.add_argument("--dry-run", action="store_true", help="show what would be done; write nothing")
    p.add_argument("--exec", dest="exec_path", metavar="PATH",
                   help="scannerd executable for ExecStart= (default: the one running this command)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    exec_path = args.exec_path or default_exec()
    if not os.path.isabs(exec_path):
        print(f"error: --exec must be an absolute path, got {exec_path!r}", file=sys.stderr)
        return 2
    if exec_path.startswith(_HIDDEN_FROM_SERVICE):
        print(f"warning: ExecStart={exec_path} is under a directory the service cannot see "
              "(ProtectHome=/PrivateTmp=); install scannerd under /opt or /usr/local, e.g. "
              "python3 -m venv /opt/scannerd && /opt/scannerd/bin/pip install …", file=sys.stderr)
    out: list[str] = []
    try:
        code = install(Path(args.prefix), exec_path, args.dry_run, out)
    except InstallError as e:
        if out:
            print("\n".join(out))
        print(f"error: {e}", file=sys.stderr)
        return 1
    except PermissionError as e:
        print("\n".join(out))
        print(f"error: {e.filename}: permission denied (run as root for --prefix /)", file=sys.stderr)
        return 1
    print("\n".join(out))
    return code
