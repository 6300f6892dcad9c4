"""One sync pass: make the registry agree with models.yaml, the models folder and the autoimport folders.

Cheap when nothing changed: models.yaml is re-parsed only when its bytes changed, a registered model costs
one `stat`, and a file is probed again only when its (size, mtime) changed. Blocking (disk, probing): the
manager runs `Syncer.run` in a thread, one pass at a time."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from server.models import probe as probing
from server.models.model_files import FOLDER_MARKERS
from server.models.paths import normpath
from server.models.registry import Registry
from server.models.scanner import Candidate, candidates
from server.models.schema import BASE_MODELS, MODEL_TYPES, ModelConfig, SyncResult

log = logging.getLogger(__name__)

# A file modified this recently may still be being written: it is only probed once it is stable...
SETTLE_S = 5.0
# ...that is, once it kept the same size and mtime for this long (a complete .safetensors, whose header
# says exactly how long it must be, needs no wait).
STABLE_S = 0.5

Fingerprint = tuple[int, int, int]  # (kind, size, mtime_ns)
_FOLDER_FINGERPRINT_FILES = ("model_index.json", "config.json", *sorted(FOLDER_MARKERS))


def fingerprint(path: str) -> Fingerprint | None:
    """What tells us a registered model changed on disk; None when the path is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return (0, st.st_size, st.st_mtime_ns)
    for name in _FOLDER_FINGERPRINT_FILES:
        try:
            marker = os.stat(os.path.join(path, name))
        except OSError:
            continue
        return (1, marker.st_size, marker.st_mtime_ns)
    return (2, 0, st.st_mtime_ns)


def _folder_state(path: str) -> tuple[Fingerprint, float]:
    """(file count, total size, newest mtime) of a folder tree, and its newest mtime in seconds."""
    count = total = newest = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            count += 1
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return (count, total, newest), newest / 1e9


class Syncer:
    def __init__(
        self, registry: Registry, models_dir: Path, autoimport_dir: Path, allowed: Sequence[str] | None = None
    ) -> None:
        self.registry = registry
        self.models_dir = normpath(models_dir)
        self.autoimport_dir = normpath(autoimport_dir)
        # Real paths of the folders a symlink may lead into (None: anywhere), as `scanner.candidates` takes them.
        self.allowed = allowed
        # Last (size, mtime) seen of each registered path: unchanged means no probe.
        self.fingerprints: dict[str, Fingerprint] = {}
        # Unregistered paths that were still changing: what they looked like, and since when.
        self._pending: dict[str, tuple[Fingerprint, float]] = {}

    def run(self) -> tuple[SyncResult, bool]:
        """One pass. Returns what changed and whether some file was left for later because it was still
        being written. Raises RegistryError, changing nothing, when models.yaml does not parse."""
        registry = self.registry
        added: list[str] = []
        removed: list[str] = []
        updated: list[str] = []
        reloaded = registry.load()
        if reloaded is not None:
            added += reloaded[0]
            removed += reloaded[1]
            updated += reloaded[2]
        dirty = False
        deferred = False

        for key, config in list(registry.entries.items()):
            path = registry.absolute(config.path)
            fp = fingerprint(path)
            if fp is None:
                dirty |= key not in registry.ephemeral
                registry.remove(key)
                self.fingerprints.pop(path, None)
                removed.append(key)
                continue
            previous = self.fingerprints.get(path)
            self.fingerprints[path] = fp
            if previous is None or previous == fp:
                continue
            change = self._reprobe(key, config, path)
            if change == "later":
                del self.fingerprints[path]  # look again next time
                deferred = True
            elif isinstance(change, tuple):
                old_key, new_key = change
                dirty = True
                if old_key == new_key:
                    updated.append(new_key)
                else:
                    removed.append(old_key)
                    added.append(new_key)

        seen: set[str] = set()
        for candidate in candidates(Path(self.models_dir), Path(self.autoimport_dir), self.allowed):
            seen.add(candidate.path)
            if registry.key_for_path(candidate.path) is not None:
                continue
            outcome = self._consider(candidate)
            if outcome is None:
                deferred = True
                continue
            key = self._register(candidate, outcome)
            dirty |= key not in registry.ephemeral
            added.append(key)
        for path in list(self._pending):
            if path not in seen:
                del self._pending[path]

        if dirty:
            registry.save()
        return _net(added, removed, updated), deferred

    # -- new files -----------------------------------------------------------------------------------

    def _consider(self, candidate: Candidate) -> probing.ProbeResult | Exception | None:
        """The probe result, the reason it is not a usable model, or None when it is still being written."""
        path = candidate.path
        now = time.monotonic()
        is_dir = os.path.isdir(path)
        if is_dir:
            fp, newest = _folder_state(path)
        else:
            try:
                st = os.stat(path)
            except OSError:
                return None
            fp, newest = (0, st.st_size, st.st_mtime_ns), st.st_mtime
        young = time.time() - newest < SETTLE_S
        # A .safetensors proves its own completeness (its header gives its length); others must sit still.
        if young and (is_dir or not path.lower().endswith(".safetensors")):
            previous = self._pending.get(path)
            if previous is None or previous[0] != fp:
                self._pending[path] = (fp, now)
                return None
            if now - previous[1] < STABLE_S:
                return None
        try:
            result = probing.probe(Path(path), hint_base=candidate.hint_base, hint_type=candidate.hint_type)
        except probing.UnsafeFile as exc:
            return exc
        except probing.Unreadable as exc:
            if young:
                self._pending.setdefault(path, (fp, now))
                return None
            return exc
        except probing.NotAModel as exc:
            return exc
        except OSError as exc:
            return exc
        except Exception as exc:
            # Whatever else a file makes the probe raise, it is this file's problem, not every sync's.
            log.exception("probing %s failed", path)
            return exc
        self._pending.pop(path, None)
        return result

    def _register(self, candidate: Candidate, outcome: probing.ProbeResult | Exception) -> str:
        registry = self.registry
        path = candidate.path
        stem = Path(path).name if os.path.isdir(path) else Path(path).stem
        if isinstance(outcome, Exception):
            log.warning("model %s cannot be used: %s", path, outcome)
            base = candidate.hint_base or "sd-1"
            model_type = candidate.hint_type or "main"
            fields: dict[str, Any] = {"model_format": "diffusers" if os.path.isdir(path) else "checkpoint"}
            error: str | None = str(outcome) or type(outcome).__name__
        else:
            base, model_type = outcome.base_model, outcome.model_type
            fields = {
                "model_format": outcome.model_format,
                "variant": outcome.variant,
                "prediction_type": outcome.prediction_type,
                "config": outcome.config,
            }
            error = None
        config = msgspec.convert(
            {
                "model_name": registry.unique_name(base, model_type, stem),
                "base_model": base,
                "model_type": model_type,
                "path": registry.stored_path(path),
                "description": None,
                "variant": "normal",
                "prediction_type": None,
                "config": None,
                "vae": None,
                **fields,
                "error": error,
            },
            ModelConfig,
        )
        registry.put(config, ephemeral=error is not None)
        fp = fingerprint(path)
        if fp is not None:
            self.fingerprints[normpath(path)] = fp
        if error is None:
            log.info("registered %s (%s)", config.key, path)
        return config.key

    # -- registered files that changed ---------------------------------------------------------------

    def _reprobe(self, key: str, config: ModelConfig, path: str) -> tuple[str, str] | str | None:
        """Probe a registered model whose files changed: ("old key", "new key") if its entry changed,
        None if not, "later" if it is still being written."""
        hint_base, hint_type = self.hints(path)
        try:
            result = probing.probe(Path(path), hint_base=hint_base, hint_type=hint_type or config.model_type)
        except probing.Unreadable as exc:
            st_mtime = os.stat(path).st_mtime if os.path.exists(path) else 0
            if time.time() - st_mtime < SETTLE_S:
                return "later"
            return self._set_error(key, config, str(exc))
        except (probing.NotAModel, OSError) as exc:
            return self._set_error(key, config, str(exc))
        registry = self.registry
        if (result.base_model, result.model_type) == (config.base_model, config.model_type):
            new = msgspec.structs.replace(config, model_format=result.model_format, variant=result.variant, error=None)
            if new == config:
                return None
            registry.put(new)
            return key, key
        # It is another kind of model now (the file was replaced): a new entry, with the probe's defaults.
        name = registry.unique_name(result.base_model, result.model_type, config.model_name)
        new = msgspec.structs.replace(
            config,
            model_name=name,
            base_model=result.base_model,
            model_type=result.model_type,
            model_format=result.model_format,
            variant=result.variant,
            prediction_type=result.prediction_type,
            config=result.config,
            error=None,
        )
        registry.rename(key, new)
        return key, new.key

    def _set_error(self, key: str, config: ModelConfig, error: str) -> tuple[str, str] | None:
        if config.error == error:
            return None
        log.warning("model %s cannot be used: %s", key, error)
        self.registry.put(msgspec.structs.replace(config, error=error), ephemeral=key in self.registry.ephemeral)
        return key, key

    def hints(self, path: str) -> tuple[str | None, str | None]:
        for top, with_base in ((self.models_dir, True), (self.autoimport_dir, False)):
            if path.startswith(top + os.sep):
                parts = path[len(top) + 1 :].split(os.sep)
                if with_base and len(parts) >= 3 and parts[0] in BASE_MODELS and parts[1] in MODEL_TYPES:
                    return parts[0], parts[1]
                if not with_base and len(parts) >= 2 and parts[0] in MODEL_TYPES:
                    return None, parts[0]
        return None, None


def _net(added: list[str], removed: list[str], updated: list[str]) -> SyncResult:
    """A key both removed and added in one pass was replaced: report it as updated."""
    both = set(added) & set(removed)
    return SyncResult(
        added=sorted(set(added) - both),
        removed=sorted(set(removed) - both),
        updated=sorted((set(updated) | both) - (set(added) - both) - (set(removed) - both)),
    )
