"""benchmarks/step_profile.py: oneDNN's verbose log is read into a per-layer table of the conv kernels."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_step_profile_lists_every_conv_layer_and_pass():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_profile.py"), "--steps", "1",
                          "--width", "0.125", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^(mb352_\S+)\s+(forward|backward data|backward weights)\s+([\d.]+)$", out.stdout, re.M)
    passes = {}
    for shape, kind, _ in rows:
        passes.setdefault(kind, set()).add(shape)
    assert len(passes["forward"]) == 7 and len(passes["backward weights"]) == 7   # the seven conv layers
    assert len(passes["backward data"]) == 6   # the first layer's input (the chunks) needs no gradient
    share = re.search(r"conv kernels (\d+) ms per step = (\d+)% of the step", out.stdout)
    assert share and int(share.group(1)) > 0 and 0 < int(share.group(2)) <= 100, out.stdout
