"""Storage locations: a local path, or a URI that pyarrow.fs opens (s3://, gs://, file://).

A bucket URI may carry pyarrow's options in its query, e.g. an on-premises S3 store:
`s3://bucket/results?endpoint_override=10.0.0.5:9000&scheme=http&region=us-east-1`. Such a URI is
a URI: paths are joined before its query (`join_uri`), never appended after it. Errors that come
back from a bucket (no route to the endpoint, refused credentials, no such bucket) become one
UserError naming the URI and what to check (`access_error`).
"""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Type

from model.errors import UserError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SECRET_QUERY = re.compile(r"(?<=[?&])(secret_key|session_token|access_key)=[^&]*")
ACCESS_HINT = ("check the endpoint (`?endpoint_override=HOST:PORT&scheme=http` in the URI, or AWS_ENDPOINT_URL), "
               "the region and the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the node's instance "
               "profile; for gs:// the service account); docs/cluster.md §2")


def is_uri(location: str) -> bool:
    """True for a URI (scheme://...), False for a plain local or shared-filesystem path."""
    return bool(_SCHEME.match(str(location)))


def join_uri(base: str, *parts: str) -> str:
    """`base` with `parts` appended to its path, before any query: (`s3://b/r?region=x`, `n`) -> `s3://b/r/n?region=x`."""
    head, sep, query = str(base).partition("?")
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not pieces:
        return str(base)
    return "/".join([head.rstrip("/"), *pieces]) + sep + query


def uri_basename(uri: str) -> str:
    """The last component of the URI's path (its query left out)."""
    return str(uri).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def display_uri(uri: str) -> str:
    """The URI for messages: a password in its user part and secret query values shown as ***."""
    uri = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/:@?]+):[^@/?]*@", r"\1:***@", str(uri))
    return _SECRET_QUERY.sub(r"\1=***", uri)


def access_error(uri: str, exc: BaseException, error: Type[UserError] = UserError) -> UserError:
    """The UserError for a bucket that could not be reached or read: the URI, pyarrow's reason, what to check."""
    return error(f"{display_uri(uri)}: cannot use the storage ({exc}); {ACCESS_HINT}")


@contextlib.contextmanager
def reaching(what: str, error: Type[UserError] = UserError) -> Iterator[None]:
    """Errors of a bucket in the block (endpoint, credentials, no such bucket) as one UserError (of class
    `error`) naming `what` (`access_error`); a missing file stays a FileNotFoundError."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise access_error(what, exc, error) from None


def open_filesystem(uri: str, error: Type[UserError] = UserError):
    """(pyarrow filesystem, path inside it) of a URI; a UserError (of class `error`) naming the URI on failure."""
    import pyarrow
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(str(uri))
    except (pyarrow.ArrowException, ValueError, OSError) as exc:
        raise error(f"{display_uri(uri)}: cannot open its filesystem ({exc}); expected s3://bucket/path, "
                    "gs://bucket/path or file:///abs/path, options in the query "
                    "(e.g. ?endpoint_override=HOST:PORT&scheme=http&region=REGION)") from None
