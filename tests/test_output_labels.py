"""Each model output carries the user's name for it, read from what ``forward`` returned (torch.export's out_spec)."""

from __future__ import annotations

import torch

from nodebisect.frontends.pytorch_reference.output_paths import leaf_labels
from nodebisect.records import Metrics, OutputComparison


class Nested(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, object]]:
        return x + 1, {"scores": x * 2, "pair": [x - 1, x / 2]}


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, x * 2


def _labels(module: torch.nn.Module) -> list[str]:
    return leaf_labels(torch.export.export(module, (torch.ones(2),)).call_spec.out_spec)


def test_dict_keys_and_positions_make_the_path_in_flatten_order() -> None:
    assert _labels(Nested()) == ["output[0]", "output[1].scores", "output[1].pair[0]", "output[1].pair[1]"]


def test_positions_alone_give_no_labels_since_the_graph_names_say_as_much() -> None:
    assert _labels(Pair()) == []


def test_the_label_round_trips_through_the_json_and_is_absent_without_one() -> None:
    record = OutputComparison("linear", True, Metrics(), label="logits")
    assert record.to_dict()["label"] == "logits"
    assert OutputComparison.from_dict(record.to_dict()).label == "logits"
    assert "label" not in OutputComparison("linear", True, Metrics()).to_dict()


def test_reading_the_labels_warns_nothing() -> None:
    """A FutureWarning from torch's pytree API reached the user's terminal in the middle of a locate."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _labels(Nested())[1] == "output[1].scores"
