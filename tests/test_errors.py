"""Bad input fails before training starts, with a message that names the fix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_model

import dualwatch


def _model(framework: str):
    return build_model(framework, {"edge_processor.backbone.weight": np.ones(3), "head.weight": np.ones(3)})


def test_an_object_that_is_no_model_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"torch.nn.Module or a paddle.nn.Layer"):
        dualwatch.Watcher([np.ones(3)])


def test_a_misspelt_module_lists_close_matches(framework: str) -> None:
    with pytest.raises(ValueError, match=r"module='edge_procesor' matches no submodule.*edge_processor"):
        dualwatch.Watcher(_model(framework), module="edge_procesor")


def test_an_empty_selection_is_an_error(framework: str) -> None:
    with pytest.raises(ValueError, match=r"no parameter .* matches include='nothing.*'"):
        dualwatch.Watcher(_model(framework), include="nothing.*", logdir=None)


@pytest.mark.parametrize("every", [0, -5])
def test_every_below_one_is_an_error(framework: str, every: int) -> None:
    with pytest.raises(ValueError, match="every= must be >= 1"):
        dualwatch.Watcher(_model(framework), every=every)


@pytest.mark.parametrize("every", [2.5, "10", True])
def test_every_of_the_wrong_type_is_a_type_error(framework: str, every: object) -> None:
    with pytest.raises(TypeError, match="every= must be an int"):
        dualwatch.Watcher(_model(framework), every=every)


def test_a_group_regex_that_does_not_compile_names_the_group(framework: str) -> None:
    with pytest.raises(ValueError, match=r"group 'clip': 'clip.\(' is not a valid regular expression"):
        dualwatch.Watcher(_model(framework), groups={"clip": "clip.("})


def test_groups_of_the_wrong_type_are_a_type_error(framework: str) -> None:
    with pytest.raises(TypeError, match="groups= takes a mapping"):
        dualwatch.Watcher(_model(framework), groups=["backbone"])


def test_a_group_that_matches_nothing_warns(framework: str) -> None:
    with pytest.warns(UserWarning, match="group 'clip' matches no parameter"):
        dualwatch.Watcher(_model(framework), groups={"clip": "clip.*"}, logdir=None)


def test_thresholds_out_of_order_are_an_error() -> None:
    with pytest.raises(ValueError, match="vanishing < exploding"):
        dualwatch.Thresholds(exploding=1e-9, vanishing=1e-6)
