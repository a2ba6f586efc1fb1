"""The operator uids of the profile job's production graph, built in a fresh process (the
planner numbers the operators it generates per process, as a restore sees them).

    python -m tests.pipeline.graph_uids           # print them
    python -m tests.pipeline.graph_uids --write   # pin the current ones (a deliberate change)

Savepoints map state to operators by uid: a renamed uid, or a new output that shifts the
planner's numbering, makes the state of the operators involved unrestorable. The pipeline test
compares the graph with the pinned list, so such a change is made on purpose or not at all."""

import sys
from pathlib import Path

PINNED = Path(__file__).with_name("profile_job_uids.txt")


def production_uids() -> list[str]:
    """The uid of every operator of the production graph (built, never run), in graph order."""
    from conf import settings as settings_module
    from jobs import profile as job
    from jobs import runtime

    settings = settings_module.load("local")
    env = runtime.create_environment(settings)
    t_env = runtime.create_table_environment(env)
    source = runtime.KafkaRawSource(t_env, settings, {0: 0}, {0: 1}, "profile")
    control = job.KafkaControl(settings, bounded=True)
    consent = job.KafkaConsent(settings, bounded=True)
    sinks = job.ProductionSinks(t_env, settings)
    job.build_pipeline(env, settings, source, sinks, control, consent)
    graph = env._generate_stream_graph(clear_transformations=False)
    nodes = sorted(graph.getStreamNodes().toArray(), key=lambda node: node.getId())
    return [node.getTransformationUID() for node in nodes]


if __name__ == "__main__":
    uids = "".join(f"{uid}\n" for uid in production_uids())
    if sys.argv[1:] == ["--write"]:
        PINNED.write_text(uids)
    print(uids, end="")
