"""Each answer kind is scored as the field scores it: a table of tricky cases per scorer, pinned."""
from __future__ import annotations

import pytest

from tflow.scoring import choice, code, maths, number, score, thinking

LONG_THINKING = "<think>" + "Option A looks right at first, but B... no. Reconsider (A) and (B). " * 40 + "</think>"


@pytest.mark.parametrize("completion, reference, right", [
    ("$1,000.", "1000", True),
    ("The total is **$1,000.00**.", "#### 1000", True),
    ("She buys 3 packs of 12, so 36 eggs, then uses 4. #### 32", "32", True),
    ("First 5 apples, then 7 more: 12 apples in all, costing 24 dollars.", "24", True),  # only the final number
    ("First 5 apples, then 7 more: 12 apples in all, costing 24 dollars.", "12", False),
    ("The answer is 7, since 3 + 4 = 7.", "7", True),  # the stated answer, not the last number
    ("\\boxed{1,234} (checked: 1234 = 1234)", "1234", True),
    ("<think>maybe 5, or 6</think>So the answer is 6.", "6", True),
    ("<think>the answer is 6</think>", "6", False),  # thinking alone answers nothing
    ("I get -3.", "-3", True),
    ("0.50", "0.5", True),
    ("no idea", "4", False),
])
def test_gsm8k_final_number(completion, reference, right):
    assert number.score(completion, reference) is right


@pytest.mark.parametrize("completion, reference, right", [
    ("so the answer is \\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{\\dfrac12}", "0.5", True),
    ("\\boxed{\\frac{1}{2}}", "$\\dfrac{1}{2}$", True),
    ("<think>\\boxed{3}</think> final: \\boxed{4}", "4", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{0.51}", "\\frac{1}{2}", False),
])
def test_math_equivalent_forms_through_math_verify(completion, reference, right):
    assert maths.score(completion, reference) is right


@pytest.mark.parametrize("completion, letter", [
    (LONG_THINKING + "\nThe answer is (C).", "C"),  # a letter stated after a long thinking block
    ("B) Paris", "B"),
    ("C", "C"),
    ("\\boxed{D}", "D"),
    ("Answer: A", "A"),
    ("I think (B) is wrong and (D) is right", "D"),
    ("The capital is Paris.", None),
])
def test_mmlu_letter_from_the_answer_text(completion, letter):
    assert choice.extract(completion) == letter


def test_mmlu_reference_is_a_letter_or_the_hubs_index():
    assert choice.score("The answer is B", 1) and choice.score("The answer is B", "B")
    assert not choice.score("The answer is B", 2)


def test_thinking_is_split_off_closed_unclosed_or_opened_by_the_template():
    assert thinking.split_thinking("<think>a</think>b") == ("a", "b")
    assert thinking.split_thinking("<think>ran out of budget") == ("ran out of budget", "")
    assert thinking.split_thinking("the template opened it</think>answer") == ("the template opened it", "answer")
    assert thinking.strip_thinking("    indented body") == "    indented body"  # code keeps its indentation


PROMPT = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
TESTS = code.CodeTests(TEST, PROMPT, "add")


@pytest.mark.parametrize("completion, right", [
    ("    return a + b\n", True),  # the body, as a completion model continues the stub
    ("```python\ndef add(a, b):\n    return a + b\n```", True),  # redefines the entry point (chat models do)
    ("Sure:\n```python\nimport math\n\ndef add(a: int, b: int) -> int:\n    return int(math.fsum([a, b]))\n```", True),
    ("return a + b", True),  # an unindented body goes under the stub
    ("```python\ndef add(a, b):\n    return a - b\n```", False),
    ("<think>```python\ndef add(a, b):\n    return a + b\n```</think>no code", False),  # code only in thinking
])
def test_code_is_run_against_the_tests(completion, right):
    assert code.score([completion], [TESTS]) == [right]


def test_mbpp_style_tests_run_after_the_code_with_their_imports():
    tests = code.CodeTests("assert gcd_of(12, 18) == 6\n", imports=("import math",))
    assert code.score(["```python\ndef gcd_of(a, b):\n    return math.gcd(a, b)\n```"], [tests]) == [True]


def test_score_dispatches_the_text_kinds_and_refuses_unknown_ones():
    assert score("number", "#### 3", "3") and score("choice", "(A)", "A") and score("math", "\\boxed{2}", "2")
    with pytest.raises(ValueError, match="unknown answer kind"):
        score("essay", "x", "y")


def test_procedural_answers_are_read_as_stated_boxed_or_as_a_final_number():
    from tflow.scoring import procedural

    assert procedural.extract("Yes.") == "Yes" and procedural.extract("**No**") == "No"
    assert procedural.extract("The letter appears 7 times.", numeric=True) == "7"
    assert procedural.extract("First 3, then \\boxed{12}.", numeric=True) == "12"
    assert procedural.extract("The total is 1,204 legs.", numeric=True) == "1204"
    assert procedural.extract("It is " + "9" * 40 + " bits.", numeric=True) == "9" * 40  # beyond Decimal's precision
