"""model.safe_load.load_torch: a file that cannot be read is a UserError naming it; the machine running out
of memory is not blamed on the file."""
import pytest
import torch

from model.errors import UserError
from model.safe_load import load_torch


def test_a_corrupt_file_is_a_user_error_naming_it(tmp_path):
    bad = tmp_path / "m.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"m\.pt: not a readable model file"):
        load_torch(bad, "model file")


def test_out_of_memory_is_not_reported_as_a_bad_file(tmp_path, monkeypatch):
    good = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(2)}, good)
    assert load_torch(good, "model file")["w"].shape == (2,)

    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(MemoryError):
        load_torch(good, "model file")
