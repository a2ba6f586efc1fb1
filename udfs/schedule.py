"""When a user's profile record is emitted and when its operator must be called back.

A user has at most one pending event-time timer: the earliest moment anything is due (a session
close, expiry, the end of an attribution window). Moving later needs no
timer call: the early timer fires, finds little to do and the next one is set then. That keeps
timer calls off the per-event path and makes clean-up a single delete."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Schedule:
    wake_at: int | None = None  # the registered timer, if any
    last_emit: int | None = None  # event time of the last profile record
    outcome_due: int | None = None  # the earliest end of an action's attribution window

    def should_emit(self, now: int, interval_ms: int, significant: bool = False) -> bool:
        """Emit now (a `significant` change always is), or hold back until an update at
        last_emit + interval or later. Held back is coalesced, not lost: a later update, at the
        latest the session's close (significant), carries it. No timer waits for it: a record
        sent when a watermark passed would depend on when other users' events moved it."""
        if (
            significant
            or interval_ms == 0
            or self.last_emit is None
            or now >= self.last_emit + interval_ms
        ):
            self.last_emit = now
            return True
        return False

    def reschedule(self, wanted: set[int]) -> tuple[int | None, int | None]:
        """(timer to delete, timer to register) so that the single timer is no later than the
        earliest wanted time; (None, None) when the current one already is."""
        wanted = wanted | ({self.outcome_due} if self.outcome_due is not None else set())
        earliest = min(wanted, default=None)
        if earliest is None or (self.wake_at is not None and self.wake_at <= earliest):
            return None, None
        stale, self.wake_at = self.wake_at, earliest
        return stale, earliest
