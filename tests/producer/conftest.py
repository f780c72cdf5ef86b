from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-distilbert-qa"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return str(TINY_MODEL)


@pytest.fixture(scope="session")
def engine(tiny_model):
    from worker.engine import Engine

    return Engine(tiny_model, device="cpu").warm_up()
