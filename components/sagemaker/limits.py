"""The limits botocore's parameter validation leaves out, checked before any call.

botocore validates required members, types, unknown keys and minimums (``botocore.validate``), but not the
maximums, enums and patterns its own service models carry (DESIGN.md §9).  `check_request` runs botocore's
validation and then walks the request against the same model (``botocore.session.get_session()
.get_service_model``): a list or map longer than its ``max``, a string longer than its ``max``, outside its
``enum`` or not matching its ``pattern`` (whole string, as AWS means it), a number above its ``max``.  So the
limits come from the model of record — 40 metric definitions, a metric regex of at most 500 characters,
at most 100 hyperparameters of at most 2,500 characters, a 32-character tuning job name, the instance
types a training job can have — with no copy of them here.  Rules that are in no model (a canary of at
most half the capacity) are the settings' (`components.sagemaker.settings`).

botocore is imported inside the functions (it is a dependency of boto3, present in every image).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any


class RequestLimitError(ValueError):
    """A request SageMaker (or S3) would refuse; the message names the member and the limit."""


@functools.cache
def service_model(service: str) -> Any:
    """botocore's bundled model of ``service`` (sagemaker, s3, logs, …)."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


#: Java's Unicode classes in the models' patterns (tag keys and values) in Python's dialect: ``\w`` is letters,
#: digits and ``_`` (which the tag patterns allow anyway), ``\s`` white space (a little wider than ``\p{Z}``).
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\w", r"\p{Z}": r"\s", r"\p{Alnum}": "a-zA-Z0-9"}


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str] | None:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    try:
        return re.compile(pattern)
    except re.error:  # another construct of Java's dialect: the service checks it, not us
        return None


def check_request(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Check ``params`` of ``operation`` as botocore does, then against the model's maximums, enums, patterns.

    Raises:
        RequestLimitError: The first violation, naming the member path (``AlgorithmSpecification.MetricDefinitions``).
    """
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    shape = service_model(service).operation_model(operation).input_shape
    try:
        validate_parameters(dict(params), shape)
    except ParamValidationError as error:
        raise RequestLimitError(f"{operation}: {' '.join(str(error).split())}") from None
    _walk(params, shape, operation)


def _walk(value: Any, shape: Any, where: str) -> None:
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():
            if name in value:
                _walk(value[name], member, f"{where}.{name}")
    elif kind == "list":
        _max(len(value), meta, where, "items")
        for i, item in enumerate(value):
            _walk(item, shape.member, f"{where}[{i}]")
    elif kind == "map":
        _max(len(value), meta, where, "entries")
        for key, item in value.items():
            _walk(key, shape.key, f"{where} key {key!r}")
            _walk(item, shape.value, f"{where}[{key!r}]")
    elif kind == "string":
        _max(len(value), meta, where, "characters")
        if shape.enum and value not in shape.enum:
            raise RequestLimitError(f"{where}: {value!r} is not one of SageMaker's values: {', '.join(shape.enum)}")
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.fullmatch(value):
            raise RequestLimitError(f"{where}: {value!r} does not match the pattern {meta['pattern']}")
    elif kind in ("integer", "long", "float", "double") and "max" in meta and value > meta["max"]:
        raise RequestLimitError(f"{where}: {value} is above the maximum {meta['max']}")


def _max(size: int, meta: Mapping[str, Any], where: str, unit: str) -> None:
    if "max" in meta and size > meta["max"]:
        raise RequestLimitError(f"{where}: {size} {unit}, at most {meta['max']} allowed")


def enum_of(service: str, shape_name: str) -> tuple[str, ...]:
    """The values of an enum shape of the model (``TrainingInstanceType``, ``ProductionVariantInstanceType``)."""
    return tuple(service_model(service).shape_for(shape_name).enum)
