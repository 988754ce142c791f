"""Every shipped codec with every built-in model, in-process (``--simulate``, via ``psgd.run``).

The cases are in ``tests/matrix_cases.py``; each trains a few steps on tiny data and checks the
job completed, the saved model has the model's shapes and finite weights, and it learned: its
test loss is below the initial model's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from matrix_cases import (
    CODECS,
    MODEL_NAMES,
    OLD_SYNTAX_CODECS,
    Model,
    check_run,
    job_settings,
    write_datasets,
)

import psgd
import psgd.cluster.runner

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Model]:
    return write_datasets(tmp_path_factory.mktemp("matrix-data"))


@pytest.fixture(scope="module", autouse=True)
def _no_plots() -> Iterator[None]:
    """plot.png costs 1.5 s a run (matplotlib) and is tested on its own (test_plot.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psgd.cluster.runner, "_plot", lambda *args, **kwargs: None)
        yield


CASES = [
    (codec, model)
    for codec in CODECS
    for model in MODEL_NAMES
    if model != "784,32,10" or codec in OLD_SYNTAX_CODECS
]


@pytest.mark.parametrize(("codec", "model_name"), CASES)
def test_codec_trains_model_in_process(codec, model_name, models, tmp_path):
    model = models[model_name]
    settings = job_settings(codec, model)
    result = psgd.run(out=tmp_path / "run", **settings)
    loss = check_run(result, model, settings.get("components", 1))
    assert loss < model.initial_loss, f"test loss {loss:.4f}, initially {model.initial_loss:.4f}"
