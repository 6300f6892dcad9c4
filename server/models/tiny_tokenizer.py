"""The tiny models' CLIP-style tokenizer: a byte-level BPE learned from prompt-like words, written offline.

256 byte symbols, the same with `</w>`, one token per learned merge, then `<|startoftext|>` and
`<|endoftext|>`, as CLIP's own vocabulary is laid out. Shared by every tiny model (`server.models.tiny`,
`server.models.tiny_sdxl`) and by config folders built from embedded configs (`server.models.single_file`)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from server.models.shipped import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "CLIPTokenizer",
    # Without it transformers reports a max length of ~1e30 and prompts are never truncated.
    "model_max_length": 77,
    "bos_token": BOS,
    "eos_token": EOS,
    "unk_token": EOS,
    "pad_token": EOS,  # SD-1's tokenizer pads with <|endoftext|>
    "do_lower_case": True,
    "errors": "replace",
    "add_prefix_space": False,
}

# Words the BPE merges are learned from: prompt-like English, so a prompt takes a realistic share of
# the 77-token window instead of one token per character.
_BPE_CORPUS = (
    "a photo of the cat dog in on at with and portrait landscape painting oil watercolor sketch drawing "
    "red green blue yellow orange purple black white golden silver light dark night sunset dusk dawn "
    "lighthouse mountain river forest ocean sea sky cloud snow rain city street house castle tower "
    "fox bird horse flower tree garden field beach island desert village bridge boat ship car train "
    "highly detailed realistic beautiful cinematic lighting dramatic sharp focus trending artstation "
    "style by an old young man woman girl boy face eyes hair smiling standing sitting walking "
    "masterpiece best quality ugly blurry deformed low resolution watermark text signature"
)
_BPE_MERGES = 300  # 514 base tokens + 300 merges stays under the text encoder's 1000-token vocab


def bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP-style vocab (bytes, bytes+</w>, one token per merge, then the two specials) and merges."""
    symbols = bytes_to_unicode()
    words = [[*w[:-1], w[-1] + "</w>"] for w in _BPE_CORPUS.split()]
    merges: list[str] = []
    for _ in range(_BPE_MERGES):
        counts: dict[tuple[str, str], int] = {}
        for w in words:
            for pair in itertools.pairwise(w):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        # Ties broken by the pair itself, so the vocab never depends on dict order.
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(f"{best[0]} {best[1]}")
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == best:
                    w[i : i + 2] = [w[i] + w[i + 1]]
                i += 1
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], config: dict[str, Any]) -> None:
    """The files `CLIPTokenizer.from_pretrained` reads (transformers 5 ignores `vocab_file=` kwargs)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
