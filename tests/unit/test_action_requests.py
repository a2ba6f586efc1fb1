"""Actions asked for through the API (an `action_request` event) in the profile job's keyed
function: decided whatever the score's threshold, once per request id, and only where the
user's consent, the action's eligibility, cooldown and cap allow; what is not decided is
counted."""

import dataclasses

from conf.settings import Actions
from jobs.control import ScoringSettings
from tests.unit.profile_events import DAY, MINUTE, T0, cart, event, page
from tests.unit.test_consent import consent
from tests.unit.test_decision_step import policy_record
from tests.unit.test_profile_job import CONFIG, Harness, counters
from udfs.events import ActionRequest, EventType

# Thresholds no profile of these tests reaches: only a request decides.
POLICY = """
actions:
  - {name: discount, score: intent, threshold: 1000, priority: 2, purposes: [marketing],
     cooldown_ms: 86400000, cap_per_day: 1, payload: {kind: discount}}
  - {name: chat, score: intent, threshold: 1000, priority: 1, purposes: [personalization],
     eligible: {open_cart: true}, payload: {kind: chat}}
"""


def harness(tmp_path):
    scoring = ScoringSettings(CONFIG.models, CONFIG.leads, registry_dir=None, actions=Actions())
    return Harness(scoring=scoring, in_force=[policy_record(tmp_path, POLICY, 1)])


def request(ts: int, action: str, request_id: str):
    """As the API sends it: its event id made of the caller's idempotency key."""
    asked = event(EventType.ACTION_REQUEST, ts, ActionRequest(action, request_id))
    return dataclasses.replace(asked, event_id=f"api-{request_id}")


def actions(h) -> list:
    return h.scored["actions"]


def test_a_request_decides_its_action_whatever_the_threshold_once_per_request_id(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    h.send(page(T0 + MINUTE))
    assert actions(h) == [], "under the threshold, nothing is decided by itself"
    h.send(request(T0 + 2 * MINUTE, "discount", "key-1"))
    [decision] = actions(h)
    assert (decision.action, decision.event_id, decision.ts) == (
        "discount",
        "api-key-1",
        T0 + 2 * MINUTE,
    )
    assert decision.threshold == 1000 and decision.score < 1000
    h.send(request(T0 + 3 * MINUTE, "discount", "key-1"))  # the same request, sent again
    assert len(actions(h)) == 1 and counters(h)["duplicate_events"] == 1
    assert h.user().profile.events == 2, "a request is no behaviour"


def test_cooldown_cap_consent_and_eligibility_decline_a_request_and_it_is_counted(tmp_path):
    h = harness(tmp_path)
    h.send(page(T0))
    h.send(request(T0 + MINUTE, "discount", "first"))
    h.send(request(T0 + 2 * MINUTE, "discount", "within-the-cooldown"))
    h.send(request(T0 + 3 * MINUTE, "chat", "no-open-cart"))
    h.send(request(T0 + 4 * MINUTE, "no-such-action", "unknown"))
    assert [a.event_id for a in actions(h)] == ["api-first"]
    assert counters(h)["action_requests_declined"] == 3
    h.send(consent(T0 + 5 * MINUTE, marketing=False))
    h.send(request(T0 + DAY + MINUTE, "discount", "after-the-cooldown-but-refused"))
    assert len(actions(h)) == 1
    seen = counters(h)
    assert seen["action_requests_declined"] == 4 and seen["refused_without_marketing_consent"] == 1
    h.send(cart(T0 + DAY + 2 * MINUTE))
    h.send(request(T0 + DAY + 3 * MINUTE, "chat", "with-a-cart"))
    assert [a.action for a in actions(h)] == ["discount", "chat"]


def test_a_request_for_a_user_without_a_profile_is_declined(tmp_path):
    h = harness(tmp_path)
    h.send(request(T0, "discount", "too-early"))
    assert actions(h) == [] and counters(h)["action_requests_declined"] == 1
