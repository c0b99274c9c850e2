"""What the Transformers engine hands out as text: the final prefix of a Dream generation, the cut at an end token or
stop string, the hold-back of a tail that may become a stop string or a half character."""

from engines.transformers_server.dream import final_prefix
from engines.transformers_server.generation import Cancelled, Finished, Job
from engines.transformers_server.protocol import Sampling
from engines.transformers_server.text_stream import TextStream

MASK, EOS = 99, 2
LETTERS = {i: chr(ord("a") + i - 10) for i in range(10, 36)}


def decode(ids):
    return "".join(LETTERS.get(i, "\ufffd" if i == 50 else "") for i in ids)


def test_final_prefix_stops_at_the_first_mask():
    assert final_prefix([10, 11, MASK, 12, MASK], MASK) == [10, 11]
    assert final_prefix([MASK, 10, 11], MASK) == []
    assert final_prefix([10, 11, 12], MASK) == [10, 11, 12]


def test_a_diffusion_run_hands_out_each_newly_final_prefix_once():
    """Tokens unmask out of order; only what joins the contiguous prefix is handed out, in order."""
    stream, out = TextStream(decode, [EOS]), []
    steps = [[MASK, MASK, 12, MASK], [10, MASK, 12, MASK], [10, 11, 12, MASK], [10, 11, 12, 13]]
    for x in steps:
        out.append(stream.update(final_prefix(x, MASK)))
    assert out == ["", "a", "bc", "d"]
    assert stream.finish("length") == "" and stream.finish_reason == "length"


def test_end_token_cuts_and_finishes():
    stream = TextStream(decode, [EOS])
    assert stream.update([10, 11, EOS, 12]) == "ab"
    assert (stream.finish_reason, stream.completion_tokens) == ("stop", 3)
    assert stream.update([10, 11, EOS, 12, 13]) == ""


def test_stop_string_is_cut_and_its_beginning_held_back():
    stream = TextStream(decode, [EOS], stop=("cd",))
    assert stream.update([10, 11, 12]) == "ab"  # "c" may begin "cd"
    assert stream.update([10, 11, 12, 13, 14]) == ""  # "cd" reached: the text ends before it
    assert (stream.text, stream.finish_reason) == ("ab", "stop")


def test_held_back_tail_is_released_at_the_end():
    stream = TextStream(decode, [EOS], stop=("cd",))
    assert stream.update([10, 12]) == "a"
    assert stream.finish("length") == "c"
    assert stream.text == "ac"


def test_half_character_is_held_back_until_complete():
    stream = TextStream(decode, [EOS])
    assert stream.update([10, 50]) == "a"


def test_job_offer_ends_the_generation_when_finished_or_cancelled():
    pieces = []
    job = Job([1], Sampling(max_tokens=8), TextStream(decode, [EOS]), pieces.append)
    job.offer([10])
    try:
        job.offer([10, EOS])
    except Finished:
        pass
    else:
        raise AssertionError("an end token must end the generation")
    assert pieces == ["a"]
    job = Job([1], Sampling(max_tokens=8), TextStream(decode, [EOS]), pieces.append)
    job.cancel.set()
    try:
        job.offer([11])
    except Cancelled:
        pass
    else:
        raise AssertionError("a cancelled job must stop at its next token")
