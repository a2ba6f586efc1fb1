"""Sessions of one user: open until event time passes their last event by the inactivity gap,
then closed into a summary. Producers name sessions (`session_id`); the gap decides when one is
over. Several can be open at once while out-of-order events arrive."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from udfs.events import CartChange, Event, EventType, PageView, Purchase
from udfs.timeunits import MINUTE_MS

BASELINE_METRICS = ("events", "minutes", "product_views", "searches", "cart_adds", "mean_dwell_s")


@dataclass(slots=True)
class OpenSession:
    session_id: str
    start: int
    end: int
    events: int = 0
    page_views: int = 0
    product_views: int = 0
    searches: int = 0
    cart_adds: int = 0
    checkouts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    dwell_ms: int = 0
    max_scroll: float = 0.0
    cart_value: float = 0.0  # what the cart holds now: adds minus removals, emptied by a purchase
    # (ts, tie-breaker, state) in event-time order: the session's path for the Markov model.
    steps: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, event: Event, state: int, order: int) -> None:
        self.start = min(self.start, event.ts)
        self.end = max(self.end, event.ts)
        self.events += 1
        bisect.insort(self.steps, (event.ts, order, state))
        data = event.data
        kind = event.type
        if isinstance(data, PageView):
            self.page_views += 1
            self.dwell_ms += data.dwell_ms
            self.max_scroll = max(self.max_scroll, data.scroll_depth)
        elif kind is EventType.PRODUCT_VIEW:
            self.product_views += 1
        elif kind is EventType.SEARCH:
            self.searches += 1
        elif kind is EventType.ADD_TO_CART and isinstance(data, CartChange):
            self.cart_adds += 1
            self.cart_value += data.quantity * data.price
        elif kind is EventType.REMOVE_FROM_CART and isinstance(data, CartChange):
            self.cart_value = max(0.0, self.cart_value - data.quantity * data.price)
        elif kind is EventType.CHECKOUT_START:
            self.checkouts += 1
        elif isinstance(data, Purchase):
            self.purchases += 1
            self.revenue += data.total
            self.cart_value = 0.0

    @property
    def path(self) -> list[int]:
        return [state for _, _, state in self.steps]

    def metrics(self) -> list[float]:
        """The values the baseline tracks, in BASELINE_METRICS order."""
        mean_dwell_s = self.dwell_ms / self.page_views / 1000.0 if self.page_views else 0.0
        return [
            float(self.events),
            (self.end - self.start) / MINUTE_MS,
            float(self.product_views),
            float(self.searches),
            float(self.cart_adds),
            mean_dwell_s,
        ]


@dataclass(frozen=True, slots=True)
class SessionSummary:
    user_id: str
    session_id: str
    start_ts: int
    end_ts: int
    events: int
    page_views: int
    product_views: int
    searches: int
    cart_adds: int
    checkouts: int
    purchases: int
    revenue: float
    mean_dwell_ms: float
    max_scroll: float

    @property
    def abandoned(self) -> bool:
        """Something was added to the cart and nothing was bought."""
        return self.cart_adds > 0 and self.purchases == 0

    @staticmethod
    def of(user_id: str, s: OpenSession) -> SessionSummary:
        return SessionSummary(
            user_id,
            s.session_id,
            s.start,
            s.end,
            s.events,
            s.page_views,
            s.product_views,
            s.searches,
            s.cart_adds,
            s.checkouts,
            s.purchases,
            round(s.revenue, 2),
            s.dwell_ms / s.page_views if s.page_views else 0.0,
            s.max_scroll,
        )


@dataclass(slots=True)
class Sessions:
    open: dict[str, OpenSession] = field(default_factory=dict)
    # Recently closed sessions (id -> last event time): a straggler for one of them is counted
    # as late instead of reopening it. Forgotten once beyond the allowed lateness.
    closed: dict[str, int] = field(default_factory=dict)
    last_closed_end: int | None = None
    # Time between the last closed session's start and the activity before it (None if first).
    last_closed_gap: int | None = None

    def add(self, event: Event, state: int, order: int, watermark: int, gap_ms: int) -> str:
        """Adds the event to its session. Returns `opened`, `added`, or `late` when its
        session is already closed (or would close at once), in which case nothing changes."""
        session = self.open.get(event.session_id)
        if session is None:
            if event.session_id in self.closed or event.ts + gap_ms <= watermark:
                return "late"
            session = self.open[event.session_id] = OpenSession(
                event.session_id, event.ts, event.ts
            )
            session.add(event, state, order)
            return "opened"
        session.add(event, state, order)
        return "added"

    def due(self, watermark: int, gap_ms: int, lateness_ms: int) -> list[OpenSession]:
        """Removes and returns the sessions whose gap has passed, oldest first."""
        done = sorted(
            (s for s in self.open.values() if s.end + gap_ms <= watermark),
            key=lambda s: (s.end, s.session_id),
        )
        for s in done:
            del self.open[s.session_id]
            self.closed[s.session_id] = s.end
            previous = self.previous_end(s.start)
            self.last_closed_gap = None if previous is None else s.start - previous
            self.last_closed_end = max(self.last_closed_end or s.end, s.end)
        horizon = watermark - gap_ms - lateness_ms
        self.closed = {sid: end for sid, end in self.closed.items() if end >= horizon}
        return done

    def current(self) -> OpenSession | None:
        """The open session with the latest activity."""
        return max(self.open.values(), key=lambda s: (s.end, s.session_id), default=None)

    def return_gap(self) -> int | None:
        """How long the user had been away before the latest session (open or closed) began."""
        session = self.current()
        if session is None:
            return self.last_closed_gap
        previous = self.previous_end(session.start)
        return None if previous is None else session.start - previous

    def previous_end(self, start: int) -> int | None:
        """When the user was last active before a session starting at `start`."""
        ends = [s.end for s in self.open.values() if s.end < start]
        if self.last_closed_end is not None and self.last_closed_end < start:
            ends.append(self.last_closed_end)
        return max(ends, default=None)
