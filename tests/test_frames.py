"""One frame classifier (``nodebisect.frames``) for the dynamo stack traces, the TorchScript
source ranges and the export-failure frames: the same stack names the same source line."""

from __future__ import annotations

import os

import pytest

import nodebisect
from nodebisect.frames import INTERNAL, LIBRARY, USER, frame_kind
from nodebisect.frontends.export_failure import frame_kind as export_failure_frame_kind
from nodebisect.frontends.torchscript.refs import source_range_frame as torchscript_user_frame
from nodebisect.values.graphmap import user_frame as dynamo_user_frame

OWN = os.path.join(os.path.dirname(nodebisect.__file__), "sweep", "zoo.py")  # nodebisect's own model wrapper
USER_FILE = "/home/me/project/model.py"
LIBRARY_FILE = "/venv/lib/python3.11/site-packages/transformers/models/gpt2/modeling_gpt2.py"
TORCH_FILE = "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py"


@pytest.mark.parametrize(
    "path, kind",
    [
        pytest.param(USER_FILE, USER, id="user"),
        pytest.param(LIBRARY_FILE, LIBRARY, id="library"),
        pytest.param("/src/transformers/src/transformers/models/bert/modeling_bert.py", LIBRARY, id="library-checkout"),
        pytest.param(TORCH_FILE, INTERNAL, id="torch"),
        pytest.param("/usr/lib/python3.11/contextlib.py", INTERNAL, id="stdlib"),
        pytest.param("<eval_with_key>.3", INTERNAL, id="generated"),
        pytest.param(OWN, INTERNAL, id="nodebisect-wrapper"),
        pytest.param("/home/me/nodebisect/tests/model.py", USER, id="a-user-folder-named-nodebisect"),
    ],
)
def test_frame_kind(path: str, kind: str) -> None:
    assert frame_kind(path) == kind
    assert export_failure_frame_kind is frame_kind  # the export-failure classifier is this one


# Frames outermost first (file, line) -> the source both paths must name.
STACKS = [
    pytest.param([(OWN, 420), (USER_FILE, 12), (TORCH_FILE, 125)], f"{USER_FILE}:12", id="wrapper-user-torch"),
    pytest.param([(OWN, 420), (LIBRARY_FILE, 96)], f"{LIBRARY_FILE}:96", id="wrapper-library"),
    pytest.param([(USER_FILE, 30), (LIBRARY_FILE, 96), (USER_FILE, 12)], f"{USER_FILE}:12", id="innermost-user"),
    pytest.param([(OWN, 420), (LIBRARY_FILE, 96), (TORCH_FILE, 125)], f"{TORCH_FILE}:125", id="no-user-frame-innermost"),
]


def _python_trace(frames: list[tuple[str, int]]) -> str:
    return "".join(f'File "{file}", line {line}, in forward\n    y = self.layer(x)\n' for file, line in frames)


def _torchscript_source_range(frames: list[tuple[str, int]]) -> str:
    return "\n".join(f"{file}({line}): forward" for file, line in reversed(frames))  # innermost first


@pytest.mark.parametrize("frames, source", STACKS)
def test_dynamo_and_torchscript_paths_name_the_same_source(frames: list[tuple[str, int]], source: str) -> None:
    assert dynamo_user_frame(_python_trace(frames))[0] == source
    assert torchscript_user_frame(_torchscript_source_range(frames))[0] == source


def test_torchscript_source_range_skips_nodebisects_own_wrapper() -> None:
    """The wrapper's frame first (innermost) used to be taken for the user's code on the TorchScript path."""
    source_range = f"{OWN}(420): forward\n{USER_FILE}(12): forward\n{TORCH_FILE}(1500): _slow_forward"
    assert torchscript_user_frame(source_range)[0] == f"{USER_FILE}:12"
