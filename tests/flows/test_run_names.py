"""Names the Prefect UI shows for flow and task runs, from their parameters (the engine formats a
string template with the call's parameters, defaults included, or calls a callable)."""

import pytest

from flows.discrimination import discrimination
from flows.generation import generation
from flows.imitation import final_imitation, imitation
from flows.lion_iteration import lion_iteration
from lion_core.config import parse_config
from lion_core.results import Judging, Shard
from lion_core.store import PoolRef
from tasks import api, evaluation, pools, report, student
from tasks.common import RunContext

POOL = PoolRef(uri="run://r/iter-2/cache_pool.parquet", sha256="a" * 64, rows=400, schema_version="pool/1")
CTX = RunContext(config=parse_config({}), run_id="nightly-7", run_key="nightly-7@2026-12-01")


def _name(runnable, **parameters):
    template = getattr(runnable, "task_run_name", None) or runnable.flow_run_name
    return template(parameters=parameters) if callable(template) else template.format(**parameters)


def _shard(name, index):
    return Shard(k=2, name=name, pool=POOL, index=index, lo=index * 32, hi=index * 32 + 32)


def test_flow_runs_are_named_after_the_run_and_iteration():
    assert _name(lion_iteration, ctx=CTX, k=2) == "nightly-7-iter-2"
    assert _name(imitation, ctx=CTX, k=2, train_pool=POOL, previous_checkpoint=None) == "iter-2-imitation"
    assert _name(discrimination, ctx=CTX, k=2, cache_pool=POOL, checkpoint="c") == "iter-2-discrimination"
    assert _name(generation, ctx=CTX, k=2, cache_pool=POOL, judgments=POOL) == "iter-2-generation"
    assert _name(final_imitation, ctx=CTX, n=3) == "iter-3-final-imitation"


@pytest.mark.parametrize("task_obj,parameters,expected", [
    (api.answers_shard, {"shard": _shard("teacher_answers_train", 3), "role": "teacher", "stage": "imitation"},
     "teacher_answers_train-shard-03"),
    (api.judgments_shard, {"shard": _shard("judgments", 7), "judging": Judging(teacher=POOL, student=POOL)},
     "referee-shard-07"),
    (api.judgments_shard, {"shard": _shard("judgments-base", 0),
                           "judging": Judging(teacher=POOL, student=POOL, role="judge")}, "judge-base-shard-00"),
    (api.generate_instructions, {"k": 2}, "iter-2-generator"),
    (pools.open_run, {"run_id": "nightly-7"}, "open-nightly-7"),
    (pools.merge_parts, {"k": 2, "name": "judgments"}, "iter-2-merge-judgments"),
    (pools.update_pools, {"k": 2}, "iter-2-update-pools"),
    (pools.training_set, {"k": 2}, "iter-2-training-set"),
    (student.train, {"k": 2}, "iter-2-train-student"),
    (student.record_checkpoint, {"k": 2}, "iter-2-record-checkpoint"),
    (student.student_answers, {"k": 2, "name": "student_answers"}, "iter-2-student_answers"),
    (report.publish_iteration, {"k": 2}, "iter-2-report"),
    (evaluation.open_evaluation, {"eval_id": "nightly-7-eval"}, "open-nightly-7-eval"),
])
def test_task_runs_are_named_after_what_they_do(task_obj, parameters, expected):
    assert _name(task_obj, **parameters) == expected


def test_every_flow_has_a_docstring_for_the_ui():
    from flows.evaluate import evaluate
    from flows.lion import lion

    for f in (lion, lion_iteration, imitation, final_imitation, discrimination, generation, evaluate):
        assert f.description and len(f.description) > 40, f.name


def test_deployment_parameters_are_typed_and_described_for_the_ui_form():
    from prefect.utilities.callables import parameter_schema

    from flows.evaluate import evaluate
    from flows.lion import lion

    for f, required in ((lion, ["config_path"]), (evaluate, ["config_path", "checkpoints"])):
        schema = parameter_schema(f.fn)
        assert schema.required == required, f.name
        for name, prop in schema.properties.items():
            assert prop.get("description") and ("type" in prop or "anyOf" in prop), (f.name, name)
    assert parameter_schema(lion.fn).properties["iterations"]["anyOf"][0]["type"] == "integer"
