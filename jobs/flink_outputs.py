"""The profile job's streams as Flink rows: each output of udfs/outputs.py as a typed row of
its columns, and the messages between its steps as keyed rows.

Module-level, so that the functions that emit them refer to them by reference when pickled
(an OutputTag holds a Java object)."""

from __future__ import annotations

from pyflink.common import Row, Types
from pyflink.common.types import RowKind
from pyflink.datastream import OutputTag

from jobs import runtime
from udfs import outputs
from udfs.outputs import Emitted

MESSAGE = Types.ROW_NAMED(["body"], [Types.STRING()])
KEYED_MESSAGE = Types.ROW_NAMED(["key", "message"], [Types.STRING(), MESSAGE])


class FlinkMessage:
    """A message between steps (udfs.outputs.TOUCHES, REQUESTS) as build-profiles emits it:
    (key, (body)), keyed by the JVM on its first field."""

    def __init__(self, output: outputs.Output):
        self.output = output
        self.row_type = KEYED_MESSAGE
        self.tag = OutputTag(output.name, KEYED_MESSAGE)

    def row(self, emitted: Emitted) -> Row:
        key, body = emitted.values
        return Row(key=key, message=Row(body=body))


FLINK_TYPES = {
    "text": Types.STRING(),
    "json": Types.STRING(),
    "bigint": Types.LONG(),
    "int": Types.INT(),
    "double": Types.DOUBLE(),
    "boolean": Types.BOOLEAN(),
    "bytes": runtime.BYTES,
}


class FlinkOutput:
    """An output (udfs.outputs) as build-profiles emits it: a typed row of its columns and, for
    one bound for Kafka, `record` (its Kafka value, made in the per-user pipeline), so that no
    Python operator sits between build-profiles and the sinks. The row of a deletable output
    carries its row kind: an upsert, or a delete (a PostgreSQL delete and a Kafka tombstone)."""

    def __init__(self, output: outputs.Output, main: bool = False):
        self.output = output
        self.columns = [(n, FLINK_TYPES[t]) for n, t in output.columns]
        if output.kafka:
            self.columns.append(("record", runtime.BYTES))
        self.row_type = Types.ROW_NAMED([n for n, _ in self.columns], [t for _, t in self.columns])
        self.tag = None if main else OutputTag(output.name, self.row_type)
        self._row = Row(*(n for n, _ in self.columns))  # calling it builds a row with these names

    def row(self, emitted: outputs.Emitted) -> Row:
        if self.output.kafka:
            row = self._row(*emitted.values, emitted.value)
        else:
            row = self._row(*emitted.values)
        if self.output.deletable:
            row.set_row_kind(RowKind.DELETE if emitted.delete else RowKind.UPDATE_AFTER)
        return row


# Profile updates are build-profiles' main output, every other output a side output; the
# messages to the recommendation steps are keyed rows. Recommendations come from rank.
FLINK_OUTPUTS = {
    o: FlinkMessage(o)
    if o in (outputs.TOUCHES, outputs.REQUESTS)
    else FlinkOutput(o, main=o is outputs.PROFILES)
    for o in outputs.EMITTED
}
# Recommendations are rank's main output.
RECOMMENDATIONS = FlinkOutput(outputs.RECOMMENDATIONS, main=True)
