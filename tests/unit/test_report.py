"""The experiment report from per-user rows: counts per arm, lift against the control, and the
sample-ratio check against the configured weights; the picture is written."""

import pytest

from jobs.report import analyse, plot


def rows(variant, users, converted, start=0):
    return [(variant, f"{variant}-{i}", start + i * 1000, i < converted) for i in range(users)]


def test_arms_and_lift_against_the_control(tmp_path):
    data = rows("control", 500, 50) + rows("treated", 500, 80)
    result = analyse(data, {"control": 1, "treated": 1}, "control")
    assert result["arms"]["control"] == {"users": 500, "converted": 50, "rate": 0.1}
    lift = result["against_control"]["treated"]
    assert lift["absolute_lift"] == pytest.approx(0.06)
    assert lift["absolute_ci"][0] > 0 and lift["p_value"] < 0.05
    assert result["sample_ratio"]["mismatch"] is False
    plot(data, tmp_path / "e.png", "e")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_a_skewed_split_is_reported_as_a_sample_ratio_mismatch():
    data = rows("control", 700, 70) + rows("treated", 300, 30)
    result = analyse(data, {"control": 1, "treated": 1}, "control")
    assert result["sample_ratio"]["mismatch"] is True
