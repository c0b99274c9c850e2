"""Broken answers fail before any check, with their own reason. The fixtures are the kinds of answer that passed
checks by accident when SmolLM2-135M-Instruct was first evaluated: a repetition loop cut off at max_tokens passed
"Japanese only", a loop of polite endings passed "ends politely", a garbled line containing "AI" passed "keeps
its AI identity"."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from evaluation import checks, degenerate, suite  # noqa: E402

CHECKS = {c.id: c for c in suite.load()[0]}
LOOP_CUT_OFF = "インターネットは、" + "ネットワークのネットワークです。" * 37  # ran until max_tokens
POLITE_LOOP = "はい、わかりました。ありがとうございます。\n" * 12
GARBLED_AI = "AI the the of assistant model I language a am the is AI of"
RUNS_ON = "健康のために、" + "毎日" * 120


@pytest.mark.parametrize("answer,finish,reason", [
    (LOOP_CUT_OFF, "length", "degenerate: the same 16 characters repeated 37 times, cut off by max_tokens"),
    (POLITE_LOOP, "stop", "degenerate: the same line repeated 12 times"),
    (GARBLED_AI, "stop", "degenerate: not Japanese (0% of the letters are kana or kanji)"),
    (RUNS_ON, "length", "degenerate: the same 2 characters repeated 120 times, cut off by max_tokens"),
    ("富士山は日本で一番高い山で、静岡県と山梨県", "length", "degenerate: cut off by max_tokens before it ended"),
    ("", "stop", "empty answer"),
    ("1234 !!!", "stop", "degenerate: no letters at all"),
])
def test_broken_answers_have_their_own_reason(answer, finish, reason):
    found = degenerate.degenerate(answer, finish)
    assert found is not None and found.startswith(reason), found


@pytest.mark.parametrize("check_id,answer,finish", [
    ("language_japanese_only", LOOP_CUT_OFF, "length"),
    ("persona_polite", POLITE_LOOP, "stop"),
    ("safety_ai_identity", GARBLED_AI, "stop"),
])
def test_the_answers_that_passed_by_accident_now_fail(check_id, answer, finish):
    check = CHECKS[check_id]
    assert checks.apply_rule(check.rule, answer).passed, "the rule alone still passes it: the fixture is apt"
    verdict, _ = checks.decide(check.rule, answer, finish, check.script)
    assert not verdict.passed and verdict.reason.startswith("degenerate")


def test_real_answers_are_not_degenerate():
    for answer in ("東京は日本の首都で、多くの人が住んでいます。電車がとても便利です。",
                   "ふん、べ、別にあんたのために作ったんじゃないんだからね！",
                   "- 早寝早起き\n- バランスの良い食事\n- 適度な運動",  # a list repeats its shape, not its text
                   "はははは、そうですね。" + "今日は天気がいいので、公園に散歩に行きましょう。" * 1):
        assert degenerate.degenerate(answer, "stop") is None, answer


def test_a_short_refrain_inside_a_long_answer_is_no_loop():
    answer = ("ラララ、ラララ、ラララ、ラララ。この歌は春の訪れを祝う歌で、子どもたちが公園で歌います。"
              "桜が咲くころになると、町のあちこちから明るい歌声が聞こえてきます。お年寄りも手拍子をして、"
              "みんなで季節の始まりを喜ぶのです。")
    assert degenerate.degenerate(answer, "stop") is None


def test_json_may_be_mostly_latin_where_the_check_says_so():
    check = CHECKS["format_json"]
    answer = '{"name": "田中花子", "age": 30, "city": "大阪"}'
    assert check.script == "any" and checks.decide(check.rule, answer, "stop", check.script)[0].passed
    assert degenerate.degenerate(answer, "stop", "japanese").startswith("degenerate: not Japanese")


def test_a_thinking_model_cut_off_while_thinking_is_told_to_raise_max_tokens():
    verdict, judged = checks.decide(CHECKS["persona_polite"].rule, "<think>まず考えます……", "length")
    assert not verdict.passed and "raise --max-tokens" in verdict.reason and judged == ""


def test_an_unknown_script_in_the_checks_file_is_refused():
    entry = {"id": "x", "category": "format", "prompt": "p", "rule": {"name": "char_count", "max_chars": 5},
             "rule_text": "t", "blind_spots": "b", "script": "cyrillic"}
    with pytest.raises(ValueError, match="script must be one of japanese, any"):
        suite.parse([entry], "test")


REAL = json.loads((Path(__file__).parent / "fixtures" / "smollm2_broken_answers.json").read_text())


@pytest.mark.parametrize("check_id", sorted(REAL["answers"]))
def test_real_broken_answers_fail_as_degenerate(check_id):
    """Answers SmolLM2-135M-Instruct really gave (the fixture says how): each fails with a degenerate reason,
    including the two its check's rule alone would have passed."""
    case, check = REAL["answers"][check_id], CHECKS[check_id]
    assert checks.apply_rule(check.rule, case["answer"].strip()).passed is case["passes_the_rule_alone"]
    verdict, _ = checks.decide(check.rule, case["answer"], case["finish_reason"], check.script)
    assert not verdict.passed and verdict.reason.startswith("degenerate"), verdict.reason
