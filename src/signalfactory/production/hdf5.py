"""HDF5 through PyTables: tables read in row slices, and tables written batch by batch.

Reading accepts two shapes of file, one table per source (``source.key`` picks it when the
file holds several):

* tables written by pandas ``to_hdf(..., format="table")``: values blocks are split into
  their named columns, strings decoded (the ``nan_rep`` marker, NaN and NaT read as null),
  datetimes restored with their time zone, categoricals decoded; the pandas index is not
  read (``df.reset_index()`` before writing keeps it as a column);
* plain PyTables ``Table`` nodes: one column per field (nested fields as ``outer.inner``),
  ``time32``/``time64`` as UTC timestamps, enums as their names.

Tables written by ``exports.write_hdf5`` also carry their Arrow schema and null masks, so an
export reads back with its exact types and nulls.

PyTables unpickles every node attribute it reads, on open and while walking the file, so a
crafted HDF5 file can run code. Every read here happens under
:func:`restricted_attribute_unpickling`, which lets attributes hold only plain data (lists,
dicts, strings, numbers, ``datetime.timezone``, ``zoneinfo.ZoneInfo``); anything else stays
unread bytes. (A pandas file whose time zones are other objects, such as pytz zones, then
reads its timestamps as naive UTC values.)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import pickle
import re
import threading
import types
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from signalfactory.core.errors import ConfigError, InputDataError

SCHEMA_ATTR = "SF_ARROW_SCHEMA"
MASKS_ATTR = "SF_NULL_MASKS"
EXPORT_NODE = "data"
_NAT = np.iinfo(np.int64).min
_SAFE_GLOBALS = frozenset(
    {("datetime", "timezone"), ("datetime", "timedelta"), ("zoneinfo", "ZoneInfo")}
)

Converter = Callable[[np.ndarray], pa.Array]


def import_tables() -> Any:
    try:
        import tables
    except ImportError:
        raise ConfigError(
            "HDF5 sources and exports need PyTables, which is not installed. Install it with "
            "`pip install 'signalfactory[hdf5]'`."
        ) from None
    return tables


def _zone_getattr(obj: Any, name: str) -> Any:
    """The one ``getattr`` a pickled ``ZoneInfo`` needs (pandas stores time zones so)."""
    if obj is zoneinfo.ZoneInfo and name == "_unpickle":
        return zoneinfo.ZoneInfo._unpickle  # type: ignore[attr-defined]
    raise pickle.UnpicklingError(f"getattr(..., {name!r}) is not allowed in an HDF5 attribute")


class _AttributeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name == "getattr":
            return _zone_getattr
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an HDF5 attribute")


def _safe_loads(data: bytes, *, encoding: str = "ASCII", **_: Any) -> Any:
    return _AttributeUnpickler(io.BytesIO(data), encoding=encoding).load()


class _Guard:
    lock = threading.Lock()
    depth = 0
    saved: Any = None


@contextlib.contextmanager
def restricted_attribute_unpickling() -> Iterator[None]:
    """While active, PyTables attributes unpickle to plain data only (process-wide, nested)."""
    from tables import attributeset

    if not isinstance(getattr(attributeset, "pickle", None), types.ModuleType | _PickleShim):
        raise ConfigError(
            "this PyTables version reads node attributes in a way Signal Factory cannot guard "
            "against unpickling; install tables>=3.9,<4 to read HDF5 sources."
        )
    with _Guard.lock:
        if _Guard.depth == 0:
            _Guard.saved = attributeset.pickle
            attributeset.pickle = _PickleShim()
        _Guard.depth += 1
    try:
        yield
    finally:
        with _Guard.lock:
            _Guard.depth -= 1
            if _Guard.depth == 0:
                attributeset.pickle = _Guard.saved


class _PickleShim(types.SimpleNamespace):
    """The ``pickle`` module as PyTables sees it while guarded: ``loads`` is restricted."""

    def __init__(self) -> None:
        super().__init__(**{n: getattr(pickle, n) for n in dir(pickle) if not n.startswith("__")})
        self.loads = _safe_loads


def _attr(node: Any, name: str, default: Any = None) -> Any:
    attrs = node._v_attrs
    return getattr(attrs, name) if name in attrs._v_attrnames else default


def _has_pandas_type(node: Any) -> bool:
    return node._v_pathname != "/" and _attr(node, "pandas_type") is not None


def _pandas_group(table: Any) -> Any | None:
    """The pandas storer group of ``table`` (``<key>/table``), or None for a plain table."""
    parent = table._v_parent
    return parent if table._v_name == "table" and _has_pandas_type(parent) else None


def _is_pandas_internal(table: Any) -> bool:
    """Categorical metadata tables (``<key>/meta/...``) belong to the frame above them."""
    node = table._v_parent._v_parent
    while node._v_pathname != "/":
        if _has_pandas_type(node):
            return True
        node = node._v_parent
    return False


def _label(table: Any) -> str:
    group = _pandas_group(table)
    return str(group._v_pathname if group is not None else table._v_pathname)


def _pick_table(handle: Any, path: Path, key: str | None) -> Any:
    found = [t for t in handle.walk_nodes("/", classname="Table") if not _is_pandas_internal(t)]
    labels = [_label(t) for t in found]
    if key is not None:
        wanted = "/" + key.strip("/")
        for table, label in zip(found, labels, strict=True):
            if wanted in (label, table._v_pathname):
                return table
        raise InputDataError(
            f"{path}: no table at source.key {key!r}; tables found: {', '.join(labels) or 'none'}."
        )
    if len(found) == 1:
        return found[0]
    if found:
        raise InputDataError(
            f"{path}: holds {len(found)} tables ({', '.join(labels)}); set source.key to the "
            f"one to read, e.g. key: {labels[0]}."
        )
    fixed = [
        g._v_pathname
        for g in handle.walk_groups()
        if _attr(g, "pandas_type") in ("frame", "series")
    ]
    if fixed:
        raise InputDataError(
            f"{path}: {', '.join(fixed)} was written by pandas in the 'fixed' format, which "
            "cannot be read in parts; write it with df.to_hdf(path, key=..., format='table')."
        )
    raise InputDataError(
        f"{path}: holds no table node; an HDF5 source needs a PyTables table, such as "
        "pandas df.to_hdf(path, key=..., format='table') writes."
    )


def _strings(values: np.ndarray, mask: np.ndarray | None, encoding: str, where: str) -> pa.Array:
    raw = pa.array(values, type=pa.binary(), mask=mask)
    try:
        if encoding.lower().replace("-", "") == "utf8":
            return raw.cast(pa.string())
        decoded = np.char.decode(values, encoding)
        return pa.array(decoded, type=pa.string(), mask=mask)
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError):
        raise InputDataError(f"{where}: holds text that is not valid {encoding}.") from None


def _tz_name(tz: Any) -> str | None:
    if tz is None:
        return None
    if isinstance(tz, str):
        return tz
    if isinstance(tz, zoneinfo.ZoneInfo):
        return str(tz.key)
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        if not offset:
            return "UTC"
        minutes = int(offset.total_seconds()) // 60
        return f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return "UTC"  # a zone we may not unpickle: the stored values are UTC instants


def _pandas_converter(field: str, index: int | None, spec: dict[str, Any], where: str) -> Converter:
    dtype, encoding = str(spec["dtype"]), str(spec["encoding"])

    def values(rows: np.ndarray) -> np.ndarray:
        column = rows[field]
        return np.ascontiguousarray(column[:, index] if index is not None else column)

    categories: pa.Array | None = spec.get("categories")
    if categories is not None:

        def categorical(rows: np.ndarray) -> pa.Array:
            codes = values(rows).astype(np.int64)
            return categories.take(pa.array(codes, mask=codes < 0))

        return categorical
    temporal = re.fullmatch(r"(datetime|timedelta)64(?:\[(\w+)\])?", dtype)
    if temporal:
        unit = temporal.group(2) or "ns"
        arrow_type = (
            pa.timestamp(unit, _tz_name(spec.get("tz")))
            if temporal.group(1) == "datetime"
            else pa.duration(unit)
        )

        def time_values(rows: np.ndarray) -> pa.Array:
            ints = values(rows).astype(np.int64)
            return pa.array(ints, type=arrow_type, mask=ints == _NAT)

        return time_values
    kind = np.dtype(spec["numpy"]).kind
    if kind == "S":
        marker = str(spec["nan_rep"]).encode(encoding)

        def text(rows: np.ndarray) -> pa.Array:
            raw = values(rows)
            return _strings(raw, raw == marker, encoding, where)

        return text
    if kind == "f":
        return lambda rows: pa.array(values(rows), from_pandas=True)
    if kind in "iub":
        return lambda rows: pa.array(values(rows))
    raise InputDataError(
        f"{where}: pandas dtype {dtype} cannot be read from HDF5; cast it to a number, "
        "text or datetime before writing."
    )


def _pandas_columns(handle: Any, table: Any, group: Any, path: Path) -> list[tuple[str, Converter]]:
    index_cols = _attr(group, "index_cols")
    skip = {str(c[1]) for c in index_cols} if isinstance(index_cols, list) else {"index"}
    info = _attr(group, "info")
    info = info if isinstance(info, dict) else {}
    encoding = str(_attr(group, "encoding") or "UTF-8")
    columns: list[tuple[str, Converter]] = []
    for field in table.colnames:
        if field in skip:
            continue
        numpy = table.coldtypes[field]
        width = numpy.shape[0] if numpy.shape else 1
        kind = _attr(table, f"{field}_kind")
        labels = [str(k) for k in kind] if isinstance(kind, list) and len(kind) == width else []
        labels = labels or ([field] if width == 1 else [f"{field}_{i}" for i in range(width)])
        field_info = info.get(field)
        spec: dict[str, Any] = {
            "dtype": _attr(table, f"{field}_dtype", numpy.base.name),
            "numpy": numpy.base,
            "nan_rep": _attr(table, f"{field}_nan_rep", "nan"),
            "tz": field_info.get("tz") if isinstance(field_info, dict) else None,
            "encoding": encoding,
        }
        if str(_attr(table, f"{field}_meta")) == "category":
            spec["categories"] = _categories(handle, group, field, path)
        for i, label in enumerate(labels):
            where = f"{path}: column {label!r}"
            columns.append(
                (label, _pandas_converter(field, i if numpy.shape else None, spec, where))
            )
    axes = _attr(group, "non_index_axes")  # [(1, [column names in frame order])]
    order = [str(c) for c in axes[0][1]] if isinstance(axes, list) and axes else []
    if sorted(order) == sorted(label for label, _ in columns):
        columns.sort(key=lambda column: order.index(column[0]))
    return columns


def _categories(handle: Any, group: Any, field: str, path: Path) -> pa.Array:
    node = f"{group._v_pathname}/meta/{field}/meta/table"
    if node not in handle:
        raise InputDataError(f"{path}: the categories of {field} ({node}) are missing.")
    meta = handle.get_node(node)
    (_, convert), *_ = _pandas_columns(handle, meta, meta._v_parent, path)
    return convert(meta.read())


def _plain_converter(table: Any, name: str, where: str) -> Converter:
    numpy, coltype, parts = table.coldtypes[name], table.coltypes[name], name.split("/")
    if numpy.shape:
        raise InputDataError(
            f"{where} holds arrays of shape {numpy.shape}; a source column holds one value per row."
        )

    def values(rows: np.ndarray) -> np.ndarray:
        for part in parts:
            rows = rows[part]
        return np.ascontiguousarray(rows)

    if coltype == "time32":
        return lambda rows: pa.array(values(rows).astype(np.int64), pa.timestamp("s", "UTC"))
    if coltype == "time64":
        return lambda rows: pa.array(
            np.round(values(rows) * 1e6).astype(np.int64), pa.timestamp("us", "UTC")
        )
    if coltype == "enum":
        pairs = sorted((int(value), str(key)) for key, value in table.get_enum(name))
        codes, names = np.array([p[0] for p in pairs]), pa.array([p[1] for p in pairs])
        return lambda rows: names.take(np.searchsorted(codes, values(rows)))
    if numpy.kind == "S":
        return lambda rows: _strings(values(rows), None, "utf-8", where)
    if numpy.kind in "iufb":
        return lambda rows: pa.array(values(rows))
    raise InputDataError(f"{where} has type {coltype}, which has no Arrow equivalent.")


def _plain_columns(table: Any, path: Path) -> list[tuple[str, Converter]]:
    return [
        (name.replace("/", "."), _plain_converter(table, name, f"{path}: column {name!r}"))
        for name in table.colpathnames
    ]


def _exported_columns(table: Any, schema: pa.Schema) -> list[tuple[str, Converter]]:
    masks = json.loads(str(_attr(table, MASKS_ATTR) or "{}"))

    def restore(field: pa.Field, mask_name: str | None) -> Converter:
        def convert(rows: np.ndarray) -> pa.Array:
            if pa.types.is_null(field.type):
                return pa.nulls(len(rows))
            values = rows[field.name]
            mask = rows[mask_name] if mask_name else None
            if values.dtype.kind == "S":
                raw = pa.array(values, type=pa.binary(), mask=mask)
                binary = pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
                return raw.cast(field.type if binary else pa.string()).cast(field.type)
            return pa.array(values, mask=mask).cast(field.type)

        return convert

    return [(f.name, restore(f, masks.get(f.name))) for f in schema]


def hdf5_batches(path: Path, chunk_size: int, key: str | None) -> Iterator[pa.RecordBatch]:
    """Rows of one table of ``path`` in slices of ``chunk_size``, read with PyTables."""
    tables = import_tables()
    with restricted_attribute_unpickling():
        try:
            handle = tables.open_file(str(path), mode="r")
        except (OSError, tables.HDF5ExtError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputDataError(f"{path}: cannot be opened as HDF5 ({reason[:200]}).") from None
        with handle:
            table = _pick_table(handle, path, key)
            stored = _attr(table, SCHEMA_ATTR)
            group = _pandas_group(table)
            if stored is not None:
                schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(str(stored))))
                columns = _exported_columns(table, schema)
            elif group is not None:
                columns = _pandas_columns(handle, table, group, path)
            else:
                columns = _plain_columns(table, path)
            names = [name for name, _ in columns]
            for start in range(0, table.nrows, chunk_size):
                rows = table.read(start, min(start + chunk_size, table.nrows))
                yield pa.RecordBatch.from_arrays([c(rows) for _, c in columns], names=names)
