"""Replay the Python fuzz targets' committed corpora (fuzz/corpus/) under pytest.

`make fuzz` / `make fuzz-smoke` replay them too, then mutate; this keeps every
seed and regression input of the IKE and pipe codecs checked by a plain
`pytest` run, with the targets' own oracles (only the documented exception,
and the round trip holds).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = ["ike_message", "pipe_codec"]


def corpus(target: str) -> list[Path]:
    return sorted((FUZZ / "corpus" / target).iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_clean(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FUZZ))
    module = importlib.import_module(target)
    files = corpus(target)
    assert len(files) >= 10
    for path in files:
        module.test_one_input(path.read_bytes())
    sys.modules.pop(target, None)
