"""A real mosquitto for the MQTT tests: free loopback port, a config file we write, optional
password file and TLS listener with a CA and server certificate made here with `cryptography`.

If mosquitto cannot start, MosquittoError says why (binary missing, config refused, port never
opened) and the tests that need it fail: CI must not silently skip the broker tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Broker", "MosquittoError", "TlsFiles", "find_mosquitto", "free_port", "make_ca", "make_tls_files"]


class MosquittoError(RuntimeError):
    """The test broker could not be started; the message says what to install or fix."""


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if path is None:
        raise MosquittoError("mosquitto not found on PATH or at /usr/sbin/mosquitto: apt-get install mosquitto mosquitto-clients")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(directory: Path, name: str) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Ca(cert, key, path)


def make_tls_files(directory: Path, ca: Ca, host: str = "127.0.0.1") -> TlsFiles:
    """A server certificate for `host` (IP SAN and localhost DNS SAN) signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_file = directory / "server.crt"
    key_file = directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    return TlsFiles(ca.path, cert_file, key_file)


# -- the broker --------------------------------------------------------------------------------


@dataclass
class Broker:
    """One mosquitto process. `start()`/`stop()` may be repeated: it comes back on the same ports.

    Listeners: `port` (anonymous), and when configured `auth_port` (password file only) and
    `tls_port` (TLS with `tls`'s server certificate, anonymous).
    """

    directory: Path
    users: dict[str, str] = field(default_factory=dict)
    tls: TlsFiles | None = None
    host: str = "127.0.0.1"
    # Keep sessions and queued QoS 1 messages across stop()/start() (mosquitto's own db file),
    # so a subscriber with clean_session=False misses nothing published while it reconnects.
    persistent: bool = False
    port: int = field(default_factory=free_port)
    auth_port: int | None = None
    tls_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.users and self.auth_port is None:
            self.auth_port = free_port()
        if self.tls is not None and self.tls_port is None:
            self.tls_port = free_port()
        self.log_file = self.directory / "mosquitto.log"
        self.conf_file = self.directory / "mosquitto.conf"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings true",
            *(["persistence true", f"persistence_location {self.directory}/"] if self.persistent else ["persistence false"]),
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
            # As root, mosquitto would switch to the `mosquitto` user and lose read access to
            # the 0600 key and password files the test wrote.
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
        ]
        if self.users:
            pw = self.directory / "passwd"
            pw.unlink(missing_ok=True)
            for i, (user, password) in enumerate(self.users.items()):
                args = ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password]
                try:
                    subprocess.run(args, check=True, capture_output=True, timeout=10)
                except FileNotFoundError:
                    raise MosquittoError("mosquitto_passwd not found: apt-get install mosquitto") from None
                except subprocess.CalledProcessError as e:
                    raise MosquittoError(f"mosquitto_passwd failed: {e.stderr.decode(errors='replace')}") from None
            lines += [f"listener {self.auth_port} {self.host}", "allow_anonymous false", f"password_file {pw}"]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                "allow_anonymous true",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        self.conf_file.write_text("\n".join(lines) + "\n")

    @property
    def ports(self) -> list[int]:
        return [p for p in (self.port, self.auth_port, self.tls_port) if p is not None]

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        binary = find_mosquitto()
        self.proc = subprocess.Popen([binary, "-c", str(self.conf_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        pending = set(self.ports)
        while pending:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise MosquittoError(
                    f"mosquitto exited with {self.proc.returncode} before listening on {sorted(pending)}:\n{out}\n{self.log_tail()}"
                )
            for port in list(pending):
                try:
                    with socket.create_connection((self.host, port), timeout=0.2):
                        pending.discard(port)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                self.stop()
                raise MosquittoError(f"mosquitto did not listen on {sorted(pending)} within {timeout}s:\n{self.log_tail()}")
            if pending:
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no mosquitto log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
