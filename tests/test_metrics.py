"""Counters are declared once in `cronsvc.metrics.COUNTERS`; call sites name them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cronsvc
from cronsvc.metrics import COUNTERS, Metrics


def test_a_declared_counter_counts_by_its_labels() -> None:
    metrics = Metrics()
    metrics.inc("cronsvc_store_errors_total", op="claim")
    metrics.inc("cronsvc_store_errors_total", 2, op="claim")
    assert metrics.get("cronsvc_store_errors_total", op="claim") == 3
    assert "# HELP cronsvc_store_errors_total Store calls that failed" in metrics.render().decode()


def test_counters_an_operator_alerts_on_read_zero_from_the_start() -> None:
    text = Metrics().render().decode()
    for name, spec in COUNTERS.items():
        for values in spec.shown or ():
            labels = ",".join(f'{k}="{v}"' for k, v in zip(spec.labels, values, strict=True))
            sample = f"{name}{{{labels}}}" if labels else name
            assert f"\n{sample} 0.0\n" in text
    assert "cronsvc_runs_replaced_total" not in text  # appears with its first event


def test_an_undeclared_counter_is_refused() -> None:
    with pytest.raises(KeyError, match="cronsvc_nowhere_total"):
        Metrics().inc("cronsvc_nowhere_total")


@pytest.mark.parametrize("labels", [{}, {"op": "claim", "extra": "x"}, {"reason": "claim"}])
def test_labels_other_than_the_declared_ones_are_refused(labels: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cronsvc_store_errors_total"):
        Metrics().inc("cronsvc_store_errors_total", **labels)


def test_every_counter_the_code_counts_is_declared_with_the_labels_it_passes() -> None:
    """Read from the source, so a counter on a path the tests never take
    (a rare error) cannot fail at its first count in production."""
    root = Path(cronsvc.__file__).parent
    seen = 0
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "inc"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("cronsvc_")
            ):
                continue
            seen += 1
            name = node.args[0].value
            where = f"{path.relative_to(root)}:{node.lineno}"
            assert name in COUNTERS, where
            labels = sorted(k.arg for k in node.keywords if k.arg is not None)
            assert labels == sorted(COUNTERS[name].labels), where
    assert seen > 30
