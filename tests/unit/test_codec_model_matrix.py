"""Every shipped codec with every built-in model, in-process (``--simulate``, via ``psgd.run``).

The cases are in ``tests/matrix_cases.py``; each trains a few steps on tiny data and checks the
job completed, the saved model has the model's shapes and finite weights, and it learned: its
test loss is below the initial model's.
"""

from __future__ import annotations

import pytest
from matrix_cases import (
    CODECS,
    MODEL_NAMES,
    OLD_SYNTAX_CODECS,
    check_run,
    job_settings,
    models,  # noqa: F401 (a fixture)
    no_plots,  # noqa: F401 (a fixture)
)

import psgd
import psgd.cluster.runner

pytestmark = pytest.mark.timeout(60)


CASES = [
    (codec, model)
    for codec in CODECS
    for model in MODEL_NAMES
    if model != "784,32,10" or codec in OLD_SYNTAX_CODECS
]


@pytest.mark.parametrize(("codec", "model_name"), CASES)
def test_codec_trains_model_in_process(codec, model_name, models, tmp_path):  # noqa: F811
    model = models[model_name]
    settings = job_settings(codec, model)
    result = psgd.run(out=tmp_path / "run", **settings)
    loss = check_run(result, model, settings.get("components", 1))
    assert loss < model.initial_loss, f"test loss {loss:.4f}, initially {model.initial_loss:.4f}"
