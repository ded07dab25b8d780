import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture
def golden():
    return GOLDEN


@pytest.fixture
def manifest():
    return json.loads((GOLDEN / "manifest.json").read_text())
