import pytest

from kdbook.exercises import ExerciseFailure, Unsolved, placeholder
from kdbook.exercises.predict import check_temperature_experiment


def result(T=4.0, acc=0.60, width=8, seed=0, profile="full", method="kd"):
    return {"spec": {"student_width": width, "teacher": "book",
                     "train": {"method": method, "temperature": T, "alpha": 0.5, "seed": seed, "epochs": 15}},
            "metrics": {"test_acc": acc}, "provenance": {"profile": profile}}


REFERENCE = result()


@pytest.mark.parametrize("acc, phrase", [(0.63, "is better by more"), (0.605, "cannot be told apart"),
                                          (0.55, "is worse by more")])
def test_every_honest_outcome_passes_and_says_which(acc, phrase):
    message = check_temperature_experiment(lambda: result(T=8.0, acc=acc), REFERENCE, threshold=0.012)
    assert phrase in message and "exploratory" in message


@pytest.mark.parametrize("run, named", [
    (result(T=8.0, width=16), "student_width = 16"),
    (result(T=8.0, seed=1), "train.seed = 1"),
    (result(T=4.0), "other than 4.0"),
    (result(T=8.0, method="ce"), "train.method = 'ce'"),
    (result(T=8.0, profile="quick"), "like with like"),
])
def test_an_unfair_run_is_refused_and_the_change_named(run, named):
    with pytest.raises(ExerciseFailure, match=named):
        check_temperature_experiment(lambda: run, REFERENCE, threshold=0.012)


def test_not_a_result_and_unsolved():
    with pytest.raises(ExerciseFailure, match="must return a run's result"):
        check_temperature_experiment(lambda: 0.61, REFERENCE, threshold=0.012)
    with pytest.raises(Unsolved):
        check_temperature_experiment(lambda: placeholder("ex-hyper-predict-t"), REFERENCE, threshold=0.012)


def test_the_setting_allowed_to_change_is_a_parameter():
    from kdbook.exercises.predict import check_prediction

    ref = result(T=4.0)
    run = result(T=4.0, width=16, acc=0.7)
    message = check_prediction("ex", lambda: run, ref, 0.01, may_change="student_width")
    assert "student_width = 16" in message and "is better by more" in message
    with pytest.raises(ExerciseFailure, match="train.temperature = 8.0"):
        check_prediction("ex", lambda: result(T=8.0, width=16), ref, 0.01, may_change="student_width")


def test_several_settings_may_change_together():
    from kdbook.exercises.predict import check_prediction

    ref = result(T=4.0)
    run = result(T=8.0, width=16, acc=0.58)
    message = check_prediction("ex", lambda: run, ref, 0.01, may_change=("student_width", "train.temperature"))
    assert "student_width = 16" in message and "is worse by more" in message
