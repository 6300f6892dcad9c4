"""The model registry: `configs/models.yaml` and the entries held in memory.

The file is the user's as much as ours: a hand edit is picked up on the next load, an entry we cannot
understand is kept verbatim (and reported) rather than dropped, keys we do not know are written back, and
a file that does not parse is never overwritten. Every write is atomic (temp + fsync + rename)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import msgspec

from server.fileio import atomic_write
from server.models.paths import normpath
from server.models.schema import ModelConfig, ModelFormat, ModelVariant, PredictionType

log = logging.getLogger(__name__)

METADATA_KEY = "__metadata__"
YAML_VERSION = "1"


class RegistryError(Exception):
    """models.yaml cannot be read; the message says where and why."""


class YamlEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of models.yaml, as stored (the key carries base, type and name)."""

    path: str
    description: str | None = None
    format: ModelFormat | None = None
    variant: ModelVariant = "normal"
    prediction_type: PredictionType | None = None
    config: str | None = None
    vae: str | None = None


_KNOWN_FIELDS = frozenset(YamlEntry.__struct_fields__)


# What a model name may not hold (schema.ModelName).
_NOT_IN_NAMES = re.compile(r"[/\\\x00-\x1f\x7f]")


class Registry:
    """Entries by key `<base>/<type>/<name>`, with a path index. Not thread-safe for writers: the manager
    serialises every change behind one lock; readers on other threads see whole entries only."""

    def __init__(self, yaml_path: Path, root: Path) -> None:
        self.yaml_path = yaml_path
        self.root = normpath(root)
        self.entries: dict[str, ModelConfig] = {}
        # Keys registered in memory only (files we cannot use, listed with `error`), never written out.
        self.ephemeral: set[str] = set()
        self._by_path: dict[str, str] = {}
        self._extras: dict[str, dict[str, Any]] = {}  # unknown fields of an entry, written back as found
        self._invalid: dict[str, Any] = {}  # entries we could not understand, written back verbatim
        self._metadata: dict[str, Any] = {"version": YAML_VERSION}
        self._digest: bytes | None = None
        self.problems: list[str] = []

    # -- paths -------------------------------------------------------------------------------------

    def stored_path(self, path: str | os.PathLike[str]) -> str:
        """How a path is written in models.yaml: relative to the root when inside it."""
        absolute = normpath(path)
        if absolute == self.root or absolute.startswith(self.root + os.sep):
            return Path(os.path.relpath(absolute, self.root)).as_posix()
        return absolute

    def absolute(self, stored: str) -> str:
        return normpath(os.path.join(self.root, os.path.expanduser(stored)))

    def key_for_path(self, path: str | os.PathLike[str]) -> str | None:
        return self._by_path.get(normpath(path))

    # -- entries -----------------------------------------------------------------------------------

    def get(self, key: str) -> ModelConfig | None:
        return self.entries.get(key)

    def put(self, config: ModelConfig, *, ephemeral: bool = False) -> None:
        old = self.entries.get(config.key)
        if old is not None:
            self._by_path.pop(self.absolute(old.path), None)
        self.entries[config.key] = config
        self._by_path[self.absolute(config.path)] = config.key
        if ephemeral:
            self.ephemeral.add(config.key)
        else:
            self.ephemeral.discard(config.key)

    def remove(self, key: str) -> ModelConfig | None:
        config = self.entries.pop(key, None)
        if config is not None:
            path = self.absolute(config.path)
            if self._by_path.get(path) == key:
                del self._by_path[path]
        self.ephemeral.discard(key)
        self._extras.pop(key, None)
        return config

    def rename(self, old_key: str, config: ModelConfig) -> None:
        extras = self._extras.get(old_key)
        self.remove(old_key)
        self.put(config)
        if extras:
            self._extras[config.key] = extras

    def unique_name(self, base: str, model_type: str, wanted: str) -> str:
        """`wanted`, or `wanted-2`, `wanted-3`... whichever is free under base/type. A name taken from a file
        is made a valid model name first (schema.ModelName): slashes, backslashes and control characters
        become `_`, and it is cut to 200 characters (190 when a suffix is needed)."""
        wanted = _NOT_IN_NAMES.sub("_", wanted)[:200] or "model"
        if not self.is_taken(f"{base}/{model_type}/{wanted}"):
            return wanted
        n = 2
        while self.is_taken(f"{base}/{model_type}/{wanted[:190]}-{n}"):
            n += 1
        return f"{wanted[:190]}-{n}"

    def is_taken(self, key: str) -> bool:
        return key in self.entries or key in self._invalid

    # -- models.yaml -------------------------------------------------------------------------------

    def load(self) -> tuple[list[str], list[str], list[str]] | None:
        """Re-read models.yaml if its bytes changed since we last read or wrote it.

        Returns the keys added, removed and updated by the reload, or None when the file is unchanged.
        Raises RegistryError (and changes nothing) when it does not parse."""
        try:
            raw = self.yaml_path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise RegistryError(f"{self._display()} cannot be read: {exc}") from None
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        if digest == self._digest:
            return None
        parsed = self._parse(raw)
        self._digest = digest
        entries, extras, invalid, metadata, problems = parsed
        # In-memory-only entries (broken files listed with their error) survive a reload.
        for key in self.ephemeral:
            if key not in entries and key not in invalid and key in self.entries:
                entries[key] = self.entries[key]
        old = self.entries
        added = sorted(k for k in entries if k not in old)
        removed = sorted(k for k in old if k not in entries)
        updated = sorted(k for k in entries if k in old and _stored_fields(entries[k]) != _stored_fields(old[k]))
        # Keep the runtime `error` of entries the reload did not change.
        for key, config in entries.items():
            if key in old and key not in updated and old[key].error is not None:
                entries[key] = msgspec.structs.replace(config, error=old[key].error)
        self.entries = entries
        self.ephemeral &= set(entries)
        self._by_path = {self.absolute(c.path): k for k, c in entries.items()}
        self._extras, self._invalid, self._metadata, self.problems = extras, invalid, metadata, problems
        for problem in problems:
            log.warning("%s", problem)
        return added, removed, updated

    def _display(self) -> str:
        try:
            return str(self.yaml_path.relative_to(self.root))
        except ValueError:
            return str(self.yaml_path)

    def _parse(self, raw: bytes):
        import yaml  # on first use: the server reads models.yaml after it has started answering

        try:
            data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if raw.strip() else {}
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RegistryError(
                f"{self._display()} is not valid YAML{where}: {reason}; it is left untouched until you fix it"
            ) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RegistryError(
                f"{self._display()} must be a mapping of '<base>/<type>/<name>' keys, not a {type(data).__name__}; "
                "it is left untouched until you fix it"
            )
        entries: dict[str, ModelConfig] = {}
        extras: dict[str, dict[str, Any]] = {}
        invalid: dict[str, Any] = {}
        problems: list[str] = []
        metadata = data.get(METADATA_KEY) if isinstance(data.get(METADATA_KEY), dict) else {"version": YAML_VERSION}
        for key, value in data.items():
            if key == METADATA_KEY:
                continue
            try:
                config, extra = self._entry(str(key), value)
            except ValueError as exc:
                invalid[str(key)] = value
                problems.append(f"{self._display()}: entry '{key}' {exc}; it is ignored until fixed")
                continue
            entries[config.key] = config
            if extra:
                extras[config.key] = extra
        return entries, extras, invalid, metadata, problems

    def _entry(self, key: str, value: Any) -> tuple[ModelConfig, dict[str, Any]]:
        parts = key.split("/")
        if len(parts) != 3:
            raise ValueError("is not of the form '<base>/<type>/<name>'")
        if not isinstance(value, dict):
            raise ValueError("is not a mapping of fields")
        extra = {k: v for k, v in value.items() if k not in _KNOWN_FIELDS}
        try:
            stored = msgspec.convert({k: v for k, v in value.items() if k in _KNOWN_FIELDS}, YamlEntry)
        except msgspec.ValidationError as exc:
            raise ValueError(_reason(exc)) from None
        base, model_type, name = parts
        fmt = stored.format or ("diffusers" if os.path.isdir(self.absolute(stored.path)) else "checkpoint")
        try:
            config = msgspec.convert(
                {
                    "model_name": name,
                    "base_model": base,
                    "model_type": model_type,
                    "path": stored.path,
                    "description": stored.description,
                    "model_format": fmt,
                    "variant": stored.variant,
                    "prediction_type": stored.prediction_type,
                    "config": stored.config,
                    "vae": stored.vae,
                },
                ModelConfig,
            )
        except msgspec.ValidationError as exc:
            raise ValueError(_reason(exc)) from None
        return config, extra

    def save(self) -> None:
        """Write models.yaml atomically. Never called while the file on disk does not parse."""
        document: dict[str, Any] = {METADATA_KEY: self._metadata}
        rows: dict[str, Any] = {}
        for key, config in self.entries.items():
            if key in self.ephemeral:
                continue
            rows[key] = {**self._extras.get(key, {}), **_row(config)}
        rows.update(self._invalid)
        for key in sorted(rows):
            document[key] = rows[key]
        import yaml

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(document, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
        data = text.encode("utf-8")
        self.yaml_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.yaml_path, data)
        self._digest = hashlib.blake2b(data, digest_size=16).digest()


def _stored_fields(config: ModelConfig) -> YamlEntry:
    return YamlEntry(
        path=config.path,
        description=config.description,
        format=config.model_format,
        variant=config.variant,
        prediction_type=config.prediction_type,
        config=config.config,
        vae=config.vae,
    )


def _row(config: ModelConfig) -> dict[str, Any]:
    """An entry as written: the contract's fields, the optional ones only when set."""
    row: dict[str, Any] = {
        "path": config.path,
        "description": config.description,
        "format": config.model_format,
        "variant": config.variant,
    }
    for name in ("prediction_type", "config", "vae"):
        value = getattr(config, name)
        if value is not None:
            row[name] = value
    return row


def _reason(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    reason, _, where = message.partition(" - at `$")
    field = where.rstrip("`").lstrip(".")
    field = {"model_name": "name", "base_model": "base", "model_type": "type", "model_format": "format"}.get(
        field, field
    )
    return f"has a bad `{field}`: {reason}" if field else f"is invalid: {reason}"
