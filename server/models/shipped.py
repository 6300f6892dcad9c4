"""Configs the server ships: legacy LDM yamls for checkpoints, and diffusers config folders (no weights)
that let diffusers load a real single-file checkpoint fully offline.

The diffusers folders in `configs/diffusers/<base>/` hold the standard component configs of each base.
Their CLIP tokenizers are built from CLIP's BPE merges (`configs/clip/bpe_simple_vocab_16e6.txt.gz`, from
the MIT-licensed open_clip_torch wheel): one 1.3 MB file instead of a 1.6 MB vocab.json + merges.txt per
tokenizer. `config_dir(base, cache)` writes the complete folder once into the cache and returns it."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from functools import cache
from pathlib import Path

from server.fileio import publish_folder

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
LEGACY_DIR = CONFIGS_DIR / "stable-diffusion"
DIFFUSERS_DIR = CONFIGS_DIR / "diffusers"
CLIP_BPE = CONFIGS_DIR / "clip" / "bpe_simple_vocab_16e6.txt.gz"

# CLIP's vocabulary: 256 bytes, the same with </w>, 48,894 merges, and two specials = 49,408 tokens.
_CLIP_MERGES = 49152 - 256 - 2


def legacy_configs() -> list[str]:
    """Every shipped legacy yaml, relative to the configs folder (`stable-diffusion/v1-inference.yaml`)."""
    return sorted(p.relative_to(CONFIGS_DIR).as_posix() for p in LEGACY_DIR.glob("*.yaml"))


def legacy_config(name: str) -> Path | None:
    """A shipped legacy yaml by its relative name, or None. Never a path outside the configs folder."""
    if name not in legacy_configs():
        return None
    return CONFIGS_DIR / name


def bases_with_configs() -> list[str]:
    return sorted(p.name for p in DIFFUSERS_DIR.iterdir() if (p / "model_index.json").is_file())


def bytes_to_unicode() -> list[str]:
    """CLIP's byte -> printable-character table, in CLIP's order (printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


@cache
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's tokenizer vocabulary and merges, built the way CLIP's own simple_tokenizer builds them."""
    lines = gzip.decompress(CLIP_BPE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : _CLIP_MERGES + 1]  # the first line is a version header
    symbols = bytes_to_unicode()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def config_dir(base: str, cache_dir: Path) -> Path | None:
    """The complete diffusers config folder for `base` (configs + CLIP tokenizers), or None when the server
    ships none for it. Built once under `cache_dir` (temp folder + rename); later calls return it at once."""
    source = DIFFUSERS_DIR / base
    if not (source / "model_index.json").is_file():
        return None
    files = sorted(p for p in source.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in [*files, CLIP_BPE]:
        digest.update(path.relative_to(CONFIGS_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    target = cache_dir / f"{base}-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    with publish_folder(target) as tmp:
        for path in files:
            dest = tmp / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        vocab, merges = clip_vocab_and_merges()
        for tokenizer in tmp.glob("tokenizer*/"):
            (tokenizer / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (tokenizer / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return target
