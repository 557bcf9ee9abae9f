"""Command-line flags generated from a stage's options model, so that each option is declared once.

``@stage_flags(Model)`` replaces a command's ``flags`` parameter by one option per field of ``Model``: the
flag is the field's name with dashes (``beam_size`` -> ``--beam-size``), its type, default and help are the
field's (help is ``Field(description=...)``); a list makes the flag repeatable, a bool that is on by default
gets its ``--no-`` form, a :data:`rescore.stages.base.PathStr` takes a path. The command receives the values
the user gave, the defaults left to the model (which tells "given" from "default" by ``model_fields_set``),
and builds the model in one call, ``flags.build()``: a validation error there is the one-line usage error
(exit 2) that names the flag. Hand-written parameters (input, ``-o``, ``--resume`` ...) stay as they are,
and the generated options take the place of ``flags`` among them.

Another command adopts it the same way; ``rescore deep transcribe``, for instance::

    @stage_flags(DeepOptions, names={"checkpoint": ("--model",)}, section="deep")
    def transcribe(
        nbest: Annotated[Path, typer.Argument(help=...)],
        output: Annotated[Path, typer.Option("-o", "--output", help=...)],
        flags: StageFlags[DeepOptions],
        resume: Annotated[bool, typer.Option(help=...)] = True,
    ) -> None:
        stage = DeepStage(flags.build())

``exclude`` leaves fields out (``enabled`` by default: a run config's switch, not a command's), ``only``
keeps a few (``rescore tune`` takes the LM flags of RerankOptions), ``names`` gives a field other flag
names (the first long one is the one errors name), ``section`` names the run config's section that holds the
same keys (``--help`` shows the flags under that heading). ``docs/cli.md`` lists every command made this way
(:mod:`rescore.cli.reference`).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from rescore.cli.console import fail, given
from rescore.stages.base import IsPath

FLAGS_PARAM = "flags"  # the command's parameter that the generated options replace
CONTEXT_PARAM = "stage_flags_context"  # added when the command takes no typer.Context of its own

Options = TypeVar("Options", bound=BaseModel)


@dataclass(frozen=True)
class FlagSpec:
    """What a decorated command generated: from which model, for which fields, under which flag names."""

    model: type[BaseModel]
    fields: tuple[str, ...]
    flags: Mapping[str, str]  # field -> the flag errors name
    section: str | None = None  # the run config's section with the same keys

    @property
    def panel(self) -> str:
        """The heading of the generated flags in ``--help``."""
        return f"Stage options ([{self.section}] in a run config)" if self.section else "Stage options"


@dataclass(frozen=True)
class StageFlags(Generic[Options]):
    """The stage options given on the command line, and the one call that makes them the options model."""

    spec: FlagSpec
    values: dict[str, Any]

    def build(self, **read: Any) -> Options:
        """The options model from the flags given and ``read``, values the command read itself (``--context-file``);
        a None among those is not given. A validation error exits 2 with one line naming each bad flag."""
        data = {**self.values, **{k: v for k, v in read.items() if v is not None}}
        try:
            return self.spec.model.model_validate(data)  # type: ignore[return-value]
        except ValidationError as e:
            raise fail(self.problems(e)) from None

    def problems(self, error: ValidationError) -> str:
        """One line: each problem after the flag it is about (a check across fields names none)."""
        out = []
        for err in error.errors():
            message = err["msg"].removeprefix("Value error, ")
            field = str(err["loc"][0]) if err["loc"] else None
            out.append(f"{self.spec.flags.get(field, field)}: {message}" if field else message)
        return "; ".join(out)


def stage_flags(
    model: type[BaseModel],
    *,
    exclude: Collection[str] = ("enabled",),
    only: Collection[str] | None = None,
    names: Mapping[str, tuple[str, ...]] | None = None,
    section: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The decorator that gives a command one flag per field of ``model`` (see the module's docstring)."""
    fields = tuple(f for f in model.model_fields if f not in exclude and (only is None or f in only))
    names = dict(names or {})
    unknown = (set(names) | set(only or ())) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    decls = {f: names.get(f) or default_decls(f, model.model_fields[f]) for f in fields}
    spec = FlagSpec(model, fields, {f: error_flag(f, decls[f]) for f in fields}, section)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [flag_parameter(f, model.model_fields[f], decls[f], spec.panel) for f in fields]
        signature, context = command_signature(command, options)

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            ctx = kwargs[context] if context != CONTEXT_PARAM else kwargs.pop(CONTEXT_PARAM)
            values = {f: model_value(v) for f, v in given(ctx, list(fields)).items()}
            for f in fields:
                del kwargs[f]
            return command(**kwargs, **{FLAGS_PARAM: StageFlags(spec, values)})

        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        run.stage_flags = spec  # type: ignore[attr-defined]  # read by the reference and its tests
        return run

    return decorate


def command_signature(command: Callable[..., Any], options: list[inspect.Parameter]) -> tuple[inspect.Signature, str]:
    """The command's parameters with ``options`` in place of ``flags`` (all keyword-only: typer passes keywords,
    and defaults may then precede required ones), and the name of the parameter that receives the context."""
    params = list(inspect.signature(command, eval_str=True).parameters.values())
    names = [p.name for p in params]
    if FLAGS_PARAM not in names:
        raise TypeError(f"{command.__name__} has no {FLAGS_PARAM!r} parameter for the generated options")
    at = names.index(FLAGS_PARAM)
    context = next((p.name for p in params if p.annotation is typer.Context), None)
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [] if context else [inspect.Parameter(CONTEXT_PARAM, keyword, annotation=typer.Context)]
    merged = [*params[:at], *options, *params[at + 1 :], *added]
    signature = inspect.Signature([p.replace(kind=keyword) for p in merged])
    return signature, context or CONTEXT_PARAM


def flag_parameter(name: str, field: FieldInfo, decls: tuple[str, ...], panel: str) -> inspect.Parameter:
    """The typer option of one field: its type as the command line parses it, its default, its description
    (escaped: typer renders help as rich markup, where "[anything]" is a style tag and vanishes)."""
    info = typer.Option(*decls, help=escape(field.description or ""), rich_help_panel=escape(panel))
    default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
    annotation = Annotated[flag_type(field.annotation, field.metadata), info]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def default_decls(name: str, field: FieldInfo) -> tuple[str, ...]:
    """``--beam-size`` for ``beam_size``; a bool that is off by default is a plain switch (no ``--no-`` form)."""
    flag = "--" + name.replace("_", "-")
    if field.annotation is bool and field.get_default() is True:
        return ()  # typer's own `--flag/--no-flag`
    return (flag,)


def error_flag(name: str, decls: tuple[str, ...]) -> str:
    """The flag an error about field ``name`` names: its first long name."""
    longs = [d.split("/")[0] for d in decls if d.startswith("--")]
    return longs[0] if longs else "--" + name.replace("_", "-")


def flag_type(annotation: Any, metadata: Sequence[Any] = ()) -> Any:
    """How the command line parses a field of this type: a list anywhere makes the flag repeatable
    (``str | list[str]``: one or several), a :class:`IsPath` string is a Path, None stays optional."""
    if any(isinstance(m, IsPath) for m in metadata):
        return Path
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *marks = get_args(annotation)
        return flag_type(base, marks)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        kinds = [a for a in args if a is not type(None)]
        lists = [a for a in kinds if get_origin(a) is list]
        if len(kinds) > 1 and not lists:
            raise TypeError(f"no command-line type for {annotation}")
        one = flag_type(lists[0] if lists else kinds[0])
        return one | None if type(None) in args else one
    if origin is list:
        return list[flag_type(get_args(annotation)[0])]  # type: ignore[misc]
    if annotation in (str, int, float, bool) or origin is Literal:
        return annotation
    raise TypeError(f"no command-line type for {annotation}")


def model_value(value: Any) -> Any:
    """A parsed flag value as the model takes it: paths as strings, repeated values as a list."""
    if isinstance(value, (list, tuple)):
        return [model_value(v) for v in value]
    return str(value) if isinstance(value, Path) else value
