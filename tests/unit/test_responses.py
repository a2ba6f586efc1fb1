"""The simulated answers to offers: valid events, only for delivered offers of the modelled
variants, accepted at the stated rate, and the same answer for the same decision."""

from models.responses import OfferResponses
from tests.conftest import TEST_NOW_MS, event_bytes
from udfs.events import Event, EventParser, EventType, SourceRef

SOURCE = SourceRef("events", 0, 0)
NOW = TEST_NOW_MS - 3_600_000


def decision(n=0, variant="discount_10", delivered=True):
    return {
        "decision_id": f"u{n:05d}|{NOW - 1000}|ev-{n}|discount_offer",
        "user_id": f"u{n:05d}",
        "variant": variant,
        "delivered": delivered,
        "payload": {"kind": "discount", "percent": 10, "amount": 4.5, "cart_total": 45.0},
    }


def test_an_accepted_offer_is_a_response_and_a_purchase_that_parse():
    model = OfferResponses({"discount_10": 1.0})
    response, purchase = model.respond(decision(), NOW)
    parser = EventParser(now_ms=lambda: TEST_NOW_MS)
    parsed = [parser.parse(event_bytes(e), SOURCE) for e in (response, purchase)]
    assert all(isinstance(p, Event) for p in parsed), parsed
    answer, bought = parsed
    assert answer.type is EventType.OFFER_RESPONSE and answer.data.response == "accepted"
    assert answer.data.action_id == decision()["decision_id"]
    assert bought.type is EventType.PURCHASE and bought.data.total == 40.5
    assert answer.session_id == bought.session_id and bought.ts > answer.ts == NOW


def test_control_and_unmodelled_variants_get_no_answer():
    model = OfferResponses({"discount_10": 1.0})
    assert model.respond(decision(delivered=False, variant="control"), NOW) == []
    assert model.respond(decision(variant="discount_15"), NOW) == []
    assert model.respond({**decision(), "variant": None}, NOW) == []


def test_offers_are_accepted_at_the_stated_rate_and_the_same_decision_answers_the_same():
    model = OfferResponses({"discount_10": 0.3}, seed=5)
    answers = [model.respond(decision(n), NOW) for n in range(4000)]
    accepted = sum(len(a) == 2 for a in answers)
    assert all(len(a) in (1, 2) for a in answers)
    assert abs(accepted / 4000 - 0.3) < 0.025  # 3.4 standard errors
    again = [model.respond(decision(n), NOW + 99) for n in range(200)]
    assert [len(a) for a in again] == [len(a) for a in answers[:200]]
    other_seed = OfferResponses({"discount_10": 0.3}, seed=6)
    assert [len(other_seed.respond(decision(n), NOW)) for n in range(200)] != [
        len(a) for a in answers[:200]
    ]
