from udfs.schedule import Schedule


def test_every_update_is_emitted_without_an_interval():
    s = Schedule()
    assert s.should_emit(100, 0) and s.should_emit(101, 0)


def test_updates_are_held_back_to_one_per_interval_unless_significant():
    s = Schedule()
    assert s.should_emit(1_000, 500)
    assert not s.should_emit(1_200, 500)
    assert s.should_emit(1_300, 500, significant=True)
    assert not s.should_emit(1_700, 500)
    assert s.reschedule({9_000}) == (None, 9_000)  # no timer for what is held back
    assert s.should_emit(1_800, 500)


def test_one_timer_no_later_than_the_earliest_need():
    s = Schedule()
    assert s.reschedule({500, 300}) == (None, 300)
    assert s.reschedule({400}) == (None, None)  # the timer at 300 comes first anyway
    assert s.reschedule({200}) == (300, 200)  # earlier need: move the timer
    assert s.reschedule(set()) == (None, None)
