"""The config half of the stage contract: frozen, validated, and round-tripped through JSON.

Every stage has an ``XConfig`` that subclasses :class:`StageConfig`: a frozen dataclass that
checks its fields on construction (``validate``) and is saved into every artifact the stage
writes (``to_dict``) and read back from it (``from_dict``). The CLI builds its options from
the same fields (``refusal_lens.cli.options``), so a new option is one edit.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from refusal_lens.errors import RefusalLensError

C = TypeVar("C", bound="StageConfig")


class StageConfig:
    """Mixin for a stage's frozen config dataclass."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RefusalLensError` naming the field and its allowed range."""

    def to_dict(self) -> dict[str, Any]:
        from refusal_lens.artifacts import to_jsonable

        return to_jsonable(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild a config saved by :meth:`to_dict` (lists become tuples where declared)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise RefusalLensError(
                f"{cls.__name__} has no field(s) {sorted(unknown)}; the artifact was written by "
                "another refusal-lens version. Save it again with this one."
            )
        return cls(**{k: _coerce(v, hints[k]) for k, v in data.items()})

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        if issubclass(hint, StageConfig):
            return hint.from_dict(value)
        return hint(**value)
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=False))
    if origin is dict and isinstance(value, dict) and args:
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    if origin is list and isinstance(value, list) and args:
        return [_coerce(v, args[0]) for v in value]
    return value


def check_range(name: str, value: float | int, low: float, high: float) -> None:
    """Raise unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise RefusalLensError(f"{name} must lie in [{low}, {high}], not {value}.")


def check_positive(name: str, value: float | int) -> None:
    if not value > 0:
        raise RefusalLensError(f"{name} must be positive, not {value}.")
