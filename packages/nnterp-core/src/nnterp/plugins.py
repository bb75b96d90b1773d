"""Plugin discovery and the registries built from it.

Plugins are found through the ``nnterp`` entry-point group and loaded lazily, on the first
call that needs them (never at ``import nnterp``). A plugin that fails to import, or whose
hook raises, is reported once with a `PluginWarning` naming it and its distribution, and is
skipped: everything else keeps working. A status file a plugin registers is checked when it is
first read (`nnterp.status`): an unreadable or malformed one is reported the same way and
ignored. Set ``NNTERP_DISABLE_PLUGINS=1`` to load no
entry points at all (only core's own architectures), for debugging.

Example:
    >>> from nnterp.plugins import get_registry
    >>> registry = get_registry()
    >>> registry.spec_for_class_names(["LlamaForCausalLM"]).name
    'llama'
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from nnterp import hookspecs
from nnterp.errors import PluginError
from nnterp.spec import ArchitectureSpec

ENTRY_POINT_GROUP = "nnterp"
DISABLE_ENV_VAR = "NNTERP_DISABLE_PLUGINS"
CORE_DISTRIBUTION = "nnterp-core"

#: Rank of a plugin's registrations: higher wins when two plugins cover one class.
_RANKS = {CORE_DISTRIBUTION: 0, "nnterp-models-contrib": 1, "nnterp-interventions": 1}
THIRD_PARTY_RANK = 2


class PluginWarning(UserWarning):
    """A plugin failed to load, raised in a hook, or registered an invalid file, and what
    failed was skipped."""


@dataclass(frozen=True)
class PluginInfo:
    """One loaded (or failed) plugin: its entry-point name, distribution and version."""

    name: str
    distribution: str
    version: str
    error: str | None = None

    @property
    def rank(self) -> int:
        return _RANKS.get(self.distribution, THIRD_PARTY_RANK)


@dataclass(frozen=True)
class Intervention:
    """A named intervention registered by a plugin.

    Attributes:
        name: The name the CLI runs it by (``nnterp run NAME``).
        function: ``function(model, prompts, **kwargs)``.
        description: One line saying what it computes.
        render: Optional ``render(model, prompts, result, top_k=5) -> str`` giving a readable summary.
        plugin: The plugin that registered it.
    """

    name: str
    function: Callable[..., Any]
    description: str
    plugin: PluginInfo
    render: Callable[..., str] | None = None


@dataclass(frozen=True)
class Command:
    """A CLI subcommand registered by a plugin (``nnterp NAME ...``)."""

    name: str
    run: Callable[[Any], int]
    help: str
    add_arguments: Callable[[Any], None] | None
    plugin: PluginInfo


@dataclass
class Registry:
    """Everything the plugins registered: architecture specs, interventions, status files
    (with ``status_file_owners`` mapping each file to the plugin that registered it), CLI
    commands, and the model types known to be unsupported (``{model_type: reason}``)."""

    plugins: list[PluginInfo] = field(default_factory=list)
    architectures: list[tuple[ArchitectureSpec, PluginInfo]] = field(default_factory=list)
    interventions: dict[str, Intervention] = field(default_factory=dict)
    status_files: list[str] = field(default_factory=list)
    status_file_owners: dict[str, PluginInfo] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    unsupported_models: dict[str, str] = field(default_factory=dict)
    #: Config overrides that build a tiny model of an unsupported type whose default config
    #: shrinks into an invalid one, so the sweep still runs it (``{model_type: overrides}``).
    unsupported_tiny_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def spec_for_model(self, model: Any) -> ArchitectureSpec | None:
        """The winning spec for ``model``'s class, or the nearest base class a spec covers
        (`spec_for_class_names` over its MRO).

        Example:
            >>> get_registry().spec_for_model(hf_llama).name
            'llama'
        """
        return self.spec_for_class_names(klass.__name__ for klass in type(model).__mro__)

    def spec_for_class_names(self, class_names: Iterable[str]) -> ArchitectureSpec | None:
        """The winning spec for the first class name (e.g. a model's MRO) that any spec covers.

        Raises:
            PluginError: two plugins of the same rank cover that class.
        """
        for class_name in class_names:
            candidates = [
                (spec, plugin)
                for spec, plugin in self.architectures
                if class_name in spec.model_classes
            ]
            if not candidates:
                continue
            best_rank = max(plugin.rank for _, plugin in candidates)
            best = [(spec, plugin) for spec, plugin in candidates if plugin.rank == best_rank]
            owners = {plugin.name for _, plugin in best}
            if len(owners) > 1:
                listed = ", ".join(
                    f"{spec.name!r} from plugin {plugin.name!r} ({plugin.distribution})"
                    for spec, plugin in best
                )
                raise PluginError(
                    f"{class_name} is registered by several plugins of the same rank: {listed}. "
                    f"Uninstall one of them, or pass spec=... to StandardizedTransformer to choose."
                )
            return best[-1][0]
        return None

    def plugin_for_spec(self, spec: ArchitectureSpec) -> PluginInfo | None:
        """The plugin that registered ``spec`` (``None`` for a spec the user passed)."""
        for registered, plugin in self.architectures:
            if registered is spec:
                return plugin
        return None


_lock = threading.Lock()
_registry: Registry | None = None
_reported: set[str] = set()


def report_once(key: str, message: str) -> None:
    """Warn ``message`` as a `PluginWarning` the first time ``key`` is reported in this
    process (until `reset_registry`); later reports of the same key are silent.

    Example:
        >>> report_once("status-file:/tmp/s.json", "plugin 'x' registered an invalid file ...")
    """
    if key not in _reported:
        _reported.add(key)
        warnings.warn(message, PluginWarning, stacklevel=3)


_warn_once = report_once


def _entry_point_plugins() -> list[tuple[Any, PluginInfo]]:
    if os.environ.get(DISABLE_ENV_VAR, "").strip() not in ("", "0"):
        return []
    loaded = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else "unknown"
        version = entry_point.dist.version if entry_point.dist else "unknown"
        try:
            plugin = entry_point.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break nnterp
            info = PluginInfo(entry_point.name, distribution, version, f"import failed: {error!r}")
            _warn_once(
                f"import:{entry_point.name}",
                f"nnterp plugin {entry_point.name!r} from {distribution} {version} failed to "
                f"import and was skipped: {error!r}",
            )
            loaded.append((None, info))
            continue
        loaded.append((plugin, PluginInfo(entry_point.name, distribution, version)))
    return loaded


def _call_hook(hook_name: str, plugin: Any, info: PluginInfo, register: Callable) -> str | None:
    function = getattr(plugin, hook_name, None)
    if function is None:
        return None
    try:
        function(register=register)
    except Exception as error:  # noqa: BLE001 - a broken plugin must not break nnterp
        _warn_once(
            f"{hook_name}:{info.name}",
            f"nnterp plugin {info.name!r} from {info.distribution} {info.version} raised in "
            f"{hook_name} and its registrations were skipped: {error!r}",
        )
        return f"{hook_name} raised: {error!r}"
    return None


def build_registry(extra_plugins: Iterable[tuple[Any, PluginInfo]] = ()) -> Registry:
    """Load every plugin and collect its registrations into a fresh `Registry`.

    Hook implementations are validated against the specs in `nnterp.hookspecs` by pluggy.
    """
    from importlib.metadata import version as dist_version

    from nnterp import architectures

    manager = pluggy.PluginManager("nnterp")
    manager.add_hookspecs(hookspecs)
    core = PluginInfo("core", CORE_DISTRIBUTION, _safe_version(dist_version, CORE_DISTRIBUTION))
    registry = Registry()
    for plugin, info in [(architectures, core), *_entry_point_plugins(), *extra_plugins]:
        if plugin is None:
            registry.plugins.append(info)
            continue
        try:
            manager.register(plugin, name=info.name)
        except Exception as error:  # noqa: BLE001 - e.g. a hook with a wrong signature
            registry.plugins.append(PluginInfo(info.name, info.distribution, info.version, repr(error)))
            _warn_once(f"register:{info.name}", f"nnterp plugin {info.name!r} from "
                       f"{info.distribution} is invalid and was skipped: {error!r}")
            continue
        staged_specs: list[tuple[ArchitectureSpec, PluginInfo]] = []
        staged_interventions: list[Intervention] = []

        def register_spec(spec: ArchitectureSpec, _info: PluginInfo = info) -> None:
            if not isinstance(spec, ArchitectureSpec):
                raise TypeError(f"register() takes an ArchitectureSpec, got {type(spec).__name__}")
            staged_specs.append((spec, _info))

        def register_intervention(
            name: str,
            function: Callable[..., Any],
            description: str = "",
            render: Callable[..., str] | None = None,
            _info: PluginInfo = info,
        ) -> None:
            if not callable(function):
                raise TypeError(f"intervention {name!r} is not callable")
            staged_interventions.append(Intervention(name, function, description, _info, render))

        staged_status: list[str] = []
        staged_commands: list[Command] = []
        staged_unsupported: dict[str, str] = {}
        staged_tiny: dict[str, dict[str, Any]] = {}

        def register_unsupported(model_type: str, reason: str, tiny_config: dict[str, Any] | None = None) -> None:
            if not isinstance(model_type, str) or not isinstance(reason, str) or not reason:
                raise TypeError("register(model_type, reason) takes two non-empty strings")
            if tiny_config is not None and not isinstance(tiny_config, dict):
                raise TypeError("register(..., tiny_config=...) takes a dict of config overrides")
            staged_unsupported[model_type] = reason
            if tiny_config:
                staged_tiny[model_type] = dict(tiny_config)

        def register_command(
            name: str,
            run: Callable[[Any], int],
            help: str = "",
            add_arguments: Callable[[Any], None] | None = None,
            _info: PluginInfo = info,
        ) -> None:
            staged_commands.append(Command(name, run, help, add_arguments, _info))

        errors = [
            _call_hook("register_architectures", plugin, info, register_spec),
            _call_hook("register_interventions", plugin, info, register_intervention),
            _call_hook("register_status_files", plugin, info, lambda path: staged_status.append(str(path))),
            _call_hook("register_commands", plugin, info, register_command),
            _call_hook("register_unsupported_models", plugin, info, register_unsupported),
        ]
        hook_errors = "; ".join(e for e in errors if e)
        registry.plugins.append(
            PluginInfo(info.name, info.distribution, info.version, hook_errors or None)
        )
        if errors[0] is None:
            registry.architectures.extend(staged_specs)
        if errors[3] is None:
            registry.commands.update({command.name: command for command in staged_commands})
        if errors[2] is None:
            registry.status_files.extend(staged_status)
            registry.status_file_owners.update({path: info for path in staged_status})
        if errors[4] is None:
            registry.unsupported_models.update(staged_unsupported)
            registry.unsupported_tiny_configs.update(staged_tiny)
        if errors[1] is None:
            for intervention in staged_interventions:
                existing = registry.interventions.get(intervention.name)
                if existing is None or intervention.plugin.rank >= existing.plugin.rank:
                    registry.interventions[intervention.name] = intervention
    return registry


def _safe_version(getter: Callable[[str], str], distribution: str) -> str:
    try:
        return getter(distribution)
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "source"


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = build_registry()
        return _registry


def reset_registry() -> None:
    """Forget the registry (and reported warnings) so the next call reloads plugins."""
    global _registry
    with _lock:
        _registry = None
        _reported.clear()
