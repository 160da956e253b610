"""Native libraries' log lines never reach the user's terminal ahead of nodebisect's own (issue #22: "never buried")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodebisect.frontends.quiet import quiet_native_stderr

ROOT = Path(__file__).resolve().parents[1]


def test_known_noise_written_to_the_descriptor_is_dropped_and_the_rest_replayed(capfd: pytest.CaptureFixture[str]) -> None:
    with quiet_native_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1 17549 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"a real error from the library\n")
    err = capfd.readouterr().err
    assert err == "a real error from the library\n"


@pytest.mark.slow  # a fresh Python importing tensorflow (~10 s)
@pytest.mark.subprocess
def test_importing_the_keras_stack_prints_nothing() -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    code = "from nodebisect.frontends.keras.load import import_stack; import_stack(); print('imported')"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.stdout.strip() == "imported", done.stderr
    assert done.stderr == "", done.stderr  # TF 2.21 printed absl's and oneDNN's lines twice here
