"""Everything JSON-round-trips exactly and ids are stable."""

from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.tasks import Score, TaskInstance, TaskSpec, Trajectory
from flywheel_assets.world.teacher import ScriptedTeacher


def test_everything_round_trips_through_json_exactly():
    batch = seed_instances(["retail", "banking"], 6, seed=0, round_key="r000")
    trajectories = run_rollouts(batch.instances, ScriptedTeacher())
    scores = [score(i, t) for i, t in zip(batch.instances, trajectories)]
    for cls, objects in ((TaskSpec, batch.tasks), (TaskInstance, batch.instances),
                         (Trajectory, trajectories), (Score, scores)):
        for obj in objects:
            again = cls.from_json(obj.to_json())
            assert again == obj and again.to_json() == obj.to_json()


def test_ids_are_stable_and_unique():
    a = seed_instances(["retail"], 20, seed=0, round_key="r000").instances
    b = seed_instances(["retail"], 20, seed=0, round_key="r000").instances
    c = seed_instances(["retail"], 20, seed=1, round_key="r000").instances
    assert [i.instance_id for i in a] == [i.instance_id for i in b]
    assert len({i.instance_id for i in a}) == 20
    assert not {i.instance_id for i in a} & {i.instance_id for i in c}
