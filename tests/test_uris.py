"""Storage URIs are URIs: paths are joined before the query, secrets are hidden in messages."""
from __future__ import annotations

import pytest

from model.errors import StoreError, UserError
from tuner.runs.run_dir import RunDir
from tuner.storage.uris import display_uri, is_uri, join_uri, open_filesystem, uri_basename

ENDPOINT = "?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1"


@pytest.mark.parametrize("base, parts, joined", [
    (f"s3://bkt/results{ENDPOINT}", ("run1",), f"s3://bkt/results/run1{ENDPOINT}"),
    (f"s3://bkt/results/{ENDPOINT}", ("run1", "labeled_ratio=0.5"), f"s3://bkt/results/run1/labeled_ratio=0.5{ENDPOINT}"),
    ("s3://bkt/results", ("run1/",), "s3://bkt/results/run1"),
    ("gs://anonymous@bkt/r?endpoint_override=127.0.0.1:1&scheme=http", ("a", "b.pt"),
     "gs://anonymous@bkt/r/a/b.pt?endpoint_override=127.0.0.1:1&scheme=http"),
    ("file:///tmp/results/", ("run", "x"), "file:///tmp/results/run/x"),
    ("/tmp/results", ("run",), "/tmp/results/run"),
    (f"s3://bkt/results{ENDPOINT}", (), f"s3://bkt/results{ENDPOINT}"),
])
def test_join_uri_puts_parts_before_the_query(base, parts, joined):
    assert join_uri(base, *parts) == joined


def test_basename_and_is_uri_ignore_the_query():
    assert uri_basename(f"s3://bkt/stores/tiny.store/{ENDPOINT}") == "tiny.store"
    assert uri_basename("/data/tiny.store") == "tiny.store"
    assert is_uri("s3://b/x") and is_uri("file:///x") and not is_uri("/data/x") and not is_uri("data/s3://x")


def test_display_uri_hides_secrets():
    shown = display_uri("s3://AKIDEXAMPLE:s3cr3t@bkt/x?endpoint_override=h:1&secret_key=s3cr3t&session_token=t0k3nXYZ")
    assert "s3cr3t" not in shown and "t0k3nXYZ" not in shown
    assert shown == "s3://AKIDEXAMPLE:***@bkt/x?endpoint_override=h:1&secret_key=***&session_token=***"


def test_run_dir_with_a_query_joins_the_name_before_it(tmp_path):
    """The bug of issue 14: `STORAGE/NAME` was appended after the query (pyarrow then read `results/run.json`)."""
    run = RunDir(f"s3://bkt/results{ENDPOINT}", "run1")
    assert run.uri == f"s3://bkt/results/run1{ENDPOINT}"
    assert run.path("run.json") == "bkt/results/run1/run.json"
    assert run.fs.region == "us-east-1"
    assert run.child_uri("labeled_ratio=0.5", "trial_x") == f"s3://bkt/results/run1/labeled_ratio=0.5/trial_x{ENDPOINT}"
    local = RunDir(tmp_path.as_uri(), "run2")
    assert local.local == tmp_path / "run2"


def test_unopenable_uri_is_a_user_error_of_the_callers_kind():
    with pytest.raises(UserError, match=r"nosuch://bkt/x: cannot open its filesystem"):
        open_filesystem("nosuch://bkt/x")
    with pytest.raises(StoreError, match="expected s3://bucket/path"):
        open_filesystem("s3://bkt/x?no_such_option=1", StoreError)
