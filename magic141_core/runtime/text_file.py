"""Small text files read within a budget: prompt files (`long --prompts @FILE`) and JSON sidecars (a Hugging Face
folder's shard index). A file larger than its budget, or one that never ends (a FIFO, `/dev/zero`), is refused
after reading at most `max_bytes` + 1 bytes, so it cannot grow the process; text that is not UTF-8 is refused
naming the line and the byte where decoding failed, instead of a bare codec error.
"""

from __future__ import annotations

import os
from pathlib import Path


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def read_text(path: str | os.PathLike, max_bytes: int, what: str) -> str:
    """The UTF-8 text of `path` (a leading byte-order mark dropped), read in one bounded call.

    `what` names the file's role in messages ("the prompts file"). Raises FileNotFoundError / IsADirectoryError
    naming `path`, ValueError when it holds more than `max_bytes` (only `max_bytes` + 1 bytes are read, so an
    endless stream costs no more), or when it is not UTF-8 (naming the line, the byte offset and the byte)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give a text file")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if len(data) > max_bytes:
        raise ValueError(f"{what} {path} holds more than {_size(max_bytes)}, the most read for it (a binary or "
                         "endless file?). Give a shorter text file")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{what} {path} is not UTF-8 text: line {line}, byte {e.start} (0x{data[e.start]:02x}) "
                         f"cannot be decoded. Save it as UTF-8 text") from None


MAX_PROMPT_BYTES = 1 << 20  # a prompts file, or the prompt text of one encode / one long video: 1 MiB


def check_text_size(text: str, what: str, max_chars: int = MAX_PROMPT_BYTES) -> str:
    """`text` unchanged when it has at most `max_chars` characters, else ValueError naming `what` and the limit
    (a prompt is read to 256 tokens; megabytes of text would only cost memory and time in the tokenizer)."""
    if len(text) > max_chars:
        raise ValueError(f"{what} is {len(text)} characters long, more than the {max_chars} this pack takes (the model "
                         "reads the first 256 tokens of each prompt). Shorten it")
    return text
