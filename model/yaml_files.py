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


class AliasBomb(yaml.YAMLError):
    """A document whose aliases expand to more values than any real file holds ("billion laughs")."""


# The most values (scalars, lists and mappings, each alias counted as the values it stands for) a file may
# expand to: real configs and spaces hold a few hundred; nested aliases can reach billions in 600 bytes.
MAX_VALUES = 100_000


def expanded_size(node: yaml.Node, limit: int = MAX_VALUES) -> int:
    """How many values `node` stands for with every alias expanded (counting stops just above `limit`)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 1   # a node inside itself (a recursive alias) counts once
            children = n.value if isinstance(n, yaml.SequenceNode) else \
                [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else []
            total = 1
            for child in children:
                total += size(child)
                if total > limit:
                    break
            sizes[id(n)] = total
        return sizes[id(n)]

    return size(node)


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (merge keys `<<` may be overridden)
    and a document whose aliases expand beyond MAX_VALUES values (before building anything)."""

    def construct_document(self, node):
        if expanded_size(node) > MAX_VALUES:
            raise AliasBomb(f"its aliases expand to more than {MAX_VALUES} values (nested aliases, a "
                            "\"billion laughs\"?); write the values out")
        return super().construct_document(node)

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
    except (DuplicateKey, AliasBomb) as exc:
        raise error(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None


def read_yaml(path: str | Path, error: type[UserError] = UserError, what: str = "YAML file") -> Any:
    """The parsed YAML file at `path` (UserError, or `error`, naming the file on any problem)."""
    return parse_yaml(read_text(path, error, what), str(path), error)
