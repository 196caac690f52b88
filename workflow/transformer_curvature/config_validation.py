"""Check the workflow's config against its JSON schema, with messages that name each key.

jsonschema's own messages leave out where in the config a value sits. Here
each problem is one line that starts with the key path, e.g.
``growth.experiments.softmax.norm: 'post' is not allowed; allowed values:
'none', 'pre'.``, and all problems are reported at once.

This module imports no torch, so the Snakefile can import it cheaply.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import yaml

from .experiments import ConfigError

# Tokens in the vocabulary, which is the width of the MLP baseline's last layer.
VOCAB_SIZE = 12

_JSON_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping of keys to values",
}


def _kind(value: Any) -> str:
    """Name the JSON type of a loaded YAML value, as a user reads it."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


# A YAML 1.1 float without a dot, such as 1e-2, loads as a string.
_FLOAT_WITHOUT_DOT = re.compile(r"[+-]?\d+[eE][+-]?\d+")

_MAX_VALUE_CHARS = 80


def load_schema(path: str | os.PathLike) -> dict[str, Any]:
    """Load a JSON schema written in YAML and check that it is a valid schema.

    Raises:
        jsonschema.SchemaError: If the schema itself is invalid.
    """
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


def key_path(parts: Iterable[str | int]) -> str:
    """Join a path into the config as ``growth.experiments.softmax.num_layers[0]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _child_path(parent: Iterable[str | int], key: str | int) -> str:
    return key_path([*parent, key])


def _show(value: Any) -> str:
    """Return ``repr(value)``, shortened to a readable length."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _listing(values: Iterable[Any]) -> str:
    return ", ".join(repr(value) for value in values)


def _suggestion(value: Any, choices: Iterable[Any]) -> str:
    """Return ``" Did you mean 'x'?"`` for a close match among string choices, or ``""``."""
    if not isinstance(value, str):
        return ""
    strings = [choice for choice in choices if isinstance(choice, str)]
    matches = difflib.get_close_matches(value, strings, n=1)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def _resolve(schema: dict[str, Any], node: Any) -> dict[str, Any]:
    """Follow the local ``$ref``s of `node`.

    A description beside a ``$ref`` overrides the description of its target.
    """
    if not isinstance(node, dict):
        return {}
    resolved = dict(node)
    while "$ref" in resolved:
        reference = resolved.pop("$ref")
        target: Any = schema
        for part in reference.removeprefix("#/").split("/"):
            target = target[part]
        resolved = {**target, **resolved}
    return resolved


def describe_key(schema: dict[str, Any], path: Iterable[str | int]) -> str | None:
    """Return the schema's description of the key at `path`, or None."""
    node = _resolve(schema, schema)
    for part in path:
        if isinstance(part, int):
            child = node.get("items")
        else:
            child = node.get("properties", {}).get(part, node.get("additionalProperties"))
        if not isinstance(child, dict):
            return None
        node = _resolve(schema, child)
    description = node.get("description")
    return " ".join(description.split()) if description else None


def _with_description(message: str, description: str | None) -> str:
    return f"{message} {description}" if description else message


# Problems with a number's range, by jsonschema validator.
_BOUND_PROBLEMS = {
    "minimum": "is too small; the minimum is {}.",
    "exclusiveMinimum": "is too small; it must be greater than {}.",
    "maximum": "is too large; the maximum is {}.",
    "exclusiveMaximum": "is too large; it must be less than {}.",
}


def _repeated_items(items: list[Any]) -> list[Any]:
    """Return the items that occur more than once, in order of their second occurrence."""
    seen: list[Any] = []
    repeated: list[Any] = []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.append(item)
    return repeated


def _key_problems(error: jsonschema.ValidationError, schema: dict[str, Any]) -> list[str] | None:
    """Describe unknown, missing or badly named keys, one line per key.

    Returns None for errors about a value rather than a key.
    """
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        return [
            f"{_child_path(path, key)}: unknown key; allowed keys here: "
            f"{', '.join(allowed)}.{_suggestion(key, allowed)}"
            for key in error.instance
            if key not in allowed
        ]
    if error.validator == "required":
        return [
            _with_description(
                f"{_child_path(path, key)}: missing; this key is required.",
                describe_key(schema, [*path, key]),
            )
            for key in error.validator_value
            if key not in error.instance
        ]
    if "propertyNames" in error.absolute_schema_path:
        return [
            f"{_child_path(path, error.instance)}: invalid name {error.instance!r}; use "
            "letters, digits and '_' only, because the name becomes part of file names."
        ]
    return None


def _value_problem(error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    """Describe a problem with the value at the error's path: what it is and what is allowed."""
    path = list(error.absolute_path)
    where = key_path(path)
    value = error.instance
    kind = error.validator
    expected = error.validator_value
    own_description = error.schema.get("description") if isinstance(error.schema, dict) else None
    key_description = own_description or describe_key(schema, path)

    if kind == "enum":
        return (
            f"{where}: {_show(value)} is not allowed; allowed values: "
            f"{_listing(expected)}.{_suggestion(value, expected)}"
        )
    if kind == "const":
        message = (
            f"{where}: {_show(value)} is not allowed; the only allowed value here is "
            f"{expected!r}."
        )
        return _with_description(message, own_description)
    if kind == "not":
        return _with_description(f"{where}: {_show(value)} is not allowed here.", key_description)
    if kind == "type":
        hint = ""
        if expected == "number" and isinstance(value, str) and _FLOAT_WITHOUT_DOT.fullmatch(value):
            hint = " YAML reads a float without a dot as a string: write 1.0e-2, not 1e-2."
        message = (
            f"{where}: {_show(value)} is {_kind(value)}, expected "
            f"{_JSON_TYPES.get(expected, expected)}.{hint}"
        )
        return _with_description(message, key_description)
    if kind in _BOUND_PROBLEMS:
        return f"{where}: {_show(value)} {_BOUND_PROBLEMS[kind].format(expected)}"
    if kind == "minItems":
        return f"{where}: the list {_show(value)} is too short; list at least {expected} item(s)."
    if kind == "uniqueItems":
        return (
            f"{where}: {_show(value)} lists {_listing(_repeated_items(value))} more than "
            "once; list each item once."
        )
    if kind == "minProperties":
        return f"{where}: is empty; define at least {expected} entry."
    if kind == "pattern":
        message = f"{where}: {_show(value)} does not match the pattern {expected}."
        return _with_description(message, key_description)
    return _with_description(f"{where}: {error.message}.", key_description)


def describe_error(error: jsonschema.ValidationError, schema: dict[str, Any]) -> list[str]:
    """Turn one jsonschema error into lines ``<key path>: <problem and what is allowed>``."""
    key_lines = _key_problems(error, schema)
    if key_lines is not None:
        return key_lines
    return [_value_problem(error, schema)]


def _walk(value: Any, path: list[str | int]) -> Iterable[tuple[list[str | int], Any]]:
    """Yield ``(path, leaf value)`` for every leaf of a nested config."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from _walk(child, [*path, key])
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, [*path, index])
    else:
        yield path, value


def _nonfinite_errors(config: Mapping[str, Any]) -> list[str]:
    """Report numbers that are NaN or infinite (YAML's .nan and .inf)."""
    return [
        f"{key_path(path)}: {value!r} is not a finite number; use a finite value."
        for path, value in _walk(config, [])
        if isinstance(value, float) and not math.isfinite(value)
    ]


def _exact_size_errors(config: Mapping[str, Any]) -> list[str]:
    """Report blocks that ``estimator: exact`` cannot materialize under ``exact_max_size``.

    Attention blocks (one head, ``d_head = d_model``) have ``d_model**2``
    entries. The MLP baseline's layers are ``d_model x d_model`` and, last,
    ``VOCAB_SIZE x d_model``.
    """
    growth = config["growth"]
    if growth["estimator"] != "exact":
        return []
    d_model = growth["d_model"]
    sizes = {}
    for name, experiment in growth["experiments"].items():
        if experiment["model"] == "mlp":
            hidden = d_model * d_model if max(experiment["num_layers"]) > 1 else 0
            sizes[name] = max(hidden, VOCAB_SIZE * d_model)
        else:
            sizes[name] = d_model * d_model
    largest_name = max(sizes, key=sizes.get)
    largest = sizes[largest_name]
    if largest <= growth["exact_max_size"]:
        return []
    return [
        f"growth.exact_max_size: {growth['exact_max_size']} is smaller than the largest "
        f"block ({largest} entries, in growth.experiments.{largest_name} with d_model "
        f"{d_model}); with estimator 'exact', raise exact_max_size to {largest} or use "
        "estimator 'hutchinson' or 'auto'."
    ]


def config_errors(config: Mapping[str, Any], schema: dict[str, Any]) -> list[str]:
    """Return one line per problem in `config`, schema problems first, sorted by key path."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    schema_errors = validator.iter_errors(config)
    # An error under anyOf or a $ref can be reported once per branch: keep one line each.
    lines = sorted({line for error in schema_errors for line in describe_error(error, schema)})
    lines += _nonfinite_errors(config)
    if not lines:
        lines += _exact_size_errors(config)
    return lines


def validate_config(config: Mapping[str, Any], schema_path: str | os.PathLike) -> None:
    """Check `config` against the schema at `schema_path`.

    Raises:
        ConfigError: Listing every problem, one per line, each starting with
            its key path and naming the value and what is allowed.
    """
    lines = config_errors(config, load_schema(schema_path))
    if lines:
        count = "1 problem" if len(lines) == 1 else f"{len(lines)} problems"
        raise ConfigError(
            f"Invalid config ({count}):\n"
            + "\n".join(f"  {line}" for line in lines)
            + "\nFix these keys in config.yaml or in the file given with --configfile."
        )
