"""Local deployments, as `greengrass-cli deployment create` runs them on a device.

One deployment at a time. In order, as the nucleus does it:
1. resolve the target set: what is deployed, plus `merge` (NAME=VERSION), minus `remove`, plus every
   component a target depends on (the newest local recipe that satisfies the requirement);
2. compute each component's proposed configuration (RESET, then MERGE, over the recipe defaults or the
   configuration in force) and check its accessControl policies;
3. tell components subscribed to component updates, and wait while any of them defers;
4. ask running components that validate configuration; one rejection fails the deployment and nothing
   changes;
5. apply: remove, install artifacts, update configuration (subscribers get their events without a
   restart), reload policies, and (re)start what is new or whose version or interpolated lifecycle changed;
6. send the post-update event and save the configuration under the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent.devkit.authz import Authorizer
from device_agent.devkit.errors import DeploymentError, DevkitError
from device_agent.devkit.lifecycle import ComponentSpec
from device_agent.devkit.recipe_model import DependencyType, Recipe
from device_agent.devkit.recipes import (
    InterpolationContext,
    install_artifacts,
    interpolate,
    interpolate_lifecycle,
    load_recipe_dir,
    parse_version,
    satisfies,
)

if TYPE_CHECKING:
    from device_agent.devkit.nucleus import Nucleus

logger = logging.getLogger(__name__)

MAX_DEFERRAL_SECONDS = 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class DeploymentRequest:
    recipe_dir: Path | None = None
    artifact_dir: Path | None = None
    # NAME -> VERSION; an empty version means the newest recipe of that name in the catalog.
    merge: Mapping[str, str] = field(default_factory=dict)
    remove: Sequence[str] = ()
    # NAME -> {"MERGE": {...}, "RESET": ["/json/pointer", ...]}, as `--update-config` takes it.
    update_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deployment_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeploymentResult:
    deployment_id: str
    status: str  # SUCCEEDED or FAILED
    reason: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def as_json(self) -> dict[str, str]:
        return {"deploymentId": self.deployment_id, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class DeployedComponent:
    recipe: Recipe  # as written (lifecycle not interpolated)
    artifact_dir: Path | None
    spec: ComponentSpec  # what the lifecycle manager runs (interpolated)


@dataclass(frozen=True, kw_only=True)
class _CatalogEntry:
    recipe: Recipe
    artifact_dir: Path | None


class Deployer:
    def __init__(self, nucleus: Nucleus) -> None:
        self._nucleus = nucleus
        self._catalog: dict[str, dict[str, _CatalogEntry]] = {}
        self.deployed: dict[str, DeployedComponent] = {}
        self.history: list[DeploymentResult] = []
        self._lock = asyncio.Lock()
        # One timestamp per deployment, for proposing and applying alike (as the nucleus stamps a merge).
        self._timestamp = time.time()

    # ---- catalog --------------------------------------------------------------------------------------

    def add_recipes(self, recipe_dir: Path, artifact_dir: Path | None) -> list[Recipe]:
        recipes = load_recipe_dir(recipe_dir)
        for recipe in recipes:
            self._catalog.setdefault(recipe.name, {})[recipe.version] = _CatalogEntry(
                recipe=recipe, artifact_dir=artifact_dir
            )
        return recipes

    def catalog_names(self) -> list[str]:
        return sorted(self._catalog)

    def _newest(self, name: str, requirement: str = "*") -> _CatalogEntry | None:
        versions = [v for v in self._catalog.get(name, {}) if satisfies(v, requirement)]
        if not versions:
            return None
        return self._catalog[name][max(versions, key=parse_version)]

    # ---- interpolation ----------------------------------------------------------------------------------

    def _context(
        self, recipe: Recipe, configuration: Mapping[str, Any], recipes: Mapping[str, Recipe]
    ) -> InterpolationContext:
        dependencies = {}
        for dep_name in recipe.dependencies:
            dep = recipes.get(dep_name)
            if dep is None:
                continue
            dep_config = self._config_or_empty(dep_name)
            dependencies[dep_name] = InterpolationContext(
                component_name=dep.name,
                component_version=dep.version,
                root=self._nucleus.root,
                thing_name=self._nucleus.thing_name,
                configuration=dep_config,
            )
        return InterpolationContext(
            component_name=recipe.name,
            component_version=recipe.version,
            root=self._nucleus.root,
            thing_name=self._nucleus.thing_name,
            configuration=configuration,
            dependencies=dependencies,
        )

    def _config_or_empty(self, name: str) -> Mapping[str, Any]:
        try:
            value = self._nucleus.config_store.get(name, [])
        except DevkitError:
            return {}
        return value if isinstance(value, dict) else {}

    def interpolate_for(self, component: str, text: str) -> str:
        deployed = self.deployed.get(component)
        if deployed is None:
            return text
        recipes = {name: d.recipe for name, d in self.deployed.items()}
        return interpolate(text, self._context(deployed.recipe, self._config_or_empty(component), recipes))

    # ---- the deployment ----------------------------------------------------------------------------------

    async def deploy(self, request: DeploymentRequest) -> DeploymentResult:
        deployment_id = request.deployment_id or str(uuid.uuid4())
        async with self._lock:
            try:
                await self._deploy(deployment_id, request)
            except DevkitError as exc:
                result = DeploymentResult(deployment_id=deployment_id, status="FAILED", reason=str(exc))
                logger.warning("deployment.failed id=%s reason=%s", deployment_id, exc)
            else:
                result = DeploymentResult(deployment_id=deployment_id, status="SUCCEEDED")
                logger.info("deployment.succeeded id=%s", deployment_id)
            self.history.append(result)
            return result

    def _resolve_targets(self, request: DeploymentRequest) -> dict[str, Recipe]:
        target = {name: d.recipe.version for name, d in self.deployed.items()}
        for name in request.remove:
            if name not in target:
                raise DeploymentError(f"cannot remove {name}: it is not deployed")
            del target[name]
        for name, version in request.merge.items():
            entry = self._newest(name) if not version else self._catalog.get(name, {}).get(version)
            if entry is None:
                wanted = f"{name}={version}" if version else name
                raise DeploymentError(f"no recipe for {wanted} in the recipe folder")
            target[name] = entry.recipe.version
        recipes = {
            name: self._catalog[name][version].recipe
            for name, version in target.items()
            if version in self._catalog.get(name, {})
        }
        recipes.update(
            {name: d.recipe for name, d in self.deployed.items() if name in target and name not in recipes}
        )
        pending = list(recipes)
        while pending:
            recipe = recipes[pending.pop()]
            for dep in recipe.dependencies.values():
                present = recipes.get(dep.name)
                if present is not None:
                    if not satisfies(present.version, dep.version_requirement):
                        raise DeploymentError(
                            f"{recipe.name} needs {dep.name} {dep.version_requirement}, "
                            f"but {present.version} is targeted"
                        )
                    continue
                entry = self._newest(dep.name, dep.version_requirement)
                if entry is None:
                    if dep.dependency_type is DependencyType.SOFT:
                        continue
                    raise DeploymentError(
                        f"{recipe.name} depends on {dep.name} {dep.version_requirement}, "
                        "and no local recipe satisfies it"
                    )
                recipes[dep.name] = entry.recipe
                pending.append(dep.name)
        unknown = set(request.update_config) - set(recipes)
        if unknown:
            raise DeploymentError(
                f"--update-config names components that are not in the deployment: {sorted(unknown)}"
            )
        return recipes

    def _propose(
        self, request: DeploymentRequest, recipes: Mapping[str, Recipe]
    ) -> dict[str, dict[str, Any]]:
        proposals: dict[str, dict[str, Any]] = {}
        for name, recipe in recipes.items():
            update: object = request.update_config.get(name) or {}
            if not isinstance(update, Mapping) or set(update) - {"MERGE", "RESET"}:
                raise DeploymentError(f"--update-config for {name} must be an object with MERGE and/or RESET")
            merge = update.get("MERGE")
            reset = update.get("RESET")
            if merge is not None and not isinstance(merge, Mapping):
                raise DeploymentError(f"--update-config {name}.MERGE must be an object")
            if reset is not None and (
                not isinstance(reset, list) or not all(isinstance(p, str) for p in reset)
            ):
                raise DeploymentError(f"--update-config {name}.RESET must be a list of JSON pointers")
            current = self.deployed.get(name)
            if current is not None and current.recipe.version == recipe.version and not update:
                continue
            proposals[name] = self._nucleus.config_store.propose(
                name,
                defaults=dict(recipe.default_configuration),
                merge=merge,
                reset=reset,
                timestamp=self._timestamp,
            )
            # Refuse a policy the nucleus would refuse before anything changes.
            Authorizer().set_component_policies(name, proposals[name].get("accessControl", {}))
        return proposals

    async def _deploy(self, deployment_id: str, request: DeploymentRequest) -> None:
        self._timestamp = time.time()
        if request.recipe_dir is not None:
            self.add_recipes(request.recipe_dir, request.artifact_dir)
        recipes = self._resolve_targets(request)
        removed = [name for name in self.deployed if name not in recipes]
        proposals = self._propose(request, recipes)
        changed = [n for n in recipes if n in proposals or n not in self.deployed]
        if not changed and not removed:
            return
        logger.info("deployment.started id=%s changed=%s removed=%s", deployment_id, changed, removed)
        await self._wait_for_deferrals(deployment_id)
        await self._validate(deployment_id, proposals)
        for name in removed:
            await self._remove(name)
        to_start = [
            name
            for name in _dependency_order(recipes)
            if await self._apply(name, recipes, proposals.get(name))
        ]
        if to_start:
            await self._nucleus.lifecycle.start(to_start)
        self._nucleus.lifecycle_service.notify_post_update(deployment_id)
        self.save()

    async def _wait_for_deferrals(self, deployment_id: str) -> None:
        service = self._nucleus.lifecycle_service
        deadline = time.monotonic() + MAX_DEFERRAL_SECONDS
        while service.subscribers():
            deferrals = await service.notify_pre_update(
                deployment_id, timeout=self._nucleus.options.component_update_timeout
            )
            if not deferrals:
                return
            wait = max(d.recheck_after_ms for d in deferrals) / 1000
            logger.info(
                "deployment.deferred id=%s by=%s recheck_after_s=%.1f",
                deployment_id,
                [d.component for d in deferrals],
                wait,
            )
            if time.monotonic() + wait > deadline:
                raise DeploymentError("components kept deferring the update")
            await asyncio.sleep(wait)

    async def _validate(self, deployment_id: str, proposals: Mapping[str, dict[str, Any]]) -> None:
        store = self._nucleus.config_store
        # Only components whose configuration would really change are asked (the nucleus's willNodeChange).
        to_check = {
            name: cfg
            for name, cfg in proposals.items()
            if name in self.deployed and store.will_change(name, cfg, timestamp=self._timestamp)
        }
        reports = await self._nucleus.config_service.validate(
            deployment_id, to_check, timeout=self._nucleus.options.validation_timeout
        )
        rejected = [r for r in reports if not r.accepted]
        if rejected:
            reasons = "; ".join(f"{r.component}: {r.message or 'rejected'}" for r in rejected)
            raise DeploymentError(f"configuration rejected by validation: {reasons}")

    async def _remove(self, name: str) -> None:
        await self._nucleus.lifecycle.remove(name)
        self._nucleus.authorizer.remove_component(name)
        self._nucleus.config_store.remove_component(name)
        self._nucleus.revoke_token(name)
        del self.deployed[name]
        logger.info("deployment.removed component=%s", name)

    async def _apply(
        self,
        name: str,
        recipes: Mapping[str, Recipe],
        proposal: dict[str, Any] | None,
    ) -> bool:
        """Apply one component; True when it is new and must be started."""
        recipe = recipes[name]
        current = self.deployed.get(name)
        version_changed = current is None or current.recipe.version != recipe.version
        entry = self._catalog.get(name, {}).get(recipe.version)
        artifact_dir = (
            entry.artifact_dir if entry is not None else (current.artifact_dir if current else None)
        )
        if version_changed and recipe.artifacts:
            if artifact_dir is None:
                raise DeploymentError(f"{recipe.ref} has artifacts but no artifact folder was given")
            install_artifacts(recipe, artifact_dir=artifact_dir, root=self._nucleus.root)
        store = self._nucleus.config_store
        if proposal is not None:
            if name in store.components():
                store.apply(name, proposal, timestamp=self._timestamp)
            else:
                store.set_component(name, proposal, timestamp=self._timestamp)
        configuration = self._config_or_empty(name)
        context = self._context(recipe, configuration, recipes)
        work_dir = self._nucleus.work_dir(name)
        spec = ComponentSpec(
            recipe=interpolate_lifecycle(recipe, context),
            work_dir=work_dir,
            env=self._nucleus.component_env(name),
            log_path=self._nucleus.logs_dir / f"{name}.log",
        )
        self.deployed[name] = DeployedComponent(recipe=recipe, artifact_dir=artifact_dir, spec=spec)
        # After `deployed` knows the component: policies interpolate `{iot:thingName}` and friends through it
        # (with interpolateComponentConfiguration), also on a component's first deployment.
        self._nucleus.authorizer.set_component_policies(name, configuration.get("accessControl", {}))
        if current is None:
            await self._nucleus.lifecycle.add(spec)
            return True
        if version_changed or spec.recipe.lifecycle != current.spec.recipe.lifecycle:
            logger.info(
                "deployment.restarting component=%s reason=%s",
                name,
                "version" if version_changed else "lifecycle",
            )
            await self._nucleus.lifecycle.replace(spec)
        return False

    # ---- persistence ------------------------------------------------------------------------------------

    @property
    def _config_file(self) -> Path:
        return self._nucleus.root / "config" / "config.json"

    def save(self) -> None:
        try:
            self._nucleus.config_store.save(self._config_file)
        except (OSError, DevkitError) as exc:
            logger.warning("deployment.config_save_failed error=%s", exc)

    def restore(self, path: Path) -> None:
        """Load the configuration a previous run of this root left, so UpdateConfiguration values survive."""
        from device_agent.devkit.configstore import ConfigStore  # noqa: PLC0415

        try:
            loaded = ConfigStore.load(path)
        except DevkitError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                path.rename(aside)
            logger.warning("nucleus.config_restore_failed error=%s moved_to=%s", exc, aside.name)
            return
        self._nucleus.config_store = loaded
        self._nucleus.config_service = type(self._nucleus.config_service)(loaded)


def _dependency_order(recipes: Mapping[str, Recipe]) -> list[str]:
    """Dependencies first, ties by name so the order is stable; a cycle is a DeploymentError."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in seen or name not in recipes:
            return
        if name in stack:
            raise DeploymentError(f"dependency cycle: {' -> '.join((*stack, name))}")
        for dep in sorted(recipes[name].dependencies):
            visit(dep, (*stack, name))
        seen.add(name)
        order.append(name)

    for name in sorted(recipes):
        visit(name, ())
    return order
