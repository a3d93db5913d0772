"""The local nucleus: one virtual device, composed of the IPC server, its services and the lifecycle manager.

A Nucleus owns a root directory laid out like a real Greengrass root (`ipc.socket`, `logs/`, `work/`,
`packages/artifacts*/`, `config/`), plus `iot-core/published.jsonl` for the loopback cloud. It is started
as an async context manager, then given deployments (`deploy`), exactly as `greengrass-cli deployment
create --recipeDir --artifactDir --merge --remove --update-config` would on a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import string
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from device_agent.devkit.authz import Authorizer
from device_agent.devkit.configstore import ConfigStore
from device_agent.devkit.control import ControlServer
from device_agent.devkit.deployment import Deployer, DeploymentRequest, DeploymentResult
from device_agent.devkit.errors import DevkitError, LifecycleError
from device_agent.devkit.ipc.server import Handler, IpcServer
from device_agent.devkit.lifecycle import ComponentState, LifecycleManager
from device_agent.devkit.services.cli import CliService, ComponentInfo
from device_agent.devkit.services.config import ConfigService
from device_agent.devkit.services.iotcore import IotCoreService, IotLink, LoopbackLink
from device_agent.devkit.services.lifecycle_ipc import LifecycleService
from device_agent.devkit.services.pubsub import PubSubService
from device_agent.devkit.services.secrets import SecretService, load_secrets

logger = logging.getLogger(__name__)

NUCLEUS_VERSION = "2.14.0"  # what GGC_VERSION reports; the IPC model matches awsiotsdk 1.31
SUN_PATH_MAX = 108
_TOKEN_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, kw_only=True)
class IotBridgeSettings:
    """Bridge IoT Core traffic to a real MQTT broker instead of the loopback."""

    endpoint: str  # mqtt://127.0.0.1:PORT or mqtts://HOST:PORT
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = None  # defaults to the thing name, as the nucleus uses it


@dataclass(frozen=True, kw_only=True)
class NucleusOptions:
    root: Path
    thing_name: str = "virtual-device"
    region: str = "us-east-1"
    with_cli: bool = False
    skip_install: bool = False
    secrets_file: Path | None = None
    iot_bridge: IotBridgeSettings | None = None
    interpolate_component_configuration: bool = False
    keep_qos0_when_offline: bool = False
    spool_max_bytes: int = int(2.5 * 1024 * 1024)
    # How long a deployment waits for components to answer pre-update events and validation requests.
    component_update_timeout: float = 60.0
    validation_timeout: float = 30.0
    grace_period: float = 5.0
    error_reset_time: float = 3600.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Operations this nucleus answers "not supported", as an older nucleus does (for example
    # "aws.greengrass#SubscribeToIoTCoreConnectionStatus"), so a component's fallback can be tested.
    unsupported_operations: frozenset[str] = frozenset()


class Nucleus:
    def __init__(self, options: NucleusOptions) -> None:
        self.options = options
        self.root = options.root.resolve()
        self.thing_name = options.thing_name
        self._tokens: dict[str, str] = {}  # token -> component
        self._component_tokens: dict[str, str] = {}  # component -> token
        self.authorizer = Authorizer(
            interpolate=self._interpolate_policy if options.interpolate_component_configuration else None
        )
        self.config_store = ConfigStore()
        self.lifecycle = LifecycleManager(
            on_state_change=self._on_state_change,
            error_reset_time=options.error_reset_time,
            grace_period=options.grace_period,
            skip_install=options.skip_install,
        )
        self.pubsub = PubSubService(self.authorizer)
        self.iot = IotCoreService(
            authorizer=self.authorizer,
            published_log=self.root / "iot-core" / "published.jsonl",
            spool_max_bytes=options.spool_max_bytes,
            keep_qos0_when_offline=options.keep_qos0_when_offline,
        )
        self.config_service = ConfigService(self.config_store)
        self.lifecycle_service = LifecycleService(self.lifecycle.report_state)
        self.deployer = Deployer(self)
        self.link: IotLink = LoopbackLink(self.iot)
        self._server: IpcServer | None = None
        self._ipc_handlers: dict[str, Handler] = {}
        self._spooler: asyncio.Task[None] | None = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._log_handler: logging.Handler | None = None
        self.state_listeners: list[Any] = []

    # ---- paths -----------------------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.root / "ipc.socket"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def work_dir(self, component: str) -> Path:
        return self.root / "work" / component

    @property
    def published_log(self) -> Path:
        return self.root / "iot-core" / "published.jsonl"

    # ---- start and stop --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._exit_stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        if len(str(self.socket_path)) >= SUN_PATH_MAX:
            msg = f"root path too long for a Unix socket (max {SUN_PATH_MAX - 1} bytes); use a shorter --root"
            raise DevkitError(msg)
        for directory in (
            self.root,
            self.logs_dir,
            self.root / "work",
            self.root / "packages",
            self.root / "config",
            self.root / "iot-core",
        ):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._open_nucleus_log()
        self._exit_stack.callback(self._close_nucleus_log)
        saved = self.root / "config" / "config.json"
        if saved.exists():
            self.deployer.restore(saved)
        self._ipc_handlers = self._handlers()
        self._server = IpcServer(
            str(self.socket_path), authenticate=self.authenticate, handlers=self._ipc_handlers
        )
        await self._server.start()
        self._exit_stack.push_async_callback(self._close_ipc)
        self.control = ControlServer(self)
        await self.control.start()
        self._exit_stack.push_async_callback(self.control.close)
        # One long-lived background task, owned here: cancelled and awaited on close.
        self._spooler = asyncio.get_running_loop().create_task(self.iot.run(), name="nucleus.iot-spooler")
        self._exit_stack.push_async_callback(self._stop_spooler)
        self.link = await self._make_link()
        self.iot.attach(self.link)
        await self.link.start(wait_connected=None)
        self._exit_stack.push_async_callback(self.link.stop)
        self._exit_stack.push_async_callback(self.lifecycle.shutdown)
        logger.info("nucleus.started root=%s thing=%s", self.root.name, self.thing_name)

    async def _make_link(self) -> IotLink:
        settings = self.options.iot_bridge
        if settings is None:
            return LoopbackLink(self.iot)
        from device_agent.devkit.iot_bridge import MqttBridge  # noqa: PLC0415 - only when bridging

        return MqttBridge(
            endpoint=settings.endpoint,
            client_id=settings.client_id or self.thing_name,
            ca_file=settings.ca_file,
            cert_file=settings.cert_file,
            key_file=settings.key_file,
            on_message=self.iot.on_cloud_message,
            on_connection_change=self.iot.on_connection_change,
        )

    async def _close_ipc(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def restart_ipc(self, downtime: float = 1.0) -> None:
        """Drop every IPC connection and stop listening for `downtime` seconds, then listen again.

        What a component sees when the nucleus restarts: its connection closes, its streams end, and the
        socket refuses connections for a while. Component processes keep running and their tokens stay
        valid, so a well-written component reconnects and re-subscribes by itself.
        """
        if self._server is None:
            msg = "the nucleus is not running"
            raise DevkitError(msg)
        logger.info("nucleus.ipc_restarting downtime_s=%.1f", downtime)
        await self._server.close()
        await asyncio.sleep(downtime)
        self._server = IpcServer(
            str(self.socket_path), authenticate=self.authenticate, handlers=self._ipc_handlers
        )
        await self._server.start()
        logger.info("nucleus.ipc_restarted")

    async def _stop_spooler(self) -> None:
        if self._spooler is not None:
            self._spooler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._spooler
            self._spooler = None

    async def close(self) -> None:
        logger.info("nucleus.stopping")
        with contextlib.suppress(asyncio.CancelledError):
            await self._exit_stack.aclose()

    def _open_nucleus_log(self) -> None:
        path = self.logs_dir / "greengrass.log"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600))  # owner-only
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03dZ [%(levelname)s] (%(threadName)s) %(name)s: %(message)s",
                datefmt="%Y-%m-%dT%H:%M:%S",
            )
        )
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
        handler.setLevel(logging.INFO)
        devkit_logger = logging.getLogger("device_agent.devkit")
        devkit_logger.addHandler(handler)
        if devkit_logger.getEffectiveLevel() > logging.INFO:
            devkit_logger.setLevel(logging.INFO)
        self._log_handler = handler

    def _close_nucleus_log(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("device_agent.devkit").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    # ---- IPC wiring ------------------------------------------------------------------------------------

    def _handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {}
        handlers.update(self.pubsub.handlers())
        handlers.update(self.iot.handlers())
        handlers.update(self.config_service.handlers())
        handlers.update(self.lifecycle_service.handlers())
        if self.options.with_cli:
            handlers.update(CliService(self.authorizer, self).handlers())
        if self.options.secrets_file is not None:
            handlers.update(
                SecretService(self.authorizer, load_secrets(self.options.secrets_file)).handlers()
            )
        unknown = self.options.unsupported_operations - handlers.keys()
        if unknown:
            raise DevkitError(
                f"unsupported_operations names operations this nucleus does not serve: {sorted(unknown)}"
            )
        for operation in self.options.unsupported_operations:
            del handlers[operation]
        return handlers

    def authenticate(self, token: str) -> str | None:
        return self._tokens.get(token)

    def issue_token(self, component: str) -> str:
        """A component's SVCUID: 16 random upper-case characters, as the nucleus makes them."""
        existing = self._component_tokens.get(component)
        if existing is not None:
            return existing
        while True:
            token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16))
            if token not in self._tokens:
                break
        self._tokens[token] = component
        self._component_tokens[component] = token
        return token

    def revoke_token(self, component: str) -> None:
        token = self._component_tokens.pop(component, None)
        if token is not None:
            self._tokens.pop(token, None)

    def component_env(self, component: str) -> dict[str, str]:
        """The environment the nucleus gives a component's processes (greengrass-ipc.md §6.1)."""
        env = dict(os.environ)
        env.update(self.options.extra_env)
        token = self.issue_token(component)
        socket_path = str(self.socket_path)
        for_component = socket_path if len(socket_path) < SUN_PATH_MAX else "../../ipc.socket"
        # The device kit's own interpreter first on PATH, so a recipe's `python3` finds awsiotsdk.
        python_bin = str(Path(sys.executable).parent)
        env.update(
            {
                "SVCUID": token,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
                "GG_ROOT_CA_PATH": "",
                "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH": socket_path,
                "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": for_component,
                "AWS_IOT_THING_NAME": self.thing_name,
                "AWS_REGION": self.options.region,
                "AWS_DEFAULT_REGION": self.options.region,
                "GGC_VERSION": NUCLEUS_VERSION,
                "PATH": os.pathsep.join([python_bin, env.get("PATH", ""), "/bin:/usr/bin:/sbin:/usr/sbin"]),
            }
        )
        env.setdefault("HOME", str(Path.home()))
        return env

    def _interpolate_policy(self, component: str, text: str) -> str:
        return self.deployer.interpolate_for(component, text)

    # ---- deployments and control -----------------------------------------------------------------------

    async def deploy(self, request: DeploymentRequest) -> DeploymentResult:
        return await self.deployer.deploy(request)

    def states(self) -> dict[str, ComponentState]:
        return self.lifecycle.states()

    async def wait_for_state(
        self, component: str, states: ComponentState | tuple[ComponentState, ...], timeout: float = 30.0
    ) -> ComponentState:
        wanted = states if isinstance(states, tuple) else (states,)
        return await self.lifecycle.wait_for_state(component, wanted, timeout)

    def component_infos(self) -> list[ComponentInfo]:
        infos = []
        for name, deployed in sorted(self.deployer.deployed.items()):
            try:
                configuration = self.config_store.get(name, [])
            except DevkitError:
                configuration = {}
            state = self.lifecycle.state(name)
            infos.append(ComponentInfo(name, deployed.recipe.version, str(state), configuration))
        return infos

    async def restart_component(self, name: str) -> None:
        if name not in self.deployer.deployed:
            raise LifecycleError(f"component {name} is not deployed")
        await self.lifecycle.restart(name)

    async def stop_component(self, name: str) -> None:
        if name not in self.deployer.deployed:
            raise LifecycleError(f"component {name} is not deployed")
        await self.lifecycle.stop(name)

    async def set_offline(self, offline: bool) -> None:
        await self.link.set_offline(offline)

    def _on_state_change(self, name: str, old: ComponentState, new: ComponentState) -> None:
        logger.info("lifecycle.state_changed component=%s from=%s to=%s", name, old, new)
        for listener in list(self.state_listeners):
            listener(name, old, new)
