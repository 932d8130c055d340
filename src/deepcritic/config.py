"""Typed stage configs: dataclasses loadable from YAML and overridable on the command line.

Every stage has one dataclass. The same loader serves all of them:

* ``load_config(EvalConfig, "configs/paper.yaml", ["generation.temperature=0.6"])``
* on the CLI, :func:`add_dataclass_arguments` exposes every field as ``--field`` (nested fields as
  ``--generation.temperature``), plus ``--config FILE`` and short aliases a class declares in
  ``CLI_ALIASES`` (e.g. ``--backend`` for ``generation.kind``); :func:`add_preset_argument` adds
  ``--preset NAME``, a packaged ``configs/<stage>.<NAME>.yaml`` (:func:`preset_path`).

Precedence: dataclass defaults < preset < YAML file (``--config``) < command-line flags. Mappings
(e.g. ``generation``) merge key by key across the layers; lists and scalars are replaced.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.resources
import inspect
import io
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")
_MISSING = object()


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type (names the key)."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(key, args[0], value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        seq = [_coerce(key, inner, v) for v in items if v != ""]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    return _coerce_scalar(key, tp, value)


def _coerce_scalar(key: str, tp: Any, value: Any) -> Any:
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from e
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build a dataclass from a (possibly partial, possibly nested) mapping."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)}")
    kwargs = {k: _coerce(prefix + k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict view of a config (for YAML, MLflow params, KFP component inputs)."""
    return dataclasses.asdict(obj)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"{dotted}: '{p}' is not a section")
    cur[parts[-1]] = value


def _read_yaml(path: str | Path) -> dict[str, Any]:
    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return loaded


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    preset: str | Path | None = None,
) -> T:
    """Defaults < YAML at ``preset`` < YAML at ``path`` < ``key.sub=value`` overrides."""
    data: dict[str, Any] = _read_yaml(preset) if preset else {}
    if path:
        data = _merge(data, _read_yaml(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(value) if value else value)
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def _walk_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out.extend(_walk_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((prefix + f.name, tp))
    return out


_NOT_HELP = ("fmt:", "type:", "noqa", "pragma")  # tool directives, not documentation


def _comment_text(comment: str) -> str:
    text = comment.lstrip("#").strip()
    return "" if text.startswith(_NOT_HELP) else text


@functools.cache
def _class_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in ``cls``'s own source: the ``# ...`` on the field's line(s),
    else the comment lines right above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = _comment_text(tok.string)
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    node = ast.parse(source).body[0]
    out: dict[str, str] = {}
    for item in getattr(node, "body", []):
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        end = item.end_lineno or item.lineno
        inline = [comments[n] for n in range(item.lineno, end + 1) if comments.get(n)]
        above: list[str] = []
        n = item.lineno - 1
        while n in comments and n not in code_lines:
            above.insert(0, comments[n])
            n -= 1
        text = " ".join(inline) or " ".join(t for t in above if t)
        if text:
            out[item.target.id] = text
    return out


def field_comment(cls: type, name: str) -> str:
    """The comment documenting field ``name`` of dataclass ``cls`` (searched along the MRO)."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return _class_comments(klass).get(name, "")
    return ""


def _field_help(cls: type, dotted: str) -> str:
    owner, parts = cls, dotted.split(".")
    hints = _hints(owner)
    for part in parts[:-1]:
        owner = hints[part]
        hints = _hints(owner)
    name = parts[-1]
    field = next(f for f in dataclasses.fields(owner) if f.name == name)  # type: ignore[arg-type]
    text = field_comment(owner, name)
    if field.default is not dataclasses.MISSING:
        text = f"{text} (default: {field.default!r})" if text else f"default: {field.default!r}"
    return text.replace("%", "%%")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Expose every (nested) field as ``--dotted.name``; values stay strings until loading."""
    parser.add_argument("--config", help="YAML file with values for this stage's config")
    aliases: dict[str, str] = getattr(cls, "CLI_ALIASES", {})
    reverse: dict[str, list[str]] = {}
    for alias, target in aliases.items():
        reverse.setdefault(target, []).append(alias)
    for dotted, tp in _walk_fields(cls):
        flags = [f"--{dotted.replace('_', '-')}"] + [f"--{a}" for a in reverse.get(dotted, [])]
        parser.add_argument(
            *flags,
            dest=f"cfg:{dotted}",
            default=_MISSING,
            metavar=_metavar(tp),
            help=argparse.SUPPRESS if dotted.count(".") > 1 else _field_help(cls, dotted),
        )


def _metavar(tp: Any) -> str:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    return name.upper()


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build the stage config from parsed CLI args (``--preset``, ``--config`` file, then flags)."""
    overrides = [
        f"{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("cfg:") and v is not _MISSING
    ]
    name, stage = getattr(args, "preset", None), getattr(args, "preset_stage", None)
    preset = resolve_preset(stage, name) if name and stage else None
    return load_config(cls, getattr(args, "config", None), overrides, preset=preset)


# ---------------------------------------------------------------- packaged presets


def presets_dir() -> Path:
    """``src/deepcritic/configs`` (packaged with the wheel)."""
    return Path(str(importlib.resources.files("deepcritic") / "configs"))


def preset_path(stage: str, preset: str) -> Path | None:
    """``configs/<stage>.<preset>.yaml`` when it exists."""
    if not preset:
        return None
    path = presets_dir() / f"{stage}.{preset}.yaml"
    return path if path.is_file() else None


def available_presets(stage: str) -> list[str]:
    """The preset names shipped for ``stage`` (``configs/<stage>.*.yaml``), sorted."""
    return sorted(
        p.name[len(stage) + 1 : -len(".yaml")] for p in presets_dir().glob(f"{stage}.*.yaml")
    )


def resolve_preset(stage: str, preset: str) -> Path:
    """The preset's file, or a :class:`ConfigError` listing the presets ``stage`` has."""
    path = preset_path(stage, preset)
    if path is None:
        known = ", ".join(available_presets(stage)) or "none"
        raise ConfigError(
            f"preset {preset!r}: no configs/{stage}.{preset}.yaml; {stage} presets: {known}"
        )
    return path


def add_preset_argument(parser: argparse.ArgumentParser, stage: str) -> None:
    """``--preset NAME``: a packaged ``configs/<stage>.<NAME>.yaml`` under ``--config`` and flags."""
    names = ", ".join(available_presets(stage))
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help=f"packaged preset configs/{stage}.NAME.yaml ({names}); --config and flags override it",
    )
    parser.set_defaults(preset_stage=stage)
