"""Attack families: registered, versioned transformations of harm-set prompts (or of the answer's start).

A spec names a family and its argument: `prefix_injection`, `template:gptfuzz#3`, `prefill:5`,
`transfer:jailbreakbench#GCG`. `parse_attack` resolves it (with did-you-mean on a typo) and `Attack.prepare` loads
and checks its data, so every bad spec fails before any work.
"""

from __future__ import annotations

import functools
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from safedose.attacks import _wei
from safedose.attacks._records import PLAIN, AttackedPrompt, AttackInfo
from safedose.data import DATASETS, EvalPrompt, load_eval_prompts, load_raw
from safedose.errors import InputError, SafedoseError
from safedose.paths import data_root
from safedose.registry import Registry

PLACEHOLDER = "[INSERT PROMPT HERE]"
FIXED_PREFILL = "Sure, here is"
TEMPLATE_SEED = 0
TEMPLATE_SOURCES = {"gptfuzz": "gptfuzz-templates"}
TRANSFER_SOURCES = {"jailbreakbench": ("jailbreakbench-attacks", "jailbreakbench")}
TRANSFER_METHODS = ("PAIR", "GCG")
TRANSFER_DEFAULT_SOURCE = "vicuna-13b-v1.5"  # the open model both methods attacked directly (PAIR 82, GCG 100 goals)
TARGET_FIELDS = ("target", "Target")


class Attack(ABC):
    """One configured attack. `apply` maps plain prompts to attacked ones (the same ids); prompts it cannot attack
    (a transferred prompt that does not exist) are left out and counted by the caller."""

    family: ClassVar[str]
    version: ClassVar[int]
    summary: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    @abstractmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        """The attack of `spec` (`arg`: what follows `family:`)."""

    def prepare(self) -> None:  # noqa: B027 (families without data have nothing to load)
        """Load and check the attack's data (a one-line error on bad data)."""

    def check_set(self, eval_set: str) -> None:  # noqa: B027 (most families apply to any harm set)
        """Raise when this attack cannot apply to `eval_set`."""

    def applies_to(self, eval_set: str) -> bool:
        try:
            self.check_set(eval_set)
        except SafedoseError:
            return False
        return True

    @abstractmethod
    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        """The attacked prompts of `prompts` (all of one eval set; `source`: the name or file it was loaded from,
        where a family reads more of it, such as prefill's targets; default: the prompts' `eval_set`)."""

    def _info(self, prompt: EvalPrompt, **extra: object) -> AttackInfo:
        return AttackInfo(name=self.name, version=self.version, family=self.family, plain_prompt=prompt.prompt,
                          **extra)  # fmt: skip

    def _attacked(self, prompt: EvalPrompt, text: str, info: AttackInfo) -> AttackedPrompt:
        return AttackedPrompt(**{**prompt.model_dump(), "prompt": text}, attack=info)


ATTACKS: Registry[type[Attack]] = Registry("attack")


class NoAttack(Attack):
    family, version = PLAIN, 1
    summary = "the plain prompt (always asked: every attacked rate is paired with it)"

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        _no_argument(arg, spec)
        return cls(PLAIN)

    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        return []


class TextAttack(Attack):
    """A fixed rewriting of the prompt text."""

    rewrite: ClassVar[Callable[[str], str]]

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        _no_argument(arg, spec)
        return cls(cls.family)

    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        rewrite = type(self).rewrite
        return [self._attacked(p, rewrite(p.prompt), self._info(p)) for p in prompts]


def _text_attack(family: str, rewrite: Callable[[str], str], summary: str) -> type[Attack]:
    cls = type(f"{family.title().replace('_', '')}Attack", (TextAttack,),
               {"family": family, "version": 1, "summary": summary, "rewrite": staticmethod(rewrite)})  # fmt: skip
    return ATTACKS.add(family, cls)


ATTACKS.add(PLAIN, NoAttack)
_text_attack("prefix_injection", _wei.prefix_injection,
             "Wei et al. 2023: open with an eager, unrefusing sentence, then answer")  # fmt: skip
_text_attack("refusal_suppression", _wei.refusal_suppression,
             "Wei et al. 2023: rules that forbid apologies, disclaimers and refusal words")  # fmt: skip
_text_attack("style_injection", _wei.style_injection,
             "Wei et al. 2023: rules on the answer's style (no punctuation, short words, never 'the')")  # fmt: skip
_text_attack("base64", _wei.base64_attack,
             "Wei et al. 2023: the request in Base64, the answer asked for in Base64")  # fmt: skip


@dataclass(frozen=True)
class JailbreakTemplate:
    id: str
    text: str


@ATTACKS.register("template")
class TemplateAttack(Attack):
    """The prompt written into jailbreak templates at their `[INSERT PROMPT HERE]` placeholder: every template, the
    first k of a seeded order (`#k`; `#3` is within `#5`) or named ids (`#ids=3+17`)."""

    family, version = "template", 1
    summary = "the prompt inside role-play jailbreak templates (GPTFuzz's 77, or a file of your own)"

    def __init__(self, name: str, source: str, count: int | None, ids: tuple[str, ...] | None) -> None:
        super().__init__(name)
        self.source, self.count, self.ids = source, count, ids
        self._chosen: list[JailbreakTemplate] | None = None

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        if not arg:
            raise SafedoseError(f"attack {spec!r}: name the templates, e.g. 'template:gptfuzz#3' or 'template:FILE'")
        source, _, select = arg.partition("#")
        if source not in TEMPLATE_SOURCES and not _looks_like_file(source):
            raise SafedoseError(f"attack {spec!r}: {_unknown('template source', source, TEMPLATE_SOURCES)}")
        count: int | None = None
        ids: tuple[str, ...] | None = None
        if select.startswith("ids="):
            ids = tuple(i for i in select[4:].split("+") if i)
            if not ids:
                raise SafedoseError(f"attack {spec!r}: '#ids=' needs template ids joined by '+', e.g. '#ids=3+17'")
        elif select:
            count = _positive(select, spec, "#k (a number of templates)")
        name = f"template:{source}" + (f"#{count}" if count else f"#ids={'+'.join(ids)}" if ids else "")
        return cls(name, source, count, ids)

    def templates(self) -> list[JailbreakTemplate]:
        """Every template of the source, each checked to hold the placeholder."""
        return _templates(self.source)

    def prepare(self) -> None:
        self.chosen()

    def chosen(self) -> list[JailbreakTemplate]:
        if self._chosen is None:
            pool = self.templates()
            if self.ids is not None:
                known = {t.id: t for t in pool}
                missing = [i for i in self.ids if i not in known]
                if missing:
                    raise SafedoseError(f"attack {self.name!r}: no template with id {missing[0]!r} in {self.source} "
                                        f"(ids {pool[0].id} .. {pool[-1].id})")  # fmt: skip
                self._chosen = [known[i] for i in self.ids]
            elif self.count is not None:
                if self.count > len(pool):
                    raise SafedoseError(f"attack {self.name!r}: {self.source} has {len(pool)} templates, not "
                                        f"{self.count}")  # fmt: skip
                order = list(pool)
                random.Random(f"{TEMPLATE_SEED}:templates").shuffle(order)
                self._chosen = order[: self.count]
            else:
                self._chosen = pool
        return self._chosen

    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        chosen, label = self.chosen(), Path(self.source).name
        return [self._attacked(p, t.text.replace(PLACEHOLDER, p.prompt), self._info(p, variant=f"{label}#{t.id}"))
                for p in prompts for t in chosen]  # fmt: skip


@functools.cache
def _templates(source: str) -> list[JailbreakTemplate]:
    dataset = TEMPLATE_SOURCES.get(source, source)
    where = _file_of(dataset)
    out: list[JailbreakTemplate] = []
    for i, row in enumerate(load_raw(dataset), 1):
        text = next((row[k] for k in ("text", "template", "prompt") if isinstance(row.get(k), str)), None)
        if text is None:
            raise InputError(where, i, "missing field 'text' (the template, with [INSERT PROMPT HERE])")
        if PLACEHOLDER not in text:
            raise InputError(where, i, f"template has no {PLACEHOLDER} placeholder")
        out.append(JailbreakTemplate(str(row.get("id", i - 1)), text))
    if not out:
        raise SafedoseError(f"{where}: no templates")
    if len({t.id for t in out}) != len(out):
        raise SafedoseError(f"{where}: template ids must be unique")
    return out


def _file_of(dataset: str) -> str:
    """The file a dataset is read from, for error messages."""
    if dataset in DATASETS:
        return str(DATASETS.get(dataset).paths(data_root())[0])
    return dataset


@ATTACKS.register("prefill")
class PrefillAttack(Attack):
    """The answer starts with the first k tokens of a compliant target (the set's own `target`, e.g. AdvBench's
    "Sure, here is ...", else the fixed "Sure, here is"), and the model continues; the judges see both."""

    family, version = "prefill", 1
    summary = "the answer starts with the first k tokens of a compliant target; the model continues"

    def __init__(self, name: str, tokens: int | None) -> None:
        super().__init__(name)
        self.tokens = tokens

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        if arg is None:
            return cls("prefill", None)
        k = _positive(arg, spec, "k (a number of tokens)")
        return cls(f"prefill:{k}", k)

    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        out = []
        for p in prompts:
            target = compliant_targets(source or p.eval_set).get(p.id)
            info = self._info(p, prefill_target=target or FIXED_PREFILL, prefill_tokens=self.tokens,
                              prefill_source="target" if target else "fixed")  # fmt: skip
            out.append(self._attacked(p, p.prompt, info))
        return out


@functools.cache
def compliant_targets(eval_set: str) -> dict[str, str]:
    """Prompt id -> the set's compliant target string (`target` / `Target` column), for the sets that have one; a
    name that is neither registered nor a file (prompts made in code) has none."""
    if eval_set not in DATASETS and not eval_set.startswith("hf:") and not Path(eval_set).expanduser().is_file():
        return {}
    prompts = load_eval_prompts(eval_set)
    rows = load_raw(eval_set)
    out = {}
    for prompt, row in zip(prompts, rows, strict=True):
        target = next((row[k] for k in TARGET_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
        if target is not None:
            out[prompt.id] = target.strip()
    return out


@ATTACKS.register("transfer")
class TransferAttack(Attack):
    """Optimised jailbreak prompts found against other models (JailbreakBench's PAIR and GCG artifacts) asked in place
    of their plain goals, which are the rows of the `jailbreakbench` eval set."""

    family, version = "transfer", 1
    summary = "JailbreakBench's PAIR / GCG prompts, optimised against other models, in place of their plain goals"

    def __init__(self, name: str, source: str, method: str, model: str) -> None:
        super().__init__(name)
        self.source, self.method, self.model = source, method, model

    @classmethod
    def parse(cls, arg: str | None, spec: str) -> Attack:
        source, _, rest = (arg or "").partition("#")
        if source not in TRANSFER_SOURCES:
            raise SafedoseError(f"attack {spec!r}: {_unknown('transfer source', source, TRANSFER_SOURCES)}")
        method, _, model = rest.partition("@")
        method = method or "PAIR"
        if method.upper() not in TRANSFER_METHODS:
            raise SafedoseError(f"attack {spec!r}: {_unknown('method', method, TRANSFER_METHODS)}")
        method, model = method.upper(), model or TRANSFER_DEFAULT_SOURCE
        return cls(f"transfer:{source}#{method}@{model}", source, method, model)

    @property
    def plain_set(self) -> str:
        return TRANSFER_SOURCES[self.source][1]

    def prepare(self) -> None:
        if not self.prompts():
            models = sorted({m for _, m, _ in _transfer_rows(self.source)})
            raise SafedoseError(f"attack {self.name!r}: no {self.method} prompt was optimised against {self.model!r} "
                                f"(source models: {', '.join(models)})")  # fmt: skip

    def check_set(self, eval_set: str) -> None:
        if eval_set != self.plain_set:
            raise SafedoseError(f"attack {self.name!r} replaces the goals of {self.plain_set!r}; {eval_set!r} has no "
                                f"transferred prompts (add {self.plain_set} to eval_sets.harm)")  # fmt: skip

    def prompts(self) -> dict[str, tuple[str, str]]:
        """Plain prompt id -> (artifact id, jailbreak prompt)."""
        prefix = f"{self.plain_set}-"
        return {f"{prefix}{index}": (row_id, text) for (method, model, index), (row_id, text)
                in _transfer_rows(self.source).items() if method == self.method and model == self.model}  # fmt: skip

    def apply(self, prompts: Sequence[EvalPrompt], *, source: str | None = None) -> list[AttackedPrompt]:
        found = self.prompts()
        out = []
        for p in prompts:
            self.check_set(p.eval_set)
            if p.id in found:
                artifact, text = found[p.id]
                out.append(self._attacked(p, text, self._info(p, variant=artifact)))
        return out


@functools.cache
def _transfer_rows(source: str) -> dict[tuple[str, str, int], tuple[str, str]]:
    """(method, source model, JBB row index) -> (artifact id, prompt)."""
    dataset = TRANSFER_SOURCES[source][0]
    out = {}
    for i, row in enumerate(load_raw(dataset), 1):
        try:
            key = (str(row["method"]), str(row["source_model"]), int(row["index"]))
            out[key] = (str(row["id"]), str(row["prompt"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(_file_of(dataset), i, f"not a JailbreakBench attack row ({e})") from None
    return out


def parse_attack(spec: str) -> Attack:
    """The attack a spec names, or a one-line error with a did-you-mean."""
    text = spec.strip()
    family, sep, arg = text.partition(":")
    cls = ATTACKS.get(family)
    return cls.parse(arg if sep else None, text)


def attack_specs() -> list[tuple[str, str]]:
    """(family, summary) of every registered attack."""
    return [(name, ATTACKS.get(name).summary) for name in ATTACKS]


def _no_argument(arg: str | None, spec: str) -> None:
    if arg is not None:
        raise SafedoseError(f"attack {spec!r} takes no argument (drop ':{arg}')")


def _positive(text: str, spec: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise SafedoseError(f"attack {spec!r}: {what} must be a positive whole number, got {text!r}")
    return int(text)


def _looks_like_file(name: str) -> bool:
    return Path(name).expanduser().is_file()


def _unknown(kind: str, name: str, known: Iterable[str]) -> str:
    import difflib

    names = list(known)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    files = "; or a file" if kind.startswith("template") else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(names)}{files})"
