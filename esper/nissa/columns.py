"""Python values -> Arrow arrays for the event writer, with every per-value loop inside C/C++.

Two buffer shapes reach here: row tuples (from `append`) and column chunks (from `append_columns`).
Fixed-size list fields (observations, masks) are stacked as one numpy array, which is far faster
than letting Arrow walk nested sequences.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)


def tuple_getter(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A C-level callable returning the values at `keys` as a tuple (itemgetter of one key would not)."""
    if len(keys) == 1:
        key = keys[0]
        return lambda r: (r[key],)
    return operator.itemgetter(*keys)


def is_fixed(f: pa.Field) -> bool:
    return pa.types.is_fixed_size_list(f.type)


def fixed_rows(f: pa.Field, values: Any, size: int | None = None, dtype: Any = None) -> np.ndarray:
    """Rows of a fixed-size list field as one (n, size) array of the field's dtype (a new array).

    `size` and `dtype` may be passed in by hot callers (pyarrow type attributes are slow to read).
    """
    size = f.type.list_size if size is None else size
    dtype = f.type.value_type.to_pandas_dtype() if dtype is None else dtype
    try:
        rows = np.array(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{f.name}: rows must be numeric sequences of length {size}: {exc}") from None
    if rows.ndim != 2 or rows.shape[1] != size:
        raise TypeError(f"{f.name}: expected rows of length {size}, got an array of shape {rows.shape}")
    return rows


def fixed_list(f: pa.Field, values: Sequence[Any] | np.ndarray) -> pa.FixedSizeListArray:
    """Rows (numpy rows, lists, or one 2-D array; None = null row) -> FixedSizeListArray."""
    mask = None
    if not isinstance(values, np.ndarray) and any(v is None for v in values):
        mask = pa.array([v is None for v in values])
        zeros = np.zeros(f.type.list_size)
        values = [zeros if v is None else v for v in values]
    flat = fixed_rows(f, values)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), type=f.type, mask=mask)


def to_array(f: pa.Field, values: Sequence[Any] | np.ndarray, where: str) -> pa.Array:
    """One field's values -> Arrow, or a TypeError naming `where.field`."""
    try:
        return fixed_list(f, values) if is_fixed(f) else pa.array(values, type=f.type)
    except CONVERSION_ERRORS as exc:
        raise TypeError(f"{where}.{f.name}: values do not convert to {f.type}: {exc}") from None


class RowConverter:
    """Row tuples in field order -> one array per field.

    Scalar fields go through one struct conversion; fixed-size list fields are stacked with numpy.
    """

    def __init__(self, fields: Sequence[pa.Field]) -> None:
        self.fields = list(fields)
        self.fixed = [(i, f) for i, f in enumerate(self.fields) if is_fixed(f)]
        scalar_idx = [i for i, f in enumerate(self.fields) if not is_fixed(f)]
        self.scalar_struct = pa.struct([self.fields[i] for i in scalar_idx])
        self.scalar_get = tuple_getter(scalar_idx) if self.fixed and scalar_idx else None

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[pa.Array]:
        if not self.fixed:
            return pa.array(rows, type=self.scalar_struct).flatten()
        fixed = {i: fixed_list(f, list(map(operator.itemgetter(i), rows))) for i, f in self.fixed}
        scalars = iter(pa.array(list(map(self.scalar_get, rows)), type=self.scalar_struct).flatten()
                       if self.scalar_get else ())
        return [fixed[i] if i in fixed else next(scalars) for i in range(len(self.fields))]

    def bad_value(self, row: tuple[Any, ...]) -> tuple[pa.Field, Any, Exception] | None:
        """The first value of `row` that does not convert (slow; only after a failed conversion)."""
        for f, v in zip(self.fields, row):
            try:
                pa.array([v], type=f.type)
            except CONVERSION_ERRORS as exc:
                return f, v, exc
        return None


def concat_chunks(f: pa.Field, chunks: list[Any], where: str) -> pa.Array:
    """Column chunks of one field -> one array. An int chunk stands for that many missing values."""
    total = sum(c if isinstance(c, int) else len(c) for c in chunks)
    if all(isinstance(c, int) for c in chunks):
        return pa.nulls(total, f.type)
    if all(isinstance(c, np.ndarray) for c in chunks):
        return to_array(f, np.concatenate(chunks), where)
    # Mixed or Python lists (strings, missing chunks): one flat Python list, converted once.
    parts = [[None] * c if isinstance(c, int) else (list(c) if is_fixed(f) or not isinstance(c, np.ndarray)
                                                     else c.tolist()) for c in chunks]
    return to_array(f, list(itertools.chain.from_iterable(parts)), where)
