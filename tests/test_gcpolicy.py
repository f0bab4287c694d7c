"""When the collector runs in a serving process: off while jobs load, then
on with a young generation collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cronsvc import gcpolicy


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


def test_while_jobs_load_the_collector_is_off_and_what_existed_is_frozen() -> None:
    gc.unfreeze()
    gcpolicy.before_loading()
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_once_loaded_it_collects_again_the_young_generation_less_often() -> None:
    gcpolicy.before_loading()
    gcpolicy.after_loading(loaded=True)
    assert gc.isenabled()
    assert gc.get_threshold() == (gcpolicy.FIRST_GENERATION, 20, 100)


def test_a_process_stopping_before_the_load_ended_keeps_the_usual_thresholds() -> None:
    before = gc.get_threshold()
    gcpolicy.before_loading()
    gcpolicy.after_loading(loaded=False)
    assert gc.isenabled() and gc.get_threshold() == before


def test_at_exit_the_collector_is_on_whatever_happened() -> None:
    gcpolicy.before_loading()
    gcpolicy.at_exit()
    assert gc.isenabled()
