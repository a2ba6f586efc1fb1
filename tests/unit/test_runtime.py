"""The job runtime's command-line side, without a JVM."""

from kafka.errors import KafkaTimeoutError

from conf import settings as settings_module
from jobs import runtime

CONFIG = settings_module.load("local")


def test_waiting_for_the_stop_offsets_rides_out_a_broker_that_does_not_answer(monkeypatch):
    answers = iter([KafkaTimeoutError("Unable to bootstrap"), {0: "5/9"}, {}])
    ended = iter([False, False, False, True])

    def offsets_ahead(config, group, stop):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(runtime, "stop_offsets_ahead", offsets_ahead)
    monkeypatch.setattr(runtime, "job_ended", lambda client: next(ended))
    runtime.drain_when_read(None, CONFIG, "profile", {0: 9}, grace_s=60, poll_s=0)
    assert next(ended, "all polled") == "all polled"  # it kept polling until the job ended
