"""The small set of behavioural states that profiles and the Markov signature work with.

Event types map onto states (all email events are one state, for example); `exit` is the end of
a session. Consent updates are not behaviour and have no state.
"""

from __future__ import annotations

from udfs.events import EventType

STATES = (
    "browse",
    "search",
    "view",
    "cart",
    "uncart",
    "wishlist",
    "coupon",
    "checkout",
    "purchase",
    "email",
    "offer",
    "exit",
)
STATE_INDEX = {name: i for i, name in enumerate(STATES)}
K = len(STATES)
EXIT = STATE_INDEX["exit"]
ACTIVE_STATES = K - 1  # every state but exit

STATE_OF: dict[EventType, int] = {
    EventType.PAGE_VIEW: STATE_INDEX["browse"],
    EventType.CONTENT_INTERACTION: STATE_INDEX["browse"],
    EventType.APP_CLICK: STATE_INDEX["browse"],
    EventType.SEARCH: STATE_INDEX["search"],
    EventType.PRODUCT_VIEW: STATE_INDEX["view"],
    EventType.ADD_TO_CART: STATE_INDEX["cart"],
    EventType.REMOVE_FROM_CART: STATE_INDEX["uncart"],
    EventType.WISHLIST_ADD: STATE_INDEX["wishlist"],
    EventType.WISHLIST_REMOVE: STATE_INDEX["wishlist"],
    EventType.COUPON_ATTEMPT: STATE_INDEX["coupon"],
    EventType.CHECKOUT_START: STATE_INDEX["checkout"],
    EventType.PURCHASE: STATE_INDEX["purchase"],
    EventType.EMAIL_OPEN: STATE_INDEX["email"],
    EventType.EMAIL_CLICK: STATE_INDEX["email"],
    EventType.EMAIL_REPLY: STATE_INDEX["email"],
    EventType.OFFER_RESPONSE: STATE_INDEX["offer"],
}

# Propensity targets: the action and the state that reaching it means.
PROPENSITY_TARGETS = {
    "purchase": STATE_INDEX["purchase"],
    "add_to_cart": STATE_INDEX["cart"],
    "checkout_start": STATE_INDEX["checkout"],
}
# The model-free propensity of leaving, ranked with the targets above.
CHURN = "churn"
