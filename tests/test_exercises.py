"""Exercises that answer back (course/exercises, tools/grading.py, the student copies of tools/classroom.py).

The checks are tested on answers given directly (right, missing, and one deliberately wrong answer per kind of
check, each with the hint it must give); grading on a small notebook written here; one real notebook's student copy
is executed (slow). That the instructor copies pass: nbval runs every notebook and compares each check cell's
printed pass with the one stored, and the stored results are read here.
"""
import ast
import json

import nbformat
import numpy as np
import pytest

from course import exercises
from tools import classroom, grading

PATHS = classroom.notebook_paths()
CHECKED = [p for p in PATHS if exercises.exercises_of(p.name[:2])]


def evaluate(ex_id, **answers):
    return exercises.evaluate(ex_id, answers)


# ----------------------------------------------------------------------------------------------------------
# The mechanism
def test_unknown_or_malformed_exercise_ids_are_refused_with_what_exists():
    with pytest.raises(exercises.UnknownExercise, match=r"'02.9'.*02.1, 02.2, 02.3"):
        exercises.check("02.9", {})
    with pytest.raises(exercises.UnknownExercise, match="ids look like '02.1'"):
        exercises.get("2.1")
    with pytest.raises(exercises.UnknownExercise, match="notebook 99's checked exercises: none"):
        exercises.get("99.1")


def test_an_unanswered_exercise_fails_naming_the_variables_to_fill_in():
    r = evaluate("02.1", weights_reduced=1, macs_reduced=None)
    assert not r.passed and "not answered yet" in r.hint
    assert "`macs_reduced`" in r.hint and "`weights_naive`" in r.hint and "`weights_reduced`" not in r.hint


def test_a_check_that_raises_on_the_answer_fails_with_the_error_and_does_not_raise():
    r = evaluate("02.2", macs_3a={16: object(), 32: 1, 192: 1})  # not a number: a hint, not an error
    assert not r.passed and "should be a number" in r.hint
    r = evaluate("01.3", predicted_angle=lambda theta: 1 / 0)
    assert not r.passed and r.hint.startswith("checking your answer raised ZeroDivisionError")


def test_check_prints_a_pass_or_the_hint(capsys):
    exercises.check("02.1", {"weights_reduced": 119_296, "macs_reduced": 23_382_016, "weights_naive": 1_689_600,
                             "macs_naive": 331_161_600})
    exercises.check("02.1", {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "✓ exercise 02.1: passed" and out[1].startswith("✗ exercise 02.1: not answered yet")


def test_check_reads_the_callers_globals_by_default(capsys):
    namespace = {"exercises": exercises, "macs_3a": {16: 0, 32: 0, 192: 0}}
    exec('exercises.check("02.2")', namespace)
    assert "`macs_3a[16]` is not right" in capsys.readouterr().out


def test_registering_an_exercise_twice_or_without_answers_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        exercises.exercise("02.1", "x")(lambda x: None)
    with pytest.raises(ValueError, match="must name the variables"):
        exercises.exercise("98.1")


# ----------------------------------------------------------------------------------------------------------
# One deliberately wrong answer per kind of check, and its intended hint
RIGHT_02_1 = {"weights_reduced": 528 * 32 + 25 * 32 * 128, "macs_reduced": 196 * (528 * 32 + 25 * 32 * 128),
              "weights_naive": 25 * 528 * 128, "macs_naive": 196 * 25 * 528 * 128}


@pytest.mark.parametrize("wrong, hint", [
    ({"macs_reduced": 196 * RIGHT_02_1["macs_reduced"]}, "196x too large: did you multiply by the 196 output "
                                                         "positions twice?"),
    ({"macs_naive": RIGHT_02_1["weights_naive"]}, "196x too small: each weight is used once per output position"),
    ({"macs_naive": 2 * RIGHT_02_1["macs_naive"]}, "2x too large: papers' \"ops\" are multiply-accumulates"),
    ({"weights_reduced": 25 * 32 * 128}, "that is the 5x5 conv alone"),
    ({"weights_naive": RIGHT_02_1["weights_naive"] + 128}, "without the biases"),
    ({"weights_naive": 3}, "`weights_naive` is 5.63e+05x too small"),
    ({"weights_naive": "1,689,600"}, "`weights_naive` should be a number, got str"),
], ids=["positions twice", "positions forgotten", "FLOPs", "a part left out", "biases", "far off", "not a number"])
def test_a_count_gets_the_hint_of_its_mistake(wrong, hint):
    assert exercises.evaluate("02.1", RIGHT_02_1).passed
    r = exercises.evaluate("02.1", {**RIGHT_02_1, **wrong})
    assert not r.passed and hint in r.hint, r.hint


def test_a_table_of_counts_names_missing_keys_and_a_part_taken_for_the_whole():
    right = {r: 28 * 28 * (192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * r + 25 * r * 32 + 192 * 32)
             for r in (16, 32, 192)}
    assert evaluate("02.2", macs_3a=right).passed
    r = evaluate("02.2", macs_3a={16: right[16], 32: right[32]})
    assert "should have the keys [16, 32, 192]; missing [192]" in r.hint
    r = evaluate("02.2", macs_3a={**right, 32: 28 * 28 * (192 * 32 + 25 * 32 * 32)})
    assert "`macs_3a[32]` is not right: that is the 5x5 branch alone" in r.hint


def test_a_named_choice_is_checked_after_its_counts():
    aux = {"aux_params": 6_379_728, "aux_macs": 8_372_224, "aux_largest_layer": "aux1/fc"}
    assert exercises.evaluate("02.3", aux).passed
    r = exercises.evaluate("02.3", {**aux, "aux_params": 6_379_728 // 2})
    assert "2x too small: that is one head" in r.hint
    r = exercises.evaluate("02.3", {**aux, "aux_params": 6_379_728 + 6_998_552})
    assert "is that the whole training network?" in r.hint
    r = exercises.evaluate("02.3", {**aux, "aux_largest_layer": "classifier"})
    assert not r.passed and "'classifier' is not the largest" in r.hint
    assert "should be one of" in exercises.evaluate("02.3", {**aux, "aux_largest_layer": "dense"}).hint


def test_the_counts_derived_by_hand_agree_with_the_library():
    """The checks' expected values come from formulas; course.counting must find the same on the models."""
    from flax import nnx

    from course import counting, models
    from course.models.inception import Inception

    for r in (16, 32, 192):
        m = nnx.eval_shape(lambda: Inception(192, 64, 96, 128, r, 32, 32, rngs=nnx.Rngs(0)))
        macs = counting.count(m, (28, 28, 192)).macs
        assert evaluate("02.2", macs_3a={16: macs, 32: macs, 192: macs}).hint.startswith(
            "`macs_3a[32]`" if r == 16 else "`macs_3a[16]`")
    model = models.build("googlenet", abstract=True)
    train, infer = (counting.count(model, (224, 224, 3), mode=m) for m in ("train", "eval"))
    assert exercises.evaluate("02.3", {"aux_params": train.params - infer.params, "aux_macs": train.macs - infer.macs,
                                       "aux_largest_layer": "fc"}).passed


# ----------------------------------------------------------------------------------------------------------
# Notebooks: prompts, answer and check cells, student copies
def assigned(source):
    """The names a cell's top-level statements define."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        for target in getattr(node, "targets", []):
            names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def cells_of(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_every_checked_exercise_has_a_prompt_naming_its_variables_an_answer_and_a_check(path):
    nb = nbformat.read(path, as_version=4)
    registered = exercises.exercises_of(path.name[:2])
    prompts = cells_of(nb, "exercise")
    for ex in registered:
        k = int(ex.id.split(".")[1])
        prompt = prompts[k - 1].source
        assert prompt.startswith(f"**{k}."), f"{ex.id}: the {k}th exercise prompt should start with **{k}."
        for name in ex.answers:
            assert f"`{name}" in prompt, f"{ex.id}: the prompt should say to store the answer in `{name}`"
        i = nb.cells.index(prompts[k - 1])
        answer, check = nb.cells[i + 2], nb.cells[i + 3]  # after the prompt and its folded solution
        assert "answer" in answer.metadata.get("tags", []) and answer.metadata["exercise"] == ex.id
        assert "check" in check.metadata.get("tags", []) and check.metadata["exercise"] == ex.id
        assert check.source == f'exercises.check("{ex.id}")'
        assert set(ex.answers) <= assigned(answer.source), f"{ex.id}: the answer cell does not define every answer"
    assert len(cells_of(nb, "answer")) == len(cells_of(nb, "check")) == len(registered)


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_the_stored_results_of_the_instructor_copy_are_passes(path):
    """nbval re-runs each check cell and compares its line with the stored one: stored passes mean live passes."""
    nb = nbformat.read(path, as_version=4)
    for cell in cells_of(nb, "check"):
        records = [o.get("metadata", {}).get(exercises.METADATA_KEY) for o in cell.outputs]
        assert records == [{"id": cell.metadata["exercise"], "passed": True, "hint": ""}], \
            f"{cell.metadata['exercise']}: stored output {cell.outputs}; re-execute the notebook"


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.name)
def test_the_student_copy_keeps_the_checks_and_loses_the_answers(path):
    nb = nbformat.read(path, as_version=4)
    student = classroom.student_copy(nb)
    text = "\n".join(c.source for c in student.cells)
    assert [c.source for c in cells_of(student, "check")] == [c.source for c in cells_of(nb, "check")]
    assert all(not c.outputs for c in cells_of(student, "check") + cells_of(student, "answer"))
    for cell, stub in zip(cells_of(nb, "answer"), cells_of(student, "answer")):
        ex = exercises.get(cell.metadata["exercise"])
        assert stub.source.splitlines()[1:] == [f"{n} = None" for n in ex.answers]
        for line in cell.source.splitlines():
            if len(line.strip()) > 25:
                assert line.strip() not in text, f"{ex.id}: the answer line {line!r} is in the student copy"


# ----------------------------------------------------------------------------------------------------------
# Grading
def code(source, **metadata):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(metadata)
    return cell


def submission(tmp_path, cells, name="02_bottleneck_1x1.ipynb"):
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def answer(ex_id, source):
    return code(source, exercise=ex_id, tags=["answer"])


def check(ex_id):
    return code(f'exercises.check("{ex_id}")', exercise=ex_id, tags=["check"])


@pytest.mark.slow
def test_grading_a_small_notebook_records_passes_hints_and_errors_and_completes(tmp_path):
    right = "\n".join(f"{k} = {v}" for k, v in RIGHT_02_1.items())
    path = submission(tmp_path, [
        code("from course import exercises"),
        answer("02.1", right), check("02.1"),
        code("raise RuntimeError('a cell of the lesson that raises')"),  # stops nothing
        answer("02.2", "macs_3a = {16: 0, 32: 0}"), check("02.2"),
        answer("02.3", "aux_params = 1 / 0"), check("02.3"),
    ])
    out = tmp_path / "grades.json"
    assert grading.main([str(path), "--out", str(out)]) == 0
    grades = json.loads(out.read_text())
    assert list(grades) == ["02_bottleneck_1x1.ipynb"]
    g = grades["02_bottleneck_1x1.ipynb"]
    assert g["02.1"] == {"passed": True, "hint": ""}
    assert not g["02.2"]["passed"] and "missing [192]" in g["02.2"]["hint"]
    assert g["02.3"] == {"passed": False, "hint": "your answer cell raised ZeroDivisionError: division by zero"}


def test_collect_fails_exercises_whose_check_is_missing_raised_or_never_ran():
    nb = nbformat.v4.new_notebook(cells=[check("02.2"), check("02.3")])
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'exercises' is "
                                                                                      "not defined")]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "✓"}, metadata={
        exercises.METADATA_KEY: {"id": "02.3", "passed": True, "hint": ""}})]
    g = grading.collect(nb, ["02.1", "02.2", "02.3"])
    assert g["02.1"] == {"passed": False, "hint": "the check of exercise 02.1 did not run: its check cell is missing"}
    assert g["02.2"]["hint"] == "the check cell raised NameError: name 'exercises' is not defined"
    assert g["02.3"]["passed"]
    stopped = grading.collect(nbformat.v4.new_notebook(), ["02.1"], stopped="CellTimeoutError: ...")
    assert "did not run: the notebook stopped (CellTimeoutError" in stopped["02.1"]["hint"]


def test_stored_outputs_of_a_submission_are_not_evidence():
    """A submission carrying a forged pass in its outputs is executed afresh: only what runs counts."""
    forged = check("02.1")
    forged.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "✓"}, metadata={
        exercises.METADATA_KEY: {"id": "02.1", "passed": True, "hint": ""}})]
    nb = nbformat.v4.new_notebook(cells=[forged])
    assert grading.collect(nb, ["02.1"])["02.1"]["passed"]  # collect alone trusts outputs...
    cleared = nbformat.from_dict(json.loads(json.dumps(nb)))
    grading.clear_outputs(cleared)
    assert not grading.collect(cleared, ["02.1"])["02.1"]["passed"]  # ...so execute() clears them first


def test_bad_submissions_are_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "grades.json"
    assert grading.main([str(tmp_path / "02_missing.ipynb"), "--out", str(out)]) == 2
    assert "02_missing.ipynb: no such notebook" in capsys.readouterr().err
    (tmp_path / "homework.ipynb").write_text("{}")
    assert grading.main([str(tmp_path / "homework.ipynb"), "--out", str(out)]) == 2
    assert "cannot tell which notebook" in capsys.readouterr().err
    (tmp_path / "02_broken.ipynb").write_text("not json")
    assert grading.main([str(tmp_path / "02_broken.ipynb"), "--out", str(out)]) == 2
    assert "not a readable notebook" in capsys.readouterr().err
    assert not out.exists()


def test_two_submissions_with_one_file_name_are_keyed_by_their_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "grade", lambda p, timeout: {"02.1": {"passed": False, "hint": str(p)}})
    for student in ("ada", "bob"):
        (tmp_path / student).mkdir()
        submission(tmp_path / student, [])
    paths = [tmp_path / s / "02_bottleneck_1x1.ipynb" for s in ("ada", "bob")]
    assert list(grading.grade_all(paths)) == [str(p) for p in paths]


@pytest.mark.slow
def test_the_unanswered_student_copy_of_a_real_notebook_fails_every_check_and_grading_completes(tmp_path):
    """The one real notebook the tests execute (07, the shortest with checks)."""
    path = next(p for p in CHECKED if p.name.startswith("07_"))
    student = tmp_path / path.name
    nbformat.write(classroom.student_copy(nbformat.read(path, as_version=4)), student)
    grades = grading.grade_all([student])[path.name]
    assert list(grades) == [e.id for e in exercises.exercises_of("07")]
    for ex_id, g in grades.items():
        assert not g["passed"] and g["hint"].startswith("not answered yet: store your answer in"), (ex_id, g)


def test_the_expected_values_written_into_checks_of_01_and_07_are_the_librarys():
    from course import counting, models
    from course.exercises import nb01, nb07
    from course.models.stn import rotation_theta

    for shape, table in (((32, 32, 1), nb01.PARAMS_32), ((16, 16, 1), nb01.PARAMS_16), (None, nb01.PARAMS_DEFAULT)):
        shape = {"input_shape": shape} if shape else {}
        assert {n: counting.param_count(models.build(n, abstract=True, **shape)) for n in table} == table
    r = evaluate("01.4", params_32={**nb01.PARAMS_32, "mlp": nb01.PARAMS_16["mlp"]})
    assert "`params_32['mlp']` is not right: that is its count on another input size" in r.hint
    assert {s: counting.count(models.build("small_cnn", input_shape=(s, s, 1), abstract=True), (s, s, 1)).macs
            for s in nb07.SMALL_CNN_MACS} == nb07.SMALL_CNN_MACS
    angles = np.array([-150.0, 0.0, 45.0, 120.0])
    np.testing.assert_allclose(nb01.rotation(angles), np.asarray(rotation_theta(angles)), atol=1e-6)


@pytest.mark.parametrize("answers, hint", [
    ({"rf_conv2": 8, "rf_conv3": 14}, "the stride doubles at each pooling"),
    ({"rf_conv2": 8, "rf_conv3": None}, "not answered yet"),
], ids=["derivation", "unanswered"])
def test_a_derivation_gets_the_hint_of_its_mistake(answers, hint):
    assert exercises.evaluate("01.2", {"rf_conv2": 8, "rf_conv3": 18}).passed
    assert hint in exercises.evaluate("01.2", answers).hint


def test_a_function_the_student_writes_gets_the_hint_of_its_mistake():
    def right(theta):
        theta = np.asarray(theta)
        return np.degrees(np.arctan2(theta[:, 1, 0], theta[:, 0, 0]))

    assert evaluate("01.3", predicted_angle=right).passed
    assert "look like radians" in evaluate("01.3", predicted_angle=lambda t: np.radians(right(t))).hint
    assert "wrong sign" in evaluate("01.3", predicted_angle=lambda t: -right(t)).hint
    atan = lambda t: np.degrees(np.arctan(np.asarray(t)[:, 1, 0] / np.asarray(t)[:, 0, 0]))  # noqa: E731
    assert "loses the quadrant" in evaluate("01.3", predicted_angle=atan).hint
    assert "shape (7,)" in evaluate("01.3", predicted_angle=lambda t: right(t)[:3]).hint


def test_a_curve_gets_the_hint_of_its_mistake():
    assert exercises.curve_hint("acc", [0.5, 0.6], 2) is None
    assert "has 1 points: it should have one per setting, 2" in exercises.curve_hint("acc", [0.5], 2)
    assert "not percentages" in exercises.curve_hint("acc", [50.0, 60.0], 2)
    assert "should be a list of 2 numbers" in exercises.curve_hint("acc", None, 2)
