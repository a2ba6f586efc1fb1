"""`make control` against the real broker and PostgreSQL: it publishes each kind whose source
changed, with the next sequence of its kind, and nothing when nothing changed."""

import psycopg

from jobs import control


def test_publishing_sends_only_what_changed_with_the_next_sequence(own_outputs):
    first = {r.kind: r.sequence for r in control.publish(own_outputs)}
    assert first.get(control.POLICY) == first.get(control.MODIFIERS) == 1
    assert control.publish(own_outputs) == []  # nothing changed
    with psycopg.connect(own_outputs.postgres.conninfo()) as conn:
        conn.execute("UPDATE cohort_modifiers SET intent_pct = 20 WHERE modifier_id = 1")
    [changed] = control.publish(own_outputs)
    assert (changed.kind, changed.sequence) == (control.MODIFIERS, 2)
    latest = control.latest(own_outputs)
    assert latest[control.MODIFIERS] == changed
    assert latest[control.MODIFIERS].content[0] == [1, "researchers", "always", 20.0, 0.0]
    assert latest[control.POLICY].sequence == 1
