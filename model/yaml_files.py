"""Reading the YAML files a user gives (configs, search spaces, baselines, `--attribute-from` tables).

`read_yaml(path)` is the one way in: every problem of the file (missing, a folder, unreadable) is a
UserError naming the file and what was expected, never a Python traceback.
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml

from model.errors import UserError


# Byte-order marks of the Unicode encodings a text editor may save in (UTF-32 first: its LE mark starts with UTF-16's).
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))


def decode(data: bytes) -> str:
    """UTF-8 text (a UTF-8 mark dropped), or UTF-16/32 text that starts with its byte-order mark."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    return data.decode("utf-8-sig")


def read_text(path: str | Path, error: type[UserError] = UserError, what: str = "YAML file") -> str:
    """The text of a file the user named; `error` (a UserError class) names the file and `what` it
    should be on any problem."""
    path = Path(path)
    try:
        return decode(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; expected a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None


class DuplicateKey(yaml.YAMLError):
    """A mapping that gives one key twice (the YAML spec forbids it; PyYAML would keep the last value)."""


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (merge keys `<<` may be overridden)."""

    def construct_mapping(self, node, deep=False):
        lines: dict[Any, int] = {}   # key -> the line it was first given on
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in lines:
                    raise DuplicateKey(f"key {key!r} is given twice (lines {lines[key]} and {line}); keep one")
                lines[key] = line
            except TypeError:   # an unhashable key: SafeConstructor says so
                continue
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str, error: type[UserError] = UserError) -> Any:
    """The parsed YAML text; `source` names it in the error."""
    try:
        return yaml.load(text, Loader=_Loader)
    except DuplicateKey as exc:
        raise error(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None


def read_yaml(path: str | Path, error: type[UserError] = UserError, what: str = "YAML file") -> Any:
    """The parsed YAML file at `path` (UserError, or `error`, naming the file on any problem)."""
    return parse_yaml(read_text(path, error, what), str(path), error)
