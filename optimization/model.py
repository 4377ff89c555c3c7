"""Linear and mixed-integer models built from whole arrays.

A model is families of variables (a tank level per step, a pump state per pump and step) and families of
constraints (the mass balance per tank and step), each added in one call with numpy index arrays, the way
linopy and HiGHS's own array interface build them. Nothing here loops over coefficients in Python: a
family of a million nonzeros costs a few numpy concatenations. `ModelBuilder.build()` freezes the families
into a `LinearModel`: cost vector, bounds, integrality and one sparse constraint matrix, which
`optimization.solver` passes to HiGHS in bulk (or, for cross-checking, to CBC through PuLP).

Terms of a constraint family are (columns, coefficients) pairs broadcast to (rows, k): row ``i`` is
``sum_k coefficients[i, k] * x[columns[i, k]]``. A family of ``m`` rows with one column per row passes
``columns`` of shape (m,); a sum over pumps passes (m, pumps); a scalar coefficient applies to all.

Each constraint family can say, row by row, what it means in the planner's words (``describe``), so that an
infeasible model can be explained ("tank T1 cannot stay above 1.20 m at 18:00") rather than reported as a
solver status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

__all__ = ["ColumnFamily", "LinearModel", "ModelBuilder", "RowFamily", "VariableKind"]

VariableKind = Literal["continuous", "integer", "binary"]


@dataclass(frozen=True)
class ColumnFamily:
    """Columns ``start .. start + size`` of the model, laid out in C order with this shape."""

    name: str
    start: int
    shape: tuple[int, ...]
    kind: VariableKind

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def columns(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.size, dtype=np.int64).reshape(self.shape)


@dataclass(frozen=True)
class RowFamily:
    """Rows ``start .. start + count`` of the model; ``describe(i)`` says what row ``i`` of the family means."""

    name: str
    start: int
    count: int
    describe: Callable[[int], str] | None = None

    def description(self, i: int) -> str:
        return self.describe(i) if self.describe is not None else f"{self.name}[{i}]"


@dataclass(frozen=True)
class LinearModel:
    """min cost·x + offset  s.t.  row_lower ≤ A·x ≤ row_upper,  col_lower ≤ x ≤ col_upper,  x integer where set."""

    name: str
    cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray  # bool per column
    matrix: sp.csr_array
    row_lower: np.ndarray
    row_upper: np.ndarray
    column_families: dict[str, ColumnFamily]
    row_families: dict[str, RowFamily]
    offset: float = 0.0

    @property
    def num_columns(self) -> int:
        return int(self.cost.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.row_lower.shape[0])

    @property
    def is_mip(self) -> bool:
        return bool(self.integrality.any())

    def stats(self) -> dict[str, int]:
        """Size of the model as a solver log would give it: rows, columns, integer columns, nonzeros."""
        return {
            "rows": self.num_rows,
            "columns": self.num_columns,
            "integer_columns": int(self.integrality.sum()),
            "nonzeros": int(self.matrix.nnz),
        }

    def row_family_of(self, row: int) -> RowFamily:
        for family in self.row_families.values():
            if family.start <= row < family.start + family.count:
                return family
        raise IndexError(f"row {row} is outside the model {self.name!r} ({self.num_rows} rows)")

    def values(self, x: np.ndarray, family: str) -> np.ndarray:
        """The part of a solution vector that belongs to a variable family, in the family's shape."""
        try:
            fam = self.column_families[family]
        except KeyError:
            raise KeyError(
                f"model {self.name!r} has no variable family {family!r}; it has {sorted(self.column_families)}"
            ) from None
        return np.asarray(x[fam.start : fam.start + fam.size]).reshape(fam.shape)


@dataclass
class ModelBuilder:
    """Collects variable and constraint families as arrays; `build()` makes the `LinearModel`."""

    name: str
    _columns: list[tuple[ColumnFamily, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    _rows: list[tuple[RowFamily, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list
    )
    _num_columns: int = 0
    _num_rows: int = 0
    _offset: float = 0.0

    def variables(
        self,
        family: str,
        shape: int | Sequence[int],
        *,
        lower: float | np.ndarray = 0.0,
        upper: float | np.ndarray = np.inf,
        cost: float | np.ndarray = 0.0,
        kind: VariableKind = "continuous",
    ) -> np.ndarray:
        """Add a family of variables; returns their column indices in the given shape.

        Bounds and cost broadcast to the shape. Binary variables get bounds [0, 1] (tighter bounds given
        are kept, so a pump out of service is a binary with upper bound 0).
        """
        if family in {f.name for f, *_ in self._columns}:
            raise ValueError(f"model {self.name!r}: variable family {family!r} added twice")
        shape_t = (shape,) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
        size = int(np.prod(shape_t, dtype=np.int64))
        lo = np.broadcast_to(np.asarray(lower, dtype=float), shape_t).ravel().copy()
        hi = np.broadcast_to(np.asarray(upper, dtype=float), shape_t).ravel().copy()
        c = np.broadcast_to(np.asarray(cost, dtype=float), shape_t).ravel().copy()
        if kind == "binary":
            lo = np.maximum(lo, 0.0)
            hi = np.minimum(hi, 1.0)
        if np.any(np.isnan(lo)) or np.any(np.isnan(hi)) or np.any(np.isnan(c)):
            raise ValueError(f"model {self.name!r}: variable family {family!r} has NaN bounds or cost")
        fam = ColumnFamily(family, self._num_columns, shape_t, kind)
        self._columns.append((fam, lo, hi, c))
        self._num_columns += size
        return fam.columns

    def constraints(
        self,
        family: str,
        terms: Sequence[tuple[np.ndarray, float | np.ndarray]],
        *,
        lower: float | np.ndarray = -np.inf,
        upper: float | np.ndarray = np.inf,
        describe: Callable[[int], str] | None = None,
    ) -> np.ndarray:
        """Add a family of rows ``lower ≤ Σ terms ≤ upper``; returns their row indices.

        The number of rows is the first dimension of the first term's columns. Each term's columns have
        shape (m,) or (m, k); its coefficients broadcast to that shape. For an equality pass the same
        array as lower and upper.
        """
        if not terms:
            raise ValueError(f"model {self.name!r}: constraint family {family!r} has no terms")
        if family in {f.name for f, *_ in self._rows}:
            raise ValueError(f"model {self.name!r}: constraint family {family!r} added twice")
        m = int(np.asarray(terms[0][0]).shape[0])
        rows_parts, cols_parts, vals_parts = [], [], []
        for number, (columns, coefficients) in enumerate(terms):
            cols = np.asarray(columns, dtype=np.int64)
            if cols.ndim == 1:
                cols = cols[:, None]
            cols = cols.reshape(cols.shape[0], -1)
            if cols.shape[0] != m:
                raise ValueError(
                    f"model {self.name!r}, constraint family {family!r}: term {number} has {cols.shape[0]} rows, "
                    f"expected {m} like the first term"
                )
            coef = np.asarray(coefficients, dtype=float)
            if coef.ndim == 1 and cols.shape[1] == 1 and coef.shape[0] == m:
                coef = coef[:, None]
            vals = np.broadcast_to(coef.reshape(coef.shape[0], -1) if coef.ndim > 1 else coef, cols.shape)
            rows_parts.append(np.broadcast_to(np.arange(m, dtype=np.int64)[:, None], cols.shape).ravel())
            cols_parts.append(cols.ravel())
            vals_parts.append(np.asarray(vals, dtype=float).ravel())
        rows = np.concatenate(rows_parts)
        cols = np.concatenate(cols_parts)
        vals = np.concatenate(vals_parts)
        if cols.size and (cols.min() < 0 or cols.max() >= self._num_columns):
            raise ValueError(f"model {self.name!r}, constraint family {family!r}: a term names an unknown column")
        lo = np.broadcast_to(np.asarray(lower, dtype=float), (m,)).copy()
        hi = np.broadcast_to(np.asarray(upper, dtype=float), (m,)).copy()
        fam = RowFamily(family, self._num_rows, m, describe)
        self._rows.append((fam, rows + self._num_rows, cols, vals, lo, hi))
        self._num_rows += m
        return np.arange(fam.start, fam.start + m, dtype=np.int64)

    def add_objective_constant(self, value: float) -> None:
        """A constant in the objective (costs that no decision changes), reported with the objective."""
        self._offset += float(value)

    def build(self) -> LinearModel:
        n = self._num_columns
        if self._columns:
            col_lower = np.concatenate([lo for _, lo, _, _ in self._columns])
            col_upper = np.concatenate([hi for _, _, hi, _ in self._columns])
            cost = np.concatenate([c for *_, c in self._columns])
            integrality = np.concatenate(
                [np.full(fam.size, fam.kind != "continuous") for fam, *_ in self._columns]
            ).astype(bool)
        else:
            col_lower = col_upper = cost = np.zeros(0)
            integrality = np.zeros(0, dtype=bool)
        if self._rows:
            rows = np.concatenate([r for _, r, *_ in self._rows])
            cols = np.concatenate([c for _, _, c, *_ in self._rows])
            vals = np.concatenate([v for _, _, _, v, _, _ in self._rows])
            row_lower = np.concatenate([lo for *_, lo, _ in self._rows])
            row_upper = np.concatenate([hi for *_, hi in self._rows])
        else:
            rows = cols = np.zeros(0, dtype=np.int64)
            vals = row_lower = row_upper = np.zeros(0)
        # COO → CSR sums repeated (row, column) entries, as a modeller adding two terms on one variable expects.
        matrix = sp.csr_array(sp.coo_array((vals, (rows, cols)), shape=(self._num_rows, n)))
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        return LinearModel(
            name=self.name,
            cost=cost,
            col_lower=col_lower,
            col_upper=col_upper,
            integrality=integrality,
            matrix=matrix,
            row_lower=row_lower,
            row_upper=row_upper,
            column_families={fam.name: fam for fam, *_ in self._columns},
            row_families={fam.name: fam for fam, *_ in self._rows},
            offset=self._offset,
        )
