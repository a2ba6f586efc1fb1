"""Consent per purpose (udfs/consent.py) in the profile job's keyed function: what each purpose
allows, what the regime gives users who never spoke, and that what is refused is counted."""

import json

import pytest

from conf.settings import Actions, Privacy
from jobs.control import ScoringSettings
from tests.unit.profile_events import DAY, MINUTE, T0, cart, event, page, view
from tests.unit.test_decision_step import policy_record
from tests.unit.test_profile_job import CONFIG, TAG, Harness, S, counters
from tests.unit.test_recommendation_job import REQUESTS, Steps
from udfs import outputs
from udfs.consent import ConsentRules, updated
from udfs.events import ConsentUpdate, ErasureRequest, EventType
from udfs.recommendation_steps import FORGET

# One marketing action, one of personalization below it, one needing no consent below both:
# all over their thresholds on every update.
POLICY = """
actions:
  - {name: discount, score: intent, threshold: 0.0, priority: 3, purposes: [marketing],
     payload: {kind: discount}}
  - {name: tip, score: intent, threshold: 0.0, priority: 2, purposes: [personalization],
     payload: {kind: tip}}
  - {name: alert, score: intent, threshold: 0.0, priority: 1, purposes: [], payload: {kind: x}}
"""
OPT_IN = Privacy(regime="opt_in")


def consent(ts: int, **purposes) -> object:
    return event(EventType.CONSENT_UPDATE, ts, ConsentUpdate(purposes))


def harness(tmp_path, privacy=None):
    scoring = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None, actions=Actions())
    in_force = [policy_record(tmp_path, POLICY, 1)]
    return Harness(scoring=scoring, in_force=in_force, privacy=privacy)


def decided(h) -> list[str]:
    return [a.action for a in h.scored["actions"]]


def test_the_regime_decides_for_purposes_a_user_never_spoke_of():
    opt_out, opt_in = ConsentRules(Privacy().defaults), ConsentRules(OPT_IN.defaults)
    said = updated(None, {"marketing": False}, T0)
    assert opt_out.allows(said, "analytics") and not opt_out.allows(said, "marketing")
    assert not opt_in.allows(said, "analytics") and not opt_in.allows(None, "personalization")
    mixed = ConsentRules(Privacy(regime="opt_in", default_consent={"analytics": True}).defaults)
    assert mixed.allows(None, "analytics") and not mixed.allows(None, "marketing")
    # What must outlive the user's data: a refusal the default would not make.
    assert opt_out.revoked(said) and not opt_in.revoked(said)


def test_an_older_update_changes_nothing_a_later_one_said_and_unknown_purposes_are_ignored():
    said = updated(None, {"marketing": False}, T0 + DAY)
    said = updated(said, {"marketing": True, "analytics": True, "telepathy": True}, T0)
    assert said == {"marketing": (False, T0 + DAY), "analytics": (True, T0)}


def test_with_marketing_refused_no_offer_is_decided_and_the_refusal_is_counted(tmp_path):
    h = harness(tmp_path)
    h.send(consent(T0, marketing=False))
    h.send(page(T0 + MINUTE))
    assert decided(h) == ["tip"]  # the offer passed over for the next action allowed
    assert counters(h)["refused_without_marketing_consent"] == 1


def test_with_personalization_refused_no_content_action_is_decided(tmp_path):
    h = harness(tmp_path)
    h.send(consent(T0, marketing=False, personalization=False))
    h.send(page(T0 + MINUTE))
    assert decided(h) == ["alert"]  # a service message needs no consent beyond analytics
    refused = counters(h)
    assert refused["refused_without_marketing_consent"] == 1
    assert refused["refused_without_personalization_consent"] == 1


def test_with_personalization_refused_no_item_is_learnt_from_and_no_list_asked_for(tmp_path):
    s = Steps(tmp_path, policy="actions: []")
    s.send(view(T0))
    assert s.touches and s.requests
    s.flow()
    out = s.profiles.send(consent(T0 + MINUTE, personalization=False))
    [forget] = [row for tag, row in out if tag == REQUESTS]
    assert json.loads(forget.message.body)[FORGET] is True
    assert s.profiles.user().shopper is None  # the item memory is gone with the list
    s.requests = []
    s.send(view(T0 + 2 * MINUTE))
    s.send(cart(T0 + 3 * MINUTE))
    assert s.touches == [] and s.requests == []
    assert counters(s.profiles)["refused_without_personalization_consent"] == 2
    assert s.profiles.user().profile.events == 3  # the profile itself goes on


def test_under_opt_in_nothing_is_kept_until_analytics_is_granted(tmp_path):
    h = harness(tmp_path, privacy=OPT_IN)
    assert h.send(page(T0)) == [] and h.archived == []
    assert h.state_is_empty()
    assert counters(h)["refused_without_analytics_consent"] == 1
    h.send(consent(T0 + MINUTE, analytics=True))
    [profile] = h.send(page(T0 + 2 * MINUTE))
    assert profile.events == 1
    assert [row.type for row in h.archived] == ["consent_update", "page_view"]
    assert decided(h) == ["alert"]  # marketing and personalization: not granted


def test_after_a_revocation_later_events_are_neither_archived_nor_profiled(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    h.send(consent(T0 + MINUTE, analytics=False))
    archived = len(h.archived)
    assert h.send(page(T0 + 2 * MINUTE)) == []
    assert len(h.archived) == archived
    assert h.holds_only_consent()
    assert counters(h)["refused_without_analytics_consent"] == 1


def test_a_consent_update_later_than_the_allowed_lateness_is_applied_not_dead_lettered(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0 + DAY))
    h.advance(T0 + DAY)
    out = h.send(consent(T0, analytics=False))
    assert [o for o in out if o[0] is TAG[outputs.DEAD_LETTERS]] == [], "no dead letter"
    assert h.holds_only_consent()


@pytest.mark.parametrize("regime, kept", [("opt_out", True), ("opt_in", False)])
def test_a_refusal_outlives_the_users_expiry_only_where_the_default_would_allow(
    tmp_path, regime, kept
):
    privacy = Privacy(regime=regime, default_consent={"analytics": True})
    h = harness(tmp_path, privacy=privacy)
    h.send(consent(T0, marketing=False))
    h.send(page(T0 + MINUTE))
    h.advance(T0 + MINUTE + S.long_term_ttl_ms + DAY)
    if kept:
        assert h.holds_only_consent() and h.user().consent == {"marketing": (False, T0)}
    else:
        assert h.state_is_empty()


def test_an_erasure_request_forgets_the_user_and_asks_for_erasure_everywhere(tmp_path):
    h = harness(tmp_path)
    h.send(consent(T0, marketing=False))
    h.send(page(T0 + MINUTE))
    request = event(EventType.ERASURE_REQUEST, T0 + 2 * MINUTE, ErasureRequest("dsr-7"))
    out = h.send(request)
    [erasure] = [row for tag, row in (o for o in out if o[0] is TAG[outputs.ERASURES])]
    assert (erasure.user_id, erasure.ts, erasure.reason, erasure.request_id) == (
        "u1",
        T0 + 2 * MINUTE,
        "requested",
        "dsr-7",
    )
    assert h.holds_only_consent()  # what the user said of marketing stays
    assert h.user().consent == {"marketing": (False, T0)}
    assert [row.type for row in h.archived] == ["consent_update", "page_view"], "not archived"


def test_an_erasure_request_later_than_the_allowed_lateness_is_carried_out_not_dead_lettered(
    tmp_path,
):
    h = harness(tmp_path)
    h.send(page(T0 + DAY))
    h.advance(T0 + DAY)
    out = h.send(event(EventType.ERASURE_REQUEST, T0, ErasureRequest("dsr-8")))
    assert [o for o in out if o[0] is TAG[outputs.DEAD_LETTERS]] == [], "no dead letter"
    assert [o for o in out if o[0] is TAG[outputs.ERASURES]]
    assert h.state_is_empty()
