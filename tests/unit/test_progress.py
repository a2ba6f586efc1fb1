"""Progress of long work (jobs/progress.py): a bar on a terminal, plain lines elsewhere."""

import io
import re

from jobs.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_writes_a_line_at_most_every_interval_and_one_at_the_end():
    log = io.StringIO()
    with Progress("[replay]", 3, "rows", stream=log, every_s=3600) as progress:
        progress.update()
        progress.update(2)
        assert log.getvalue() == "", "nothing before the interval has passed"
    [line] = log.getvalue().splitlines()
    assert line.startswith("[replay] done: 3 of 3 (100%) rows in ")
    assert "\r" not in log.getvalue()


def test_each_line_says_how_far_how_fast_and_how_long_is_left():
    log = io.StringIO()
    progress = Progress("[generate]", 10, "users", stream=log, every_s=0)
    progress.update(4)
    assert "[generate] 4 of 10 (40%) users in" in log.getvalue()
    assert "/s), about" in log.getvalue() and "s left" in log.getvalue()
    unknown = io.StringIO()
    open_ended = Progress("[bench]", None, "events", stream=unknown, every_s=0)
    open_ended.update(7)
    assert "[bench] 7 events in" in unknown.getvalue() and "left" not in unknown.getvalue()


def test_on_a_terminal_it_draws_a_bar_with_rate_and_eta():
    screen = Terminal()
    with Progress("[train] replaying", 50, "users", stream=screen) as progress:
        progress.update(50)
    drawn = screen.getvalue()
    assert "\r" in drawn and "100%" in drawn and "users/s" in drawn
    assert re.search(r"\b50(\.0)?/50(\.0)?\b", drawn)
