"""Name -> component registry filled by plugins, with provenance and aliases.

One `Registry` holds one mapping per component kind (`KINDS`). Every entry remembers which plugin
registered it, so a clash can name both plugins and ``pusa-fw plugins`` can say who contributed what.
The registry is plain data: it imports nothing heavy and never calls a plugin itself (that is the job
of `pusa_fw.plugins`).

Example:
    >>> registry = Registry()
    >>> class Linear:
    ...     name = "linear"
    >>> _ = registry.register("schedules", Linear, plugin="example", aliases=("lin",))
    >>> registry.get("schedules", "lin") is Linear
    True
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import DuplicateComponentError, PluginError, UnknownComponentError

KINDS: tuple[str, ...] = (
    "schedules",
    "conditioning_policies",
    "tasks",
    "samplers",
    "caches",
    "backbones",
    "commands",
    "model_formats",
    "training_sources",
    "train_adapters",
)
"""The component kinds, one per ``register_<kind>`` hook in `pusa_fw.hookspecs`."""

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class RegistryEntry:
    """One registered component.

    Attributes:
        kind: One of `KINDS`.
        name: The canonical name the component is looked up by.
        component: The registered object (usually a class).
        plugin: Name of the plugin that registered it (its entry-point name, or the name it was
            registered under with pluggy).
        aliases: Extra names that resolve to the same component.
    """

    kind: str
    name: str
    component: Any
    plugin: str
    aliases: tuple[str, ...] = ()


def _kind_label(kind: str) -> str:
    """Singular, readable label of a kind for messages (``"conditioning policy"``)."""
    singular = kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]
    return singular.replace("_", " ")


class Registry:
    """Components by kind and name, each with the plugin that registered it."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, RegistryEntry]] = {kind: {} for kind in KINDS}
        self._aliases: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}

    def _check_kind(self, kind: str) -> None:
        if kind not in self._entries:
            raise UnknownComponentError(
                f"unknown component kind {kind!r}; the kinds are: {', '.join(KINDS)}"
            )

    def _check_name(self, kind: str, name: Any, plugin: str, what: str) -> str:
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise PluginError(
                f"plugin {plugin!r} registered a {_kind_label(kind)} with {what} {name!r}: a name must be "
                "a non-empty string of letters, digits, '_', '.' or '-' (pass name='...' to register, "
                "or give the component a `name` attribute)"
            )
        return name

    def _owner_of(self, kind: str, name: str) -> RegistryEntry | None:
        canonical = self._aliases[kind].get(name, name)
        return self._entries[kind].get(canonical)

    def register(
        self,
        kind: str,
        component: Any,
        *,
        plugin: str,
        name: str | None = None,
        aliases: Iterable[str] = (),
    ) -> RegistryEntry:
        """Add a component under a name (and aliases) on behalf of a plugin.

        Args:
            kind: One of `KINDS`.
            component: The object to register.
            plugin: Name of the plugin registering it (recorded as provenance).
            name: Name to register under; defaults to ``component.name``.
            aliases: Further names for the same component.

        Returns:
            The new `RegistryEntry`.

        Raises:
            UnknownComponentError: ``kind`` is not one of `KINDS`.
            PluginError: No usable name (missing, empty, or with spaces).
            DuplicateComponentError: The name or an alias is taken; the message names both plugins.
        """
        self._check_kind(kind)
        if name is None:
            name = getattr(component, "name", None)
            if name is None:
                raise PluginError(
                    f"plugin {plugin!r} registered a {_kind_label(kind)} {component!r} without a name: "
                    "give it a `name` attribute or call register(obj, name='...')"
                )
        if isinstance(aliases, str):
            raise PluginError(
                f"plugin {plugin!r} passed aliases={aliases!r} for {_kind_label(kind)} {name!r}: "
                f"aliases must be a sequence of names, e.g. aliases=({aliases!r},)"
            )
        name = self._check_name(kind, name, plugin, "name")
        alias_tuple = tuple(self._check_name(kind, alias, plugin, "alias") for alias in aliases)
        if len({name, *alias_tuple}) != 1 + len(alias_tuple):
            raise PluginError(
                f"plugin {plugin!r} gave {_kind_label(kind)} {name!r} repeated names/aliases {alias_tuple!r}"
            )
        for candidate in (name, *alias_tuple):
            owner = self._owner_of(kind, candidate)
            if owner is not None:
                raise DuplicateComponentError(
                    f"{_kind_label(kind)} name {candidate!r} is registered twice: by plugin "
                    f"{owner.plugin!r} (as {owner.name!r}) and by plugin {plugin!r}; disable one of "
                    "them with PUSA_FW_DISABLE_PLUGINS=<plugin> or rename the component"
                )
        entry = RegistryEntry(kind=kind, name=name, component=component, plugin=plugin, aliases=alias_tuple)
        self._entries[kind][name] = entry
        for alias in alias_tuple:
            self._aliases[kind][alias] = name
        return entry

    def registrar(self, kind: str, plugin: str) -> Callable[..., RegistryEntry]:
        """The ``register`` callback handed to one plugin's ``register_<kind>`` hook.

        Args:
            kind: One of `KINDS`.
            plugin: The plugin whose hook receives the callback.

        Returns:
            ``register(obj, *, name=None, aliases=()) -> RegistryEntry``.
        """
        self._check_kind(kind)

        def register(
            component: Any, *, name: str | None = None, aliases: Iterable[str] = ()
        ) -> RegistryEntry:
            return self.register(kind, component, plugin=plugin, name=name, aliases=aliases)

        register.__doc__ = f"Register a {_kind_label(kind)} for plugin {plugin!r}: (obj, *, name, aliases)."
        return register

    def entry(self, kind: str, name: str) -> RegistryEntry:
        """Look up the entry for a name or alias.

        Raises:
            UnknownComponentError: Nothing is registered under ``name``; the message lists the known
                names and the closest match.
        """
        self._check_kind(kind)
        found = self._owner_of(kind, name)
        if found is not None:
            return found
        known = self.names(kind, with_aliases=True)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) or "(none: is the plugin that provides it installed and enabled?)"
        raise UnknownComponentError(f"unknown {_kind_label(kind)} {name!r}; known: {listing}.{hint}")

    def get(self, kind: str, name: str) -> Any:
        """The component registered under a name or alias (see `entry` for errors)."""
        return self.entry(kind, name).component

    def names(self, kind: str, *, with_aliases: bool = False) -> list[str]:
        """Sorted canonical names of a kind (plus aliases when ``with_aliases``)."""
        self._check_kind(kind)
        names = list(self._entries[kind])
        if with_aliases:
            names += list(self._aliases[kind])
        return sorted(names)

    def entries(self, kind: str) -> list[RegistryEntry]:
        """Entries of one kind, sorted by name."""
        self._check_kind(kind)
        return [self._entries[kind][name] for name in sorted(self._entries[kind])]

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """What one plugin registered: kind -> sorted names (kinds with nothing are left out)."""
        contributed: dict[str, list[str]] = {}
        for kind in KINDS:
            names = sorted(entry.name for entry in self._entries[kind].values() if entry.plugin == plugin)
            if names:
                contributed[kind] = names
        return contributed

    def __contains__(self, key: object) -> bool:
        """``(kind, name) in registry`` checks a name or alias."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        kind, name = key
        return kind in self._entries and self._owner_of(kind, name) is not None

    # Shorthands used by the CLI and by users.
    def schedule(self, name: str) -> Any:
        """The `TimestepSchedule` class registered under ``name``."""
        return self.get("schedules", name)

    def conditioning_policy(self, name: str) -> Any:
        """The `ConditioningPolicy` class registered under ``name``."""
        return self.get("conditioning_policies", name)

    def task(self, name: str) -> Any:
        """The `Task` class registered under ``name``."""
        return self.get("tasks", name)

    def sampler(self, name: str) -> Any:
        """The sampler rule registered under ``name``."""
        return self.get("samplers", name)

    def cache(self, name: str) -> Any:
        """The `StepCache` class registered under ``name``."""
        return self.get("caches", name)

    def backbone(self, name: str) -> Any:
        """The backbone factory registered under ``name``."""
        return self.get("backbones", name)

    def model_formats(self) -> list[Any]:
        """Every registered `pusa_fw.model_formats.ModelFormat`, sorted by name."""
        return [entry.component for entry in self.entries("model_formats")]
