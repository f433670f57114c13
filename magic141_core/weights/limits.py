"""What a weight file may claim about its model, checked before anything is built or allocated.

A file describes its model two ways: a JSON config in its safetensors metadata (files this pack writes) or the names
and shapes of its tensors (every other file). Both are untrusted input. A crafted key such as
`double_blocks.100000000.img_mod.linear.weight` would otherwise make a loader build a hundred million blocks, and a
config claiming absurd sizes would make it allocate without bound. So every config that comes from a file goes
through here:

- `read_json_config`: the one reader of config metadata (JSON object, every field present and known, each of the
  right type and within sane limits), whose errors name the file, the field, what was expected and what to do;
- `block_count`: a block count read off the tensor names, refused unless the indices are exactly 0..n-1 and n is
  sane, naming the first offending key;
- `tensor_shape`: the shape of a tensor a config is read from, refused (naming the key) when missing or of the wrong
  rank, without reading its data where the file allows;
- `make_config`: the dataclass built from checked values, its own consistency errors turned into the same message;
- `parse_json_object` / `config_error`: the same parsing and message for configs another library builds (LLaVA's).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping

from .files import CheckpointError, shape_of

MAX_BLOCKS = 1024  # repeated blocks of one kind (HunyuanVideo-13B: 20 + 40; Llama-3-8B: 32; CLIP ViT-L: 24)
MAX_SIZE = 1 << 20  # any width, channel count, head count or kernel size (Llama-3 vocabulary: 128256)
REFIT = "re-save the file with this pack, or choose another file"


def config_error(file: str, field: str, problem: str, expected: str, fix: str = REFIT) -> CheckpointError:
    """The one message shape for a bad config: which file, which field, what is wrong, what was expected, what to do."""
    return CheckpointError(f"{file}: config field '{field}' {problem}; expected {expected}. To fix: {fix}")


def parse_json_object(text: str | None, file: str, key: str) -> dict:
    """The JSON object stored under metadata `key` (a CheckpointError naming the file and key otherwise)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or a number of more than 4300 digits
        raise config_error(file, key, f"is not valid JSON ({str(e)[:120]})", "a JSON object") from None
    if not isinstance(value, dict):
        raise config_error(file, key, f"is a {type(value).__name__}", "a JSON object")
    return value


MAX_TEXT = 64  # a text field of a stored config (a name from a fixed set, checked by the config itself)


def _check_value(file: str, name: str, value, default, any_length: bool = False):
    """`value` converted to the type of `default` (int, float, bool, tuple of ints, short text), or a
    CheckpointError."""
    if isinstance(default, str):
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise config_error(file, name, f"is {str(value)[:200]!r}", f"a text of at most {MAX_TEXT} characters")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise config_error(file, name, f"is {value!r}"[:200], "true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
            raise config_error(file, name, f"is {value!r}"[:200], f"a whole number from 0 to {MAX_SIZE}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 < value <= MAX_SIZE:
            raise config_error(file, name, f"is {value!r}"[:200], f"a positive finite number up to {MAX_SIZE}")
        return float(value)
    if isinstance(default, tuple):
        length = (1, MAX_BLOCKS) if any_length else (len(default), len(default))
        ok = isinstance(value, list) and length[0] <= len(value) <= length[1] and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE for v in value)
        if not ok:
            count = f"1 to {MAX_BLOCKS}" if any_length else str(len(default))
            raise config_error(file, name, f"is {value!r}"[:200], f"a list of {count} whole numbers from 1 to "
                               f"{MAX_SIZE}")
        return tuple(value)
    raise TypeError(f"no rule for config field {name} of type {type(default).__name__}")  # a programming error


def make_config(cls, values: dict, file: str, source: str = "its tensors"):
    """`cls(**values)`, its consistency errors (`__post_init__` ValueError) turned into a message naming the file."""
    try:
        return cls(**values)
    except (ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{file}: the model configuration read from {source} is inconsistent ({e}). "
                              f"To fix: {REFIT}") from None


def read_json_config(cls, text: str | None, file: str, key: str, any_length: tuple[str, ...] = (),
                     optional: tuple[str, ...] = ()):
    """The dataclass config `cls` stored as JSON under metadata `key`, every field checked before use.

    Each field must be known, of its default's type (int, float, bool, a short text, or a list of ints of the same
    length, or of 1..`MAX_BLOCKS` items for the fields in `any_length`), and within `MAX_SIZE`; each must be present
    except those in `optional` (fields added after files were written: their default applies). Raises
    CheckpointError naming the file, the field, what it holds, what was expected and the fix. The loader then
    checks the values against the file's tensors (block counts with `block_count` / `check_count`, shapes in
    `fill.fill_`) before any weight is read.
    """
    data = parse_json_object(text, file, key)
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise config_error(file, unknown[0], "is unknown to this version of the pack",
                           f"only the fields {sorted(fields)}", f"{REFIT} (or update the pack)")
    missing = [name for name in fields if name not in data and name not in optional]
    if missing:
        raise config_error(file, missing[0], "is missing", "every field of the configuration")
    values = {name: _check_value(file, name, data[name], default, name in any_length)
              for name, default in fields.items() if name in data}
    return make_config(cls, values, file, f"its metadata '{key}'")


def block_count(keys: Iterable[str], prefix: str, file: str, limit: int = MAX_BLOCKS) -> int:
    """Number of blocks `prefix.N.` among the tensor names: n when the indices are exactly 0..n-1 (0 when none).

    Raises CheckpointError naming the first key whose index is past the blocks present or past `limit`: a model
    is never built with more blocks than the file holds tensors for.
    """
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found: dict[int, str] = {}
    for key in keys:
        if (m := pattern.match(key)) is not None:
            found.setdefault(int(m.group(1)), key)
    count = 0
    while count in found and count < limit:
        count += 1
    if count < len(found):  # an index past a gap, or past the limit
        index = min(i for i in found if i >= count)
        raise CheckpointError(
            f"{file}: tensor '{found[index]}' names {prefix} block {index}, but the file holds tensors for "
            f"{prefix} blocks 0..{count - 1} only (numbered from 0 without gaps, at most {limit}). The file is "
            "damaged or crafted; choose another file")
    return count


def tensor_shape(sd: Mapping, key: str, file: str, ndim: int | None = None) -> tuple[int, ...]:
    """The shape of tensor `key` (from the file header where the mapping offers `shape(key)`, else by reading it).

    Raises CheckpointError naming the key when it is missing or does not have `ndim` dimensions, or when any size is
    0 or above `MAX_SIZE`."""
    if key not in sd:
        raise CheckpointError(f"{file}: tensor '{key}' is missing, and the model's configuration is read from it. "
                              "The file is incomplete or not the model this loader expects; choose another file")
    shape = shape_of(sd, key)
    if (ndim is not None and len(shape) != ndim) or any(not 0 < s <= MAX_SIZE for s in shape):
        want = f"{ndim} dimensions" if ndim is not None else "dimensions"
        raise CheckpointError(f"{file}: tensor '{key}' has shape {list(shape)}; expected {want}, each from 1 to "
                              f"{MAX_SIZE}. The file is damaged or not the model this loader expects; choose another "
                              "file")
    return shape


def check_count(file: str, field: str, claimed: int, present: int, prefix: str) -> None:
    """A block count from a config must equal the blocks the file's tensors hold."""
    if claimed != present:
        raise config_error(file, field, f"says {claimed} blocks but the file holds tensors for {present} "
                           f"('{prefix}.N.')", f"{present}")
