"""The feature vector the models see (udfs/model_features.py), read by name from a profile's
snapshot: each feature is the profile part its name says."""

import math

import pytest

from conf import settings as settings_module
from tests.unit.profile_events import MINUTE, T0, cart, page, view
from udfs.model_features import (
    CURRENT_FEATURES,
    DEVIATION_FEATURES,
    FEATURES,
    SHARE_FEATURES,
)
from udfs.profile import UserProfile

S = settings_module.load("local").profile


def profile_after(events) -> UserProfile:
    profile = UserProfile.new("u1", S)
    for e in events:
        profile.apply(e, e.ts, S)
    return profile


def test_every_feature_has_its_place_and_reads_by_name():
    profile = profile_after([page(T0), view(T0 + MINUTE), cart(T0 + 2 * MINUTE)])
    snapshot = profile.snapshot(S, full=False)
    features = snapshot.features
    assert len(features.values) == len(FEATURES)
    assert features.take(FEATURES) == features.values
    c = snapshot.columns
    assert features["log_events"] == math.log1p(3)
    assert features["propensity_purchase"] == c["propensity_purchase"]
    assert features["engagement_score"] == c["engagement_score"]
    assert features["rfm_purchase_m"] == snapshot.details["rfm_purchase"][2]


def test_the_current_state_is_one_hot_and_the_open_session_is_counted():
    features = profile_after([page(T0), view(T0 + MINUTE), cart(T0 + 2 * MINUTE)]).snapshot(S)
    hot = [name for name in CURRENT_FEATURES if features.features[name] == 1.0]
    assert hot == [f"now_{features.details['current_state']}"] == ["now_cart"]
    vector = features.features
    assert (vector["session_events"], vector["session_cart_adds"]) == (3.0, 1.0)
    assert vector["session_product_views"] == 1.0


def test_state_shares_are_the_decayed_counts_over_their_total():
    snapshot = profile_after([page(T0), view(T0 + MINUTE), view(T0 + 2 * MINUTE)]).snapshot(S)
    counts = snapshot.details["trend_counts"]
    total = sum(counts.values())
    for name in SHARE_FEATURES:
        state = name.removeprefix("share_")
        assert snapshot.features[name] == pytest.approx(counts.get(state, 0.0) / total)


def test_without_a_baseline_the_deviations_are_zero():
    features = profile_after([page(T0)]).snapshot(S).features
    assert features.take(DEVIATION_FEATURES) == [0.0] * len(DEVIATION_FEATURES)
