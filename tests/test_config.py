"""TrainConfig: defaults, YAML and key=value loading, and errors that name the key, value and range."""
import pytest

from model.config import TrainConfig
from model.errors import ConfigError


def test_defaults_are_the_papers_settings():
    c = TrainConfig()
    assert (c.chunk_frames, c.chunks_per_sentence, c.batch_size) == (62, 11, 64)
    assert (c.lr_sgd, c.lr_adam, c.lr_top, c.kmeans_iterations) == (1e-3, 5e-4, 0.05, 20)
    assert c.attributes == ["act", "dom", "val"]


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("temporal: triplet\nnum_clusters: 30\nlr_adam: 1\nmetadata: {trial: abc}\n")
    c = TrainConfig.load(path, ["num_clusters=12", "attributes=act,val", "unlabeled_pool=null"])
    assert c.temporal == "triplet" and c.num_clusters == 12 and c.attributes == ["act", "val"]
    assert c.lr_adam == 1.0 and isinstance(c.lr_adam, float)
    assert c.unlabeled_pool is None
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("override, words", [
    ("num_clusters=1", ["num_clusters", "1", ">= 2"]),
    ("chunk_frames=4", ["chunk_frames", "4", ">= 8"]),
    ("chunks_per_sentence=0", ["chunks_per_sentence", "0", ">= 1"]),
    ("labeled_ratio=0", ["labeled_ratio", "0", "(0, 1]"]),
    ("labeled_ratio=1.5", ["labeled_ratio", "1.5", "(0, 1]"]),
    ("attributes=[]", ["attributes", "non-empty"]),
    ("attributes=act,arousal", ["attributes", "arousal"]),
    ("temporal=lstm", ["temporal", "lstm", "gru"]),
    ("num_clusters=ten", ["num_clusters", "ten", "integer"]),
    ("pca_whitening=1", ["pca_whitening", "true or false"]),
    ("device=tpu", ["device", "tpu"]),
    ("colour=red", ["unknown key", "colour"]),
    ("no_equals_sign", ["key=value"]),
])
def test_invalid_values_are_named(override, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(None, [override])
    for word in words:
        assert word in str(err.value)


def test_triplet_needs_room_for_a_negative():
    with pytest.raises(ConfigError, match="chunks_per_sentence"):
        TrainConfig(temporal="triplet", chunks_per_sentence=3, triplet_window=2)
    TrainConfig(temporal="gru", chunks_per_sentence=3)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("temporal: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        TrainConfig.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.load(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.load(listy)


def test_value_types_come_from_the_type_hints():
    from model.config import _checked, _coerce, field_type

    assert field_type("unlabeled_pool") == (int, True) and field_type("width") == (float, False)
    assert _coerce("k", None, float | None, "s") is None and _coerce("k", 2, float | None, "s") == 2.0
    with pytest.raises(ConfigError, match=r"s: k='x' is invalid: expected a number"):
        _coerce("k", "x", float | None, "s")   # a new optional float field is checked, not passed through
    assert not _checked(tuple[int, int]) and not _checked(set[str])   # a field of such a type fails at import
