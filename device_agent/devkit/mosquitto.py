"""Run a real mosquitto broker on loopback, for tests and the virtual fleet.

The broker gets its own configuration in a directory the caller owns (the system configuration is never read:
mosquitto is started with `-c <dir>/mosquitto.conf`), listens only on 127.0.0.1, keeps nothing on disk
(`persistence false`; with `persistence=True`, sessions survive a restart, in that directory) and logs to
`<dir>/mosquitto.log`. Two modes:

- plain: anonymous clients allowed (what a local loopback test needs);
- TLS: mutual TLS, `require_certificate true` and `use_identity_as_username true`, so a device's certificate
  common name (its thing name) is its MQTT username and ACL `%u` patterns confine it to its own topics;
  an optional CRL revokes certificates (mosquitto reads it at start: `restart()` after a revocation), and
  optionally `use_username_as_clientid true`, which makes the certificate's name the client id whatever the
  client sends: as the production IoT policy pins iot:Connect to client/${iot:Connection.Thing.ThingName},
  no certificate can take another client's id and push it off the broker.

Privileges: started as root, mosquitto 2.x switches to user `mosquitto` (or `nobody`) before it loads
certificates, and could then not read our 0600 keys. The configuration therefore sets `user` to the user
running us: as root that is `root`, which mosquitto treats as "keep the current user"; as anyone else the
option has no effect. The broker thus always runs as the caller and reads the caller's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from device_agent.devkit.errors import DevkitError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"  # the only address the broker ever listens on
FALLBACK_BINARY = Path("/usr/sbin/mosquitto")  # Debian installs it outside a normal user's PATH
INSTALL_HINT = "run scripts/ensure-mosquitto to install it from the Debian packages"
_VERSION = re.compile(r"mosquitto version (\d+)\.(\d+)\.(\d+)")
_POLL_S = 0.02
_PORT_ATTEMPTS = 3  # a port picked free can be taken before mosquitto binds it; pick another


class MosquittoError(DevkitError):
    """The broker could not be found, configured, started or stopped."""


class MosquittoNotFoundError(MosquittoError):
    pass


def find_mosquitto() -> Path:
    """The mosquitto binary: on PATH, else Debian's /usr/sbin/mosquitto."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if FALLBACK_BINARY.is_file() and os.access(FALLBACK_BINARY, os.X_OK):
        return FALLBACK_BINARY
    raise MosquittoNotFoundError(
        f"mosquitto is not installed (not on PATH nor at {FALLBACK_BINARY}); {INSTALL_HINT}"
    )


def mosquitto_version(binary: Path | None = None) -> tuple[int, int, int]:
    """The broker's version, from the first line of `mosquitto -h` (which exits non-zero by design)."""
    binary = binary or find_mosquitto()
    try:
        done = subprocess.run(
            [str(binary), "-h"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MosquittoError(f"cannot run {binary} -h") from exc
    match = _VERSION.search(done.stdout + done.stderr)
    if not match:
        raise MosquittoError(f"{binary} -h did not print a mosquitto version")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsListener:
    """Mutual TLS for the listener: clients must present a certificate the CA signed (and not revoked)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path | None = None
    # The client id becomes the certificate's name: one connection per identity, and no id taken over.
    client_id_from_certificate: bool = False


@dataclass(frozen=True, slots=True)
class AclRule:
    access: Literal["read", "write", "readwrite", "deny"]
    topic: str  # may use %u (username = thing name under TLS) and %c (client id) in `pattern` rules


# A device publishes its data and subscribes to its commands, nothing else.
DEVICE_PATTERNS: tuple[AclRule, ...] = (
    AclRule("write", "dt/device-agent/%u/#"),
    AclRule("read", "cmd/device-agent/%u/#"),
)


def write_acl(
    path: Path,
    *,
    patterns: Sequence[AclRule] = DEVICE_PATTERNS,
    users: Mapping[str, Sequence[AclRule]] | None = None,
) -> Path:
    """Write a mosquitto acl_file: `pattern` rules apply to every client, `user` blocks to one username.

    In mosquitto 2.x "read" covers subscribing and receiving, "write" publishing; whatever no rule grants is
    denied (a denied QoS 1 publish gets a NOT_AUTHORIZED PUBACK under MQTT 5).
    """
    lines = ["# written by device-agent devkit"]
    lines += [f"pattern {_acl_line(rule)}" for rule in patterns]
    for user, rules in (users or {}).items():
        _check_config_value(user, "ACL user")
        lines += ["", f"user {user}"]
        lines += [f"topic {_acl_line(rule)}" for rule in rules]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _acl_line(rule: AclRule) -> str:
    _check_config_value(rule.topic, "ACL topic")
    if not rule.topic or " " in rule.topic:
        raise MosquittoError(f"invalid ACL topic {rule.topic!r}")
    return f"{rule.access} {rule.topic}"


def _check_config_value(value: str, what: str) -> None:
    # One option per line: a newline in a value would smuggle in another option.
    if "\n" in value or "\r" in value or "\0" in value:
        raise MosquittoError(f"invalid {what}: it contains a line break")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class MosquittoBroker:
    """A mosquitto process on 127.0.0.1 that this object starts, restarts and stops.

    Use `async with MosquittoBroker(dir) as broker:` or `await broker.start()` / `await broker.stop()`.
    The port is chosen once (or given) and kept across `restart()`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: TlsListener | None = None,
        acl_file: Path | None = None,
        binary: Path | None = None,
        persistence: bool = False,
        log_deliveries: bool = False,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.acl_file = acl_file
        # Sessions and queued QoS 1 messages survive a restart (saved on SIGTERM into the directory): what a
        # subscriber with a persistent session needs so that nothing published while it reconnects is lost.
        self.persistence = persistence
        # mosquitto's debug log: a line per packet, "Sending PUBLISH to <client id> (..., '<topic>', ...)" for
        # each message it delivers; diagnostics and tests (it grows with the traffic).
        self.log_deliveries = log_deliveries
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self._port = port
        self._port_given = port is not None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise MosquittoError("the broker has no port yet: start it first")
        return self._port

    @property
    def url(self) -> str:
        """The endpoint for MqttBridge: mqtt://127.0.0.1:PORT, or mqtts:// in TLS mode."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """The broker's log so far (diagnostics; mosquitto logs no key material)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Write the configuration, start mosquitto and wait (bounded) until the port accepts connections."""
        if self.running:
            raise MosquittoError("the broker is already running")
        binary = self._binary or find_mosquitto()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._port is None:
                self._port = free_port()
            self._write_config()
            try:
                await self._spawn_and_wait(binary)
            except _PortTakenError:
                if self._port_given or attempt == _PORT_ATTEMPTS:
                    raise MosquittoError(f"port {self._port} on {HOST} is in use") from None
                logger.info("mosquitto.port_taken port=%d; picking another", self._port)
                self._port = None
            else:
                logger.info(
                    "mosquitto.started pid=%s port=%d tls=%s", self.pid, self._port, self.tls is not None
                )
                return

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; returns once the process is reaped."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if not await _wait_exit(process, self.stop_timeout):
                logger.warning(
                    "mosquitto.kill pid=%d: no exit %.1fs after SIGTERM", process.pid, self.stop_timeout
                )
                process.kill()
                if not await _wait_exit(process, self.stop_timeout):
                    raise MosquittoError(f"mosquitto pid {process.pid} survived SIGKILL")
        logger.info("mosquitto.stopped pid=%d rc=%s", process.pid, process.returncode)

    async def restart(self) -> None:
        """Stop and start again on the same port with the same configuration (re-reads the CRL and ACL)."""
        await self.stop()
        self._port_given = True  # clients reconnect to where the broker was
        await self.start()

    def _write_config(self) -> None:
        lines = [
            "# written by device-agent devkit for one test or virtual fleet; regenerated on every start",
            "per_listener_settings true",
            f"persistence {'true' if self.persistence else 'false'}",
            *([f"persistence_location {_config_path(self.directory)}/"] if self.persistence else []),
            # Keep the caller's user (root stays root) so the broker can read the caller's 0600 keys.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            # A file, not stdout: mosquitto block-buffers a redirected stdout; its file log is line-flushed.
            f"log_dest file {_config_path(self.log_path)}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            *(["log_type debug"] if self.log_deliveries else []),
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            "",
            f"listener {self.port} {HOST}",
        ]
        if self.tls is None:
            lines.append("allow_anonymous true")
        else:
            lines += [
                "allow_anonymous false",
                f"cafile {_config_path(self.tls.ca_file)}",
                f"certfile {_config_path(self.tls.cert_file)}",
                f"keyfile {_config_path(self.tls.key_file)}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
            if self.tls.crl_file is not None:
                lines.append(f"crlfile {_config_path(self.tls.crl_file)}")
            if self.tls.client_id_from_certificate:
                lines.append("use_username_as_clientid true")
        if self.acl_file is not None:
            lines.append(f"acl_file {_config_path(self.acl_file)}")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.config_path.chmod(0o600)

    async def _spawn_and_wait(self, binary: Path) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Our copy of the log descriptor is closed once the child has its own.
            self._process = subprocess.Popen(  # noqa: ASYNC220 - fork/exec is quick; no child-watcher thread
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                cwd=self.directory,
            )
        except OSError as exc:
            raise MosquittoError(f"cannot start {binary}") from exc
        finally:
            os.close(fd)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            # Our own process said it is up (the port could answer for someone else), and the port answers.
            if " running" in self.log_text()[log_offset:] and await _accepts_connections(self.port):
                return
            await asyncio.sleep(_POLL_S)
        failed = self._process
        await self.stop()
        new_log = self.log_text()[log_offset:]
        if "Address already in use" in new_log:
            raise _PortTakenError
        tail = "\n".join(new_log.strip().splitlines()[-8:])
        state = (
            f"exited with {failed.returncode}" if failed.returncode is not None else "did not open its port"
        )
        raise MosquittoError(
            f"mosquitto {state} within {self.start_timeout:.1f}s on {HOST}:{self.port}; log tail:\n{tail}"
        )


class _PortTakenError(Exception):
    pass


def _config_path(path: Path) -> str:
    text = str(path.resolve())
    _check_config_value(text, "path")
    return text


async def _accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _wait_exit(process: subprocess.Popen[bytes], limit_s: float) -> bool:
    # Polling keeps the loop free and needs no child-watcher thread.
    deadline = time.monotonic() + limit_s
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
