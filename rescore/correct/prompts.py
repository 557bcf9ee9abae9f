"""Prompt templates: discovery in prompts/ (or a user's file), header parsing, rendering to chat messages.

A template is a Jinja2 file with a header comment (``{#- name: / description: / variables: -#}``) and two
blocks, ``system`` and ``user``, rendered into the two chat messages. Templates put everything that is
the same for every utterance first, so the backend can reuse the KV cache of that prefix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox

PROMPTS_DIR = Path(__file__).parents[1] / "prompts"  # package data (in a checkout: a link to prompts/)
VARIABLES = ("best", "hypotheses", "others", "domain", "entities", "examples")


_DIGITS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def spelled(text: str) -> str:
    """A hypothesis in the spelled-letters convention: letter runs and hyphenated letters split, digits as words.

    "Rubout GMEF39" -> "RUBOUT G M E F THREE NINE", "C-I-N-D-Y." -> "C I N D Y", "655-8740" -> "SIX FIVE ...".
    Small LLMs cannot see the letters inside a token like "GMEF", so a template for a spelling domain shows
    this view beside the hypothesis. A quoted (JSON string) input gives a quoted output.
    """
    quoted = len(text) >= 2 and text[0] == text[-1] == '"'
    if quoted:
        try:
            text = json.loads(text)
        except json.JSONDecodeError:
            quoted = False
    words: list[str] = []
    for token in text.split():
        parts = [p for p in re.split(r"[-.]", token.strip(",;:!?.\"'()")) if p]
        single = len(parts) > 1 and all(len(p) == 1 or p.isdigit() for p in parts)
        for part in parts:
            mixed = bool(re.search(r"\d", part)) and bool(re.search(r"[A-Za-z]", part))  # "gmef39"
            for run in re.findall(r"[A-Za-z']+|\d", part):
                if run.isdigit():
                    words.append(_DIGITS[int(run)])
                elif single or mixed or (run.isupper() and len(run) > 1 and "'" not in run):
                    words.extend(run.upper())
                else:
                    words.append(run.upper())
    out = " ".join(words)
    return json.dumps(out, ensure_ascii=False) if quoted else out


FALLBACKS = {"spelled": spelled}


class TemplateError(ValueError):
    """A template that cannot be found, parsed or rendered."""


def prompt_dirs() -> list[Path]:
    """``$RESCORE_PROMPTS`` (colon-separated) first, then the prompts/ folder shipped with the code."""
    extra = [Path(p) for p in os.environ.get("RESCORE_PROMPTS", "").split(os.pathsep) if p]
    return [*extra, PROMPTS_DIR]


@dataclass
class PromptTemplate:
    """A loaded template: its header fields and the compiled Jinja2 template."""

    name: str
    path: Path
    description: str
    variables: dict[str, str] = field(default_factory=dict)
    source: str = ""
    # what the corrector writes when it abstains, in the template's output convention: "" the reranked text
    # as it is, "spelled" its spelled view (a spelling template's answers are spelled; the fallback must be too)
    fallback: str = ""

    def abstain_text(self, reranked: str) -> str:
        return FALLBACKS[self.fallback](reranked) if self.fallback else reranked

    def __post_init__(self) -> None:
        # Sandboxed: a user's template file cannot reach Python internals through attribute access.
        self._env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            undefined=jinja2.ChainableUndefined, keep_trailing_newline=False
        )
        self._env.filters["spelled"] = spelled
        try:
            self._template = self._env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{self.path}:{e.lineno}: {e.message}") from None
        missing = {"system", "user"} - set(self._template.blocks)
        if missing:
            raise TemplateError(f"{self.path}: no {{% block {sorted(missing)[0]} %}} in the template")

    def used_variables(self) -> set[str]:
        """Variables the template body reads (for checking the header against the body)."""
        return jinja2.meta.find_undeclared_variables(self._env.parse(self.source))

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages (system, user) for one utterance."""
        unknown = set(variables) - set(VARIABLES)
        if unknown:
            raise TemplateError(f"unknown template variable(s): {', '.join(sorted(unknown))}")
        ctx = self._template.new_context(dict(variables))
        try:
            system = "".join(self._template.blocks["system"](ctx)).strip()
            user = "".join(self._template.blocks["user"](ctx)).strip()
        except jinja2.TemplateError as e:
            raise TemplateError(f"{self.path}: {e}") from None
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


_HEADER = re.compile(r"^\s*\{#-?(.*?)-?#\}", re.S)


def parse_header(source: str) -> tuple[str, str, dict[str, str], str]:
    """``(name, description, {variable: meaning}, fallback)`` from the leading comment of a template."""
    m = _HEADER.match(source)
    if not m:
        return "", "", {}, ""
    name, desc_lines, variables, fallback = "", [], {}, ""
    section = None
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        key, _, value = line.strip().partition(":")
        if not line.startswith((" ", "\t")) and key in {"name", "description", "variables", "fallback"}:
            section = key
            if key == "name":
                name = value.strip()
            elif key == "fallback":
                fallback = value.strip()
            elif key == "description" and value.strip():
                desc_lines.append(value.strip())
            continue
        if section == "description":
            desc_lines.append(line.strip())
        elif section == "variables" and value:
            variables[key.strip()] = value.strip()
        elif section == "variables" and variables:  # continuation of the previous variable
            last = list(variables)[-1]
            variables[last] += " " + line.strip()
    return name, " ".join(desc_lines), variables, fallback


def load_template(name_or_path: str | os.PathLike[str]) -> PromptTemplate:
    """A template by name (``nbest``: prompts/nbest.j2) or by the path of a user's file."""
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        for d in prompt_dirs():
            cand = d / f"{name_or_path}.j2"
            if cand.is_file():
                p = cand
                break
        else:
            known = ", ".join(t.name for t in list_templates())
            raise TemplateError(f"unknown prompt template {str(name_or_path)!r}: not a file nor one of: {known}")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read template {p}: {e}") from None
    name, description, variables, fallback = parse_header(source)
    if fallback and fallback not in FALLBACKS:
        raise TemplateError(f"{p}: unknown fallback {fallback!r} (expected one of {', '.join(FALLBACKS)})")
    return PromptTemplate(name or p.stem, p, description, variables, source, fallback)


def list_templates() -> list[PromptTemplate]:
    """Every template in :func:`prompt_dirs` (earlier folders shadow later ones of the same name)."""
    seen: dict[str, PromptTemplate] = {}
    for d in prompt_dirs():
        for f in sorted(d.glob("*.j2")) if d.is_dir() else []:
            if f.stem not in seen:
                try:
                    seen[f.stem] = load_template(f)
                except TemplateError:
                    continue
    return sorted(seen.values(), key=lambda t: t.name)
