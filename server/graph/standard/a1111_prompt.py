"""AUTOMATIC1111's prompt syntax, translated rather than re-implemented: `<lora:name:weight>` tags become
`lora_loader` settings, `[from:to:when]` editing and `[a|b]` alternation become a schedule of plain prompts
(one conditioning per entry, switched by `conditioning_schedule`), and the attention syntax of each entry,
`(word)`, `(word:1.3)`, `[word]`, `\\(`, `BREAK`, becomes compel's, which does the weighting.

The rules are those of A1111's `modules/prompt_parser.py` (facts, not its code): `(...)` multiplies by 1.1 and
`[...]` divides by 1.1, `(text:w)` sets w; unclosed brackets close at the end; an entry ending at step `e` of
`S` is used while the 0-based sampling step is ≤ e. `when` written with a decimal point is a fraction of the
steps (`0.25`, `.5`, `1.0`), without one a step number (`3`); in a hires pass, whose schedule is over its own
steps, a fraction counts from 1 (`1.5`: half way through the second pass) and a step number from the end of
the first pass (`25` of 20 + 10: the second pass's step 5). (A1111 before 1.6, and its "old scheduling"
option, read any `when` below 1 as a fraction; its default since is the rule above.)"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
_ATTENTION = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:",
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
# A1111's NUMBER (lark's SIGNED_NUMBER) where a `when` belongs.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_UP, _DOWN = 1.1, 1 / 1.1


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


class PromptSyntaxError(ValueError):
    pass


def extract_loras(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without its `<lora:name:weight>` tags, and the tags (weight 1 when left out)."""
    tags = []
    for match in _LORA_TAG.finditer(prompt):
        text = (match.group(3) or "1").strip()
        try:
            weight = float(text)
        except ValueError:
            raise PromptSyntaxError(
                f"<{match.group(1)}:{match.group(2)}:{text}>: the weight must be a number"
            ) from None
        tags.append(LoraTag(match.group(2).strip(), weight))
    return _LORA_TAG.sub("", prompt), tags


# --- prompt editing and alternation -----------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Edit:
    before: list
    after: list
    when: str  # as written: its decimal point makes it a fraction


@dataclass
class _Alternate:
    options: list[list]


class _ScheduleParser:
    """A1111's schedule grammar: `[before:after:when]`, `[after:when]`, `[a|b|...]`; any other bracket is text
    (the attention syntax reads it next), and a `:` inside parentheses is a weight, not a separator."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def parse(self) -> list:
        return self._sequence(stops="")

    def _sequence(self, stops: str) -> list:
        items: list = []
        while self.at < len(self.text):
            char = self.text[self.at]
            if char == "\\" and self.at + 1 < len(self.text):
                items.append(_Text(self.text[self.at : self.at + 2]))
                self.at += 2
            elif char in stops:
                return items
            elif char == "[":
                items.append(self._bracket())
            elif char == "(":
                self.at += 1
                inner = self._sequence(stops=")")
                closed = self.at < len(self.text)
                self.at += int(closed)
                items.append([_Text("("), *inner, _Text(")" if closed else "")])
            else:
                items.append(_Text(char))
                self.at += 1
        return items

    def _bracket(self) -> object:
        start = self.at
        self.at += 1
        parts = [self._sequence(stops="]:|")]
        separators: list[str] = []
        while self.at < len(self.text) and self.text[self.at] in ":|":
            separators.append(self.text[self.at])
            self.at += 1
            parts.append(self._sequence(stops="]:|"))
        closed = self.at < len(self.text) and self.text[self.at] == "]"
        if closed:
            self.at += 1
        if closed and separators and set(separators) == {":"} and len(parts) in (2, 3):
            when = _flatten(parts[-1]).strip()
            if _NUMBER.fullmatch(when):
                before = parts[0] if len(parts) == 3 else []
                return _Edit(before, parts[-2], when)
        if closed and separators and set(separators) == {"|"}:
            return _Alternate(parts)
        self.at = start + 1
        inner = self._sequence(stops="]")
        closed = self.at < len(self.text)
        self.at += int(closed)
        return [_Text("["), *inner, _Text("]" if closed else "")]


def _flatten(items: list) -> str:
    out = []
    for item in items:
        if isinstance(item, _Text):
            out.append(item.text)
        elif isinstance(item, list):
            out.append(_flatten(item))
        else:
            return "\0"  # nested editing where a number belongs: not a number
    return "".join(out)


@dataclass(frozen=True)
class _Pass:
    """The steps a schedule is over, and for a hires pass the first pass's (its offsets)."""

    steps: int
    first_pass_steps: int | None = None

    def edit_step(self, when: str) -> int:
        value = float(when)
        if "." in when:
            value = (value - (1.0 if self.first_pass_steps is not None else 0.0)) * self.steps
        else:
            value -= self.first_pass_steps or 0
        return min(self.steps, int(value))


def _boundaries(items: list, run: _Pass, found: set[int]) -> None:
    for item in items:
        if isinstance(item, list):
            _boundaries(item, run, found)
        elif isinstance(item, _Edit):
            step = run.edit_step(item.when)
            if step >= 1:
                found.add(step)
            _boundaries(item.before, run, found)
            _boundaries(item.after, run, found)
        elif isinstance(item, _Alternate):
            found.update(range(1, run.steps + 1))
            for option in item.options:
                _boundaries(option, run, found)


def _text_at(items: list, step: int, run: _Pass) -> str:
    out = []
    for item in items:
        if isinstance(item, _Text):
            out.append(item.text)
        elif isinstance(item, list):
            out.append(_text_at(item, step, run))
        elif isinstance(item, _Edit):
            chosen = item.before if step <= run.edit_step(item.when) else item.after
            out.append(_text_at(chosen, step, run))
        else:
            out.append(_text_at(item.options[(step - 1) % len(item.options)], step, run))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int, first_pass_steps: int | None = None) -> list[tuple[int, str]]:
    """[(end_at_step, text)] as A1111 computes it: the text at each step where something changes, and at the
    last step. `first_pass_steps`: this is the schedule of a hires pass of `steps`, after a first of those."""
    items = _ScheduleParser(prompt).parse()
    run = _Pass(steps, first_pass_steps)
    found: set[int] = set()
    _boundaries(items, run, found)
    ends = [*sorted(step for step in found if step < steps), steps]
    schedule: list[tuple[int, str]] = []
    for end in ends:
        text = _text_at(items, end, run)
        if schedule and schedule[-1][1] == text:
            schedule[-1] = (end, text)
        else:
            schedule.append((end, text))
    return schedule


# --- attention --------------------------------------------------------------------------------------------


def parse_attention(text: str) -> list[tuple[str, float]]:
    """[(text, weight)] as A1111's parse_prompt_attention gives it; ("BREAK", -1) between chunks."""
    result: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in result[start:]:
            item[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            result.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(result))
        elif token == "[":
            square_open.append(len(result))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), _UP)
        elif token == "]" and square_open:
            multiply(square_open.pop(), _DOWN)
        else:
            for index, part in enumerate(_BREAK.split(token)):
                if index > 0:
                    result.append(["BREAK", -1.0])
                result.append([part, 1.0])
    for start in round_open:
        multiply(start, _UP)
    for start in square_open:
        multiply(start, _DOWN)
    merged: list[list] = []
    for item in result:
        if not item[0] and item[1] != -1:
            continue
        if merged and merged[-1][1] == item[1] and item[1] != -1:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(text_, weight_) for text_, weight_ in merged] or [("", 1.0)]


def _compel_text(text: str) -> str:
    # compel reads these as its own syntax; A1111 had them as plain characters here.
    return re.sub(r'([()\[\]"\\+\-])', r"\\\1", text)


def _compel_chunk(parts: list[tuple[str, float]]) -> str:
    out = []
    for text, weight in parts:
        escaped = _compel_text(text)
        out.append(escaped if abs(weight - 1.0) < 1e-9 else f"({escaped}){weight:.4g}")
    return "".join(out)


def to_compel(text: str) -> str:
    """An A1111 prompt (no editing left in it) in compel's syntax; BREAK chunks become a compel conjunction,
    which encodes each chunk on its own and joins them along the tokens, as A1111 does."""
    chunks: list[list[tuple[str, float]]] = [[]]
    for part, weight in parse_attention(text):
        if weight == -1:
            chunks.append([])
        else:
            chunks[-1].append((part, weight))
    if len(chunks) == 1:
        return _compel_chunk(chunks[0])
    quoted = ", ".join('"' + _compel_chunk(chunk).replace('"', '\\"') + '"' for chunk in chunks)
    return f"({quoted}).and()"


def mark_embeddings(text: str, names: set[str]) -> str:
    """Plain embedding names (A1111's way) as `<name>` (ours), whole words only."""
    if not names:
        return text
    pattern = re.compile(
        r"(?<![<\w])(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?![\w>])"
    )
    return pattern.sub(r"<\1>", text)


def schedule(
    prompt: str, steps: int, *, run: int | None = None, first_pass_steps: int | None = None
) -> list[tuple[float, str]]:
    """The prompt's schedule as `conditioning_schedule` takes it: (until fraction, A1111 text) per entry. An
    entry ending at the next-to-last step already covers the last one (steps count from 0), so what follows it
    is never used, in A1111 either. `run`: the steps the denoise runs when it is fewer than `steps` (image to
    image, a hires pass: `steps` × strength); A1111 counts the steps it runs from 0 against a schedule over all
    `steps`, and so does this."""
    ran = max(1, run if run is not None else steps)
    entries: list[tuple[float, str]] = []
    for end, text in prompt_schedule(prompt, steps, first_pass_steps):
        until = min((end + 1) / ran, 1.0)
        entries.append((until, text))
        if until == 1.0:
            break
    return entries
