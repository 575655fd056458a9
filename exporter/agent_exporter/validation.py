"""The one validation mechanism of the YAML files: typed msgspec Structs, errors naming the key path.

config.py (observability.yaml) and webconfig.py (the exporter-toolkit web
config) declare their keys as `Section`s: frozen Structs that refuse unknown
keys, with constraints as Annotated `msgspec.Meta` (whose `description` says
what is expected, in errors and in the JSON Schema).  Checks msgspec cannot
express (one key against another, order, uniqueness) raise `Invalid` from
`__post_init__`.  `decode()` converts a parsed YAML document with msgspec and
turns its error into one message: the key path
(`observability.metrics.execution_buckets[2]`), what was expected, what was
found.  A key left empty (null in YAML) takes its default, as in Go's YAML.
`load_yaml()` parses such a file as Prometheus and Alertmanager do: a key
given twice in one mapping is an error, not the last one silently winning.
"""

from __future__ import annotations

import math
import re
import types
import typing

import msgspec
import yaml


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A mapping of a config file: its keys are the fields."""


class Invalid(ValueError):
    """A check of `__post_init__` failed; `key` is relative to the section ("" for the section itself)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class Redacted:
    """Annotated metadata: an error about this value never repeats it (it may be a secret)."""


REDACTED = Redacted()


def join(path: str, key: str) -> str:
    """`key` (a name, `[i]`, or a dotted relative path) below `path`."""
    if not key or not path:
        return key or path
    return path + key if key.startswith("[") else f"{path}.{key}"


def decode(document, cls: type, *, root: str, error: type[Exception]):
    """`document` as a `cls`, or `error(path, message)` for its first problem."""
    document = _without_nulls(document, cls)
    _check_finite(document, root, error)
    try:
        return msgspec.convert(document, cls)
    except msgspec.ValidationError as exc:
        raise error(*_explain(exc, document, cls, root)) from None


# -- before msgspec ------------------------------------------------------------------


def _without_nulls(value, tp):
    """`value` with the null-valued keys of its mappings removed, so that they take their defaults."""
    tp = _concrete(tp, value)
    if isinstance(value, dict) and _is_struct(tp):
        fields = _struct_fields(tp)
        return {key: _without_nulls(item, fields.get(key)) for key, item in value.items() if item is not None}
    if isinstance(value, dict) and typing.get_origin(tp) is dict:
        item_type = typing.get_args(tp)[1]
        return {key: _without_nulls(item, item_type) for key, item in value.items()}
    if isinstance(value, list) and typing.get_origin(tp) is tuple:
        return [_without_nulls(item, _item_type(tp, i)) for i, item in enumerate(value)]
    return value


def _check_finite(value, path: str, error) -> None:
    # msgspec's bounds let infinity through (`gt=0` holds for it); YAML writes it `.inf`.
    if isinstance(value, float) and not math.isfinite(value):
        raise error(path, f"expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, join(path, str(key)), error)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]", error)


# -- msgspec's error, explained --------------------------------------------------------

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _explain(exc: msgspec.ValidationError, document, cls: type, root: str) -> tuple[str, str]:
    """(key path, message) for msgspec's `message - at `$.path``."""
    message, at, where = str(exc).rpartition(" - at `")
    if not at:
        message, where = str(exc), "$`"
    in_key = where.startswith("key` in `")
    where = where.removeprefix("key` in `")[1:-1]       # without the leading $ and the closing backtick

    # Follow the path through the types and the document: the value at fault and its type.
    tp, value, path = cls, document, root
    for name, index in _SEGMENT.findall(where):
        tp = _concrete(tp, value)
        if name:
            tp = _struct_fields(tp)[name]
            value = value.get(name) if isinstance(value, dict) else None
            path = join(path, name)
        elif index == "...":        # msgspec does not name the key of a mapping's value
            tp = typing.get_args(tp)[1]
            key = _first_failing(value.items(), tp)
            value, path = value[key], join(path, str(key))
        else:
            tp, value, path = _item_type(tp, int(index)), value[int(index)], f"{path}[{index}]"

    cause = exc.__cause__
    if isinstance(cause, Invalid):
        return join(path, cause.key), cause.message
    if cause is not None:       # a check's own ValueError: its message, never the document
        return path, str(cause)
    if message.startswith("Object contains unknown field `"):
        key = message.split("`")[1]
        known = ", ".join(sorted(_struct_fields(_concrete(tp, value))))
        return join(path, key), f"unknown key; known keys: {known}"
    if message.startswith("Object missing required field `"):
        return path, f"missing required key {message.split('`')[1]!r}"
    if in_key:
        tp = _concrete(tp, value)
        key_type = str if _is_struct(tp) else typing.get_args(tp)[0]
        key = _first_failing(((k, k) for k in value), key_type)
        return path, f"expected {_expected(key_type)} as a key, got {key!r}"
    if _is_redacted(tp):
        return path, f"expected {_expected(tp)}"
    if isinstance(value, str) and _URL_CREDENTIALS.match(value):
        return path, f"expected {_expected(tp)}, got a URL with user:password@ (credentials go in files)"
    return path, f"expected {_expected(tp)}, got {_shown(value)}"


def _shown(value) -> str:
    """A value at fault, as an error shows it: a mapping or list by its kind only, as its contents may
    hold secrets (and would fill the screen)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return repr(value)


# A URL with user information: a value never repeated in an error (config.URL refuses it).
_URL_CREDENTIALS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]*@")


def _first_failing(pairs, tp):
    """The first key whose value does not convert to `tp` (the one msgspec stopped at)."""
    for key, value in pairs:
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError:
            return key
    raise AssertionError("msgspec reported an error that no value reproduces")


def _expected(tp) -> str:
    """What a value of type `tp` is, in a reader's words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        described = [m.description for m in args[1:] if isinstance(m, msgspec.Meta) and m.description]
        return described[0] if described else _expected(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in args if arg is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        return "a list" if args[-1] is Ellipsis else f"a list of {len(args)} items"
    if origin is dict or _is_struct(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


# -- types --------------------------------------------------------------------------


def _concrete(tp, value):
    """`tp` without Annotated; of a union, the member `value` is meant for (a mapping's, for a mapping)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            mappings = [m for m in members if _is_mapping_type(m)]
            tp = mappings[0] if mappings and isinstance(value, dict) else members[0]
        else:
            return tp


def _is_mapping_type(tp) -> bool:
    tp = _concrete(tp, None)
    return _is_struct(tp) or typing.get_origin(tp) is dict


def _is_struct(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _struct_fields(tp) -> dict:
    return {f.encode_name: f.type for f in msgspec.structs.fields(tp)}


def _item_type(tp, i: int):
    """The type of item `i` of a tuple type (object past the end of a fixed-length one)."""
    args = typing.get_args(tp)
    if args[-1] is Ellipsis:
        return args[0]
    return args[i] if i < len(args) else object


def _is_redacted(tp) -> bool:
    if typing.get_origin(tp) is typing.Annotated:
        return any(isinstance(m, Redacted) for m in typing.get_args(tp)[1:]) or _is_redacted(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_redacted(arg) for arg in typing.get_args(tp))
    return False


# -- YAML ---------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader refusing a key given twice in one mapping, as Go's yaml.UnmarshalStrict does for
    Prometheus and Alertmanager: of two `observability:` blocks, the first would be lost unseen."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue        # `<<: *defaults` merges keys that the mapping's own may override
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:   # an unhashable key: SafeLoader refuses it itself
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice in one mapping",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(data: bytes, *, unique_keys: bool = True):
    """The document in `data` (UTF-8, or UTF-16 with its byte order mark, as YAML allows);
    yaml.YAMLError for one that does not parse or, unless `unique_keys` is false, repeats a key.
    Its message says what is wrong and where, never quoting the file: the line at fault may be a
    secret's (a password hash, a token pasted where a file name goes)."""
    try:
        return yaml.load(data, Loader=_UniqueKeyLoader if unique_keys else yaml.SafeLoader)    # no Python objects
    except yaml.reader.ReaderError as exc:
        raise yaml.YAMLError(f"not UTF-8 text (nor UTF-16 with a byte order mark): {exc.reason} at byte "
                             f"{exc.position}") from None
    except yaml.MarkedYAMLError as exc:
        what = "; ".join(filter(None, (exc.context, exc.problem)))
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise yaml.YAMLError(what + where) from None
