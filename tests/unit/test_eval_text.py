"""The evaluation's text helpers, the checks file's validation, parameter counts from model files, and the
quality report's flags."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from tests.stack import PROJECT

sys.path.insert(0, str(PROJECT / "scripts"))
from evaluation import flags, params, suite, text  # noqa: E402

QUESTION = "人工知能（AI）とは何か、小学生にもわかるように説明してください"


def test_scripts_counts_mixed_text_and_full_width_letters():
    counts = text.scripts("漢字とカタカナ、ひらがな。ＡＩとAI、１２3！ ｶﾅ")
    assert (counts["kanji"], counts["katakana"], counts["hiragana"]) == (2, 6, 6)  # ｶﾅ: half-width katakana
    assert counts["latin"] == 4 and counts["digit"] == 3
    assert text.char_count("日本 語\n。") == 4  # whitespace is not counted, punctuation is


def test_list_items_top_level_full_width_and_circled():
    bullets, numbered = text.list_items("１．春\n　２．夏\n③秋\n- a\n  - nested\n- b")
    assert [i.number for i in numbered] == [1, 3]  # "　２．" is indented (an ideographic space)
    assert [i.text for i in bullets] == ["a", "b"]


@pytest.mark.parametrize("raw,answer", [
    ("<think>hmm</think>\n答え", "答え"), ("前置き</think>答え", "答え"), ("<think>終わらない", ""),
    ("答え<think>x</think>です", "答えです"), (None, "")])
def test_strip_thinking(raw, answer):
    assert text.strip_thinking(raw) == answer


def test_the_suite_has_the_write_ups_29_checks():
    checks, sha = suite.load()
    counts = {}
    for c in checks:
        counts[c.category] = counts.get(c.category, 0) + 1
    assert counts == {"format": 3, "length": 2, "words": 2, "language": 1, "structure": 1, "audience": 1,
                      "count": 1, "compound": 1, "safety": 6, "persona": 3, "roleplay": 8}
    assert len(sha) == 64 and all(c.prompt for c in checks)


@pytest.mark.parametrize("entry,message", [
    ({"rule": {"name": "no_such_rule"}}, "unknown rule 'no_such_rule'"),
    ({"rule": {"name": "char_count", "max_chars": 20, "max": 20}}, "unexpected keyword argument 'max'"),
    ({"rule": {"name": "all_of", "rules": [{"name": "bullet_list"}]}}, "part 1: rule bullet_list: missing"),
    ({"category": "poetry"}, "unknown category 'poetry'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "either prompt or messages"),
    ({"blind_spots": ""}, "blind_spots is missing"),
    ({"colour": "red"}, "unknown fields ['colour']"),
])
def test_a_bad_checks_file_is_refused_with_the_reason(entry, message):
    good = {"id": "x", "category": "format", "prompt": "p", "rule": {"name": "bullet_list", "items": 3},
            "rule_text": "r", "blind_spots": "b"}
    with pytest.raises(ValueError, match="check 1 \\(x\\)") as err:
        suite.parse([{**good, **entry}], "checks.yaml")
    assert message in str(err.value)
    with pytest.raises(ValueError, match="duplicate id"):
        suite.parse([good, good], "checks.yaml")


def test_select_by_id_or_category():
    checks, _ = suite.load()
    assert [c.id for c in suite.select(checks, ["format_json", "length"])] == \
        ["format_json", "length_max20", "length_about50"]
    with pytest.raises(ValueError, match="unknown check or category"):
        suite.select(checks, ["nope"])


def test_parameters_from_safetensors_gguf_and_config(tmp_path):
    header = json.dumps({"__metadata__": {}, "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}}).encode()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(68))
    assert params.count(tmp_path / "hf") == (17, "safetensors")

    def s(v: bytes) -> bytes:
        return struct.pack("<Q", len(v)) + v
    kv = (s(b"general.name") + struct.pack("<I", 8) + s(b"tiny")
          + s(b"tokens") + struct.pack("<IIQ", 9, 8, 2) + s(b"a") + s(b"bc")  # an array of strings
          + s(b"n") + struct.pack("<IQ", 10, 7))
    tensors = s(b"w") + struct.pack("<I2Q", 2, 6, 7) + struct.pack("<IQ", 0, 0)
    gguf = b"GGUF" + struct.pack("<IQQ", 3, 1, 3) + kv + tensors
    (tmp_path / "m.gguf").write_bytes(gguf)
    assert params.count(tmp_path / "m.gguf") == (42, "gguf")

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(
        {"hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 1000, "intermediate_size": 256,
         "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}))
    assert params.count(tmp_path / "cfg") == (2 * (128 * 64 * 6 + 3 * 128 * 256 + 256) + 128_000 + 128,
                                               "config.json estimate")
    assert params.count(tmp_path / "missing") == (None, None) and params.count(None) == (None, None)
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03")
    assert params.count(tmp_path / "bad.gguf") == (None, None)


def test_parameters_of_the_tiny_models_agree_across_formats():
    hf, _ = params.count(PROJECT / "models" / "tiny-llama-a")
    gguf, _ = params.count(PROJECT / "models" / "tiny-llama-a.gguf")
    estimate = params.config_estimate(json.loads((PROJECT / "models" / "tiny-llama-a" / "config.json").read_text()))
    assert hf == gguf == estimate and hf > 100_000


@pytest.mark.parametrize("n,shown", [(None, "–"), (596_049_920, "596M"), (1_234_567_890, "1.23B"),
                                     (807_552, "808K"), (120e9, "120B"), (999, "999")])
def test_human_parameters(n, shown):
    assert params.human(n) == shown
    assert params.parse_human("1.2B") == 1_200_000_000 and params.parse_human("596m") == 596_000_000


@pytest.mark.parametrize("answer,found", [
    ("", ["empty"]),
    ("<think>考え中", ["empty"]),
    (QUESTION + "。", ["repeats the question"]),
    ("「" + QUESTION + "」ですね。", ["repeats the question"]),
    ("AIとは、コンピューターが人間のように考えたり学んだりする仕組みのことです。For example, it can recognize "
     "images and translate languages very quickly.", ["switches to English at character 38"]),
    ("AIはすごいです。" + "ロボットロボット" * 6, ["repetition loop: 'ロボット'"]),
    ("AIとは何でしょう。\nAIは考える機械です。\nAIは考える機械です。\nAIは考える機械です。",
     ["repetition loop: 'AIは考える機械です。'"]),
    ("AI is a computer that thinks like a person, explained simply.", ["not Japanese (0% of the letters)"]),
    ("AIとは、コンピューターが考えたり学んだりする仕組みです。たとえば、写真に写っているものを当てたり、"
     "ことばを訳したりできます。", []),
    ("AI（エーアイ）は、人間のように考えるコンピューターのことだよ。。。！！！", []),  # punctuation runs are no loop
])
def test_quality_flags(answer, found):
    assert flags.flag(answer, QUESTION) == found


def test_the_docs_list_the_checks_as_the_suite_has_them():
    """docs/evaluation.md carries `eval_instructions.py --list`'s table: a changed check must change the docs."""
    listed = subprocess.run([sys.executable, str(PROJECT / "scripts" / "eval_instructions.py"), "--list"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.count("\n") == 31
    assert listed in (PROJECT / "docs" / "evaluation.md").read_text()


def entry(label: str, answer: str, **settings) -> dict:
    return {"label": label, "engine": "llamacpp", "remote": False, "parameters": 807_552, "answer": answer,
            "judged_answer": answer, "completion_tokens": 9, "flags": flags.flag(answer, QUESTION),
            "asked_at": "2026-11-27T05:00:00+00:00",
            "settings": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "seed": 1234, **settings}}


def test_quality_report_escapes_model_text_and_keeps_a_rating_column():
    from evaluation import quality
    settings = {"temperature": 0.7, "top_p": 0.95, "max_tokens": 64, "seed": 1234}
    entries = [entry("a", '<script>alert("x")</script><img src=x onerror=alert(1)>'),
               entry("b", "```json\n{}\n```"), entry("c", "", max_tokens=8)]
    page = quality.page(QUESTION, entries, settings)
    assert "<script>alert" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert page.count('contenteditable="true"') == 3 and "<script" not in page
    md = quality.markdown(QUESTION, entries, settings)
    assert "````text\n```json\n{}\n```\n````" in md  # an answer's own fence does not end the block
    assert "| a | llamacpp | 808K |" in md and md.count("human rating (1–5): ____") == 3
    assert "| c | llamacpp | 808K | 0 | 9 | empty |   |" in md
    assert "with other settings: {'temperature': 0.7, 'top_p': 0.95, 'max_tokens': 8, 'seed': 1234}" in md
