"""Behaviour of the generative graders on realistic reasoning-model outputs, and of the code sandbox on
hostile programs. The sandboxed tests use short limits so the whole file stays well under 30 s."""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from forgetting.evaluate.graders import (
    CodeGrader,
    MathGrader,
    MultipleChoiceGrader,
    self_correction_stats,
    shuffle_options,
)

# ------------------------------------------------------------------------------------------------ math

THINK_WITH_FALSE_START = (
    "Okay, so I need to find the probability that a fair coin lands heads. There are two outcomes, and one "
    "of them is heads, so that's 1 out of 2. Wait, is the coin fair? Yes, the problem says it is. So the "
    "probability is 1/2.\n</think>\n\n"
    "There are two equally likely outcomes and one is favourable, so the probability is "
    "$\\boxed{{{answer}}}$."
)


@pytest.mark.parametrize("answer", ["\\frac{1}{2}", "\\dfrac12", "1/2", "0.5", "\\tfrac{1}{2}"])
@pytest.mark.parametrize("gold", ["0.5", "\\frac{1}{2}", "$\\frac12$"])
def test_math_accepts_equivalent_forms(answer, gold):
    result = MathGrader().score(THINK_WITH_FALSE_START.format(answer=answer), {"answer": gold})
    assert result == {"extracted": answer, "correct": True}


def test_math_rejects_a_wrong_answer():
    response = "2 + 2... that's 3? Wait, let me just commit.\n</think>\n\nThe sum is $\\boxed{3}$."
    assert MathGrader().score(response, {"answer": "4"}) == {"extracted": "3", "correct": False}


def test_math_final_answer_overrides_a_wrong_box_in_the_thinking():
    response = (
        "Let me compute 17 * 3. 17 * 3 = 41, so the answer is \\boxed{41}. Wait, 17 * 3 is 51, not 41. "
        "Let me double-check: 10 * 3 = 30 and 7 * 3 = 21, 30 + 21 = 51. Yes.\n</think>\n\n"
        "$17 \\times 3 = \\boxed{51}$"
    )
    assert MathGrader().score(response, {"answer": "51"}) == {"extracted": "51", "correct": True}


def test_math_reads_only_the_text_after_think():
    # The thinking boxes the gold answer, but what the model finally states is wrong: the box inside the
    # think block must not be credited.
    response = (
        "So x = \\boxed{7}. Wait, I dropped a sign; redo: 2x - 3 = 9 gives x = 6. Hmm, or was it 7?\n"
        "</think>\n\nThe answer is: 6"
    )
    assert MathGrader().score(response, {"answer": "7"}) == {"extracted": "6", "correct": False}
    assert MathGrader().score(response, {"answer": "6"})["correct"]


def test_math_handles_nested_braces_and_truncated_boxes():
    grader = MathGrader()
    nested = "</think>\n\nSo $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$."
    assert grader.score(nested, {"answer": "\\frac{\\sqrt3}{2}"}) == {
        "extracted": "\\frac{\\sqrt{3}}{2}", "correct": True}
    # Cut off by the generation limit mid-box: the earlier complete box is the last answer given.
    truncated = "First guess \\boxed{12}. Wait, recompute: the area is \\boxed{\\frac{25"
    assert grader.score(truncated, {"answer": "12"}) == {"extracted": "12", "correct": True}


def test_math_metamath_style_answer_without_box():
    response = "Janet has 16 eggs, eats 3 and bakes with 4, so she sells 9 for $2 each: 18.\nThe answer is: 18"
    assert MathGrader().score(response, {"answer": "18"}) == {"extracted": "18", "correct": True}


def test_math_percent_and_degree_suffixes_do_not_matter():
    grader = MathGrader()
    assert grader.score("\\boxed{10\\%}", {"answer": "10"})["correct"]
    assert grader.score("\\boxed{30}", {"answer": "30^\\circ"})["correct"]
    assert not grader.score("\\boxed{30}", {"answer": "31^\\circ"})["correct"]


def test_math_without_an_answer_is_wrong():
    response = "Let me think about this. Wait, the integral diverges? Let me reconsider the bounds"
    assert MathGrader().score(response, {"answer": "2"}) == {"extracted": None, "correct": False}


# ------------------------------------------------------------------------------------- multiple choice

def test_mc_takes_the_last_stated_letter():
    response = (
        "The patient has fever, neck stiffness and a petechial rash.\n</think>\n\n"
        "The answer is (C) at first glance, since the rash suggests a viral cause. Wait, a petechial rash with "
        "meningism in a college student is meningococcal until proven otherwise, so the answer is D"
    )
    assert MultipleChoiceGrader("ABCDE").score(response, {"answer": "D"}) == {"extracted": "D", "correct": True}
    assert MultipleChoiceGrader("ABCDE").score(response, {"answer": "C"}) == {"extracted": "D", "correct": False}


@pytest.mark.parametrize(
    "final",
    [
        "The answer is (C).",
        "Answer: C",
        "**Final answer:** **C**",
        "The correct choice is therefore **(C) Ceftriaxone**",
        "$\\boxed{C}$",
        "\\boxed{\\text{C}}",
        "Putting it together, I pick (C)",
        "answer is C.",
    ],
)
def test_mc_reads_the_common_answer_formats(final):
    response = f"Option A fits the age but not the labs. Wait, B is ruled out by the CT.\n</think>\n\n{final}"
    assert MultipleChoiceGrader().score(response, {"answer": "C"}) == {"extracted": "C", "correct": True}


@pytest.mark.parametrize(
    "final",
    [
        "The answer is Doxycycline, given the tick exposure.",  # D starts a word, not a choice
        "I would say a beta-blocker is the answer.",  # lowercase article is not option A
        "Answer Choices: (A) 1 (B) 2 — I cannot decide between them.",
    ],
)
def test_mc_does_not_read_words_as_letters(final):
    assert MultipleChoiceGrader().score(final, {"answer": "D"})["extracted"] is None


def test_mc_ignores_a_letter_stated_only_inside_the_thinking():
    response = "Probably the answer is B. Wait, no.\n</think>\n\nI cannot determine this from the vignette."
    assert MultipleChoiceGrader().score(response, {"answer": "B"}) == {"extracted": None, "correct": False}


def test_mc_option_set_limits_the_letters():
    response = "</think>\n\nThe answer is E"
    assert MultipleChoiceGrader("ABCDE").score(response, {"answer": "E"})["correct"]  # MedBullets op5
    assert MultipleChoiceGrader("ABCD").score(response, {"answer": "D"})["extracted"] is None  # op4 / GPQA
    with pytest.raises(ValueError):
        MultipleChoiceGrader("ABCD").score(response, {"answer": "E"})


def test_shuffle_options_is_deterministic_and_varies_per_problem():
    choices = ["the correct one", "wrong 1", "wrong 2", "wrong 3"]
    prompt, gold = shuffle_options("Which is it?", choices, 0, seed=0, problem_id="rec42")
    assert (prompt, gold) == shuffle_options("Which is it?", choices, 0, seed=0, problem_id="rec42")
    assert f"({gold}) the correct one" in prompt
    assert prompt.startswith("Which is it?\n\n(A) ")
    assert sorted(line[4:] for line in prompt.splitlines()[2:]) == sorted(choices)
    golds = {shuffle_options("Which is it?", choices, 0, seed=0, problem_id=i)[1] for i in range(40)}
    assert golds == set("ABCD")  # GPQA's "correct answer first" must not leak into one letter
    by_question = {shuffle_options(f"Question {i}?", choices, 0, seed=0)[1] for i in range(40)}
    assert by_question == set("ABCD")
    by_seed = {shuffle_options("Which is it?", choices, 0, seed=s, problem_id="rec42")[1] for s in range(40)}
    assert len(by_seed) > 1


# ------------------------------------------------------------------------------------------------ code

SUM_TESTS = [{"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "2\n-5 5\n", "output": "0"}]
SUM_SOLUTION = "n = int(input())\nprint(sum(map(int, input().split())))\n"


def _response(code: str) -> str:
    return (
        "We need the sum of n integers. I could loop manually. Wait, `sum(map(int, ...))` is simpler and "
        "handles negatives.\n</think>\n\nRead n, then the numbers, and print their sum:\n\n"
        f"```python\n{code}```\n\nFor the sample input\n```\n3\n1 2 3\n```\nthis prints 6."
    )


@pytest.fixture(scope="module")
def grader():
    return CodeGrader(timeout_s=1.0, memory_mb=128)


def _still_works(grader: CodeGrader) -> None:
    result = grader.score(_response(SUM_SOLUTION), {"tests": SUM_TESTS})
    assert (result["status"], result["correct"], result["passed"]) == ("passed", True, 2)


def test_code_correct_program_passes(grader):
    result = grader.score(_response(SUM_SOLUTION), {"tests": SUM_TESTS})
    assert result["extracted"] == SUM_SOLUTION  # the ```python block, not the later sample-input block
    assert result | {"detail": ""} == {"extracted": SUM_SOLUTION, "correct": True, "status": "passed",
                                       "passed": 2, "total": 2, "detail": "", "netns": result["netns"]}


def test_code_wrong_output_and_missing_code(grader):
    wrong = grader.score(_response("input()\nprint(sum(map(int, input().split())) + 1)\n"), {"tests": SUM_TESTS})
    assert (wrong["status"], wrong["correct"], wrong["passed"]) == ("wrong", False, 0)
    assert "expected '6\\n', got '7\\n'" in wrong["detail"]
    no_code = grader.score("Wait, I am out of time.\n</think>\n\nJust add the numbers.", {"tests": SUM_TESTS})
    assert (no_code["status"], no_code["correct"], no_code["extracted"]) == ("no_code", False, None)


def test_code_runs_in_a_separate_process(grader):
    result = grader.score(_response("import os\nprint(os.getpid())\n"),
                          {"tests": [{"input": "", "output": str(os.getpid())}]})
    assert result["status"] == "wrong"  # it printed a pid, and not ours


@pytest.mark.timeout(20)
def test_code_infinite_loop_is_stopped(grader):
    start = time.monotonic()
    result = grader.score(_response("while True:\n    pass\n"), {"tests": SUM_TESTS})
    assert time.monotonic() - start < 5
    assert (result["status"], result["correct"]) == ("timeout", False)
    _still_works(grader)


@pytest.mark.timeout(20)
def test_code_timeout_kills_the_whole_process_group(grader, tmp_path):
    # ctypes forks past the Python-level block; the grandchild must die with its parent on timeout.
    program = (
        "import ctypes, os, sys\n"
        "base = sys.stdin.readline().strip()\n"
        "role = 'child' if ctypes.CDLL(None).fork() == 0 else 'parent'\n"
        "with open(base + role, 'w') as f:\n"
        "    f.write(str(os.getpid()))\n"
        "while True:\n"
        "    pass\n"
    )
    result = grader.score(_response(program), {"tests": [{"input": f"{tmp_path}/", "output": ""}]})
    assert result["status"] == "timeout"
    pids = [int((tmp_path / role).read_text()) for role in ("parent", "child")]

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 3
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, pids))
    _still_works(grader)


@pytest.mark.timeout(20)
def test_code_unbounded_allocation_is_stopped_by_the_memory_limit():
    grader = CodeGrader(timeout_s=5.0, memory_mb=128)
    start = time.monotonic()
    result = grader.score(_response("x = []\nwhile True:\n    x.append(' ' * 10**7)\n"), {"tests": SUM_TESTS})
    assert (result["status"], result["correct"]) == ("memory", False)
    assert time.monotonic() - start < 4  # stopped by the limit, not by the wall clock
    _still_works(grader)


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    with socket.create_connection(server.getsockname(), timeout=2):  # control: reachable from here
        server.accept()[0].close()
    server.setblocking(False)
    yield server
    server.close()


def _was_contacted(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


@pytest.mark.parametrize(
    "program",
    [
        "import socket\nport = int(input())\nsocket.create_connection(('127.0.0.1', port), timeout=2)\n"
        "print('connected')\n",
        "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 0))\ns.listen()\nprint('listening')\n",
        "import importlib, socket\nimportlib.reload(socket)\nport = int(input())\n"
        "socket.socket().connect(('127.0.0.1', port))\nprint('connected')\n",
        "import _socket\nport = int(input())\n_socket.socket().connect(('127.0.0.1', port))\nprint('connected')\n",
        "import socket\nprint(socket.getaddrinfo('example.com', 80))\n",
    ],
    ids=["create_connection", "bind_server", "reload_socket", "raw_socket_module", "dns"],
)
def test_code_sockets_are_refused(grader, listener, program):
    port = listener.getsockname()[1]
    result = grader.score(_response(program), {"tests": [{"input": f"{port}\n", "output": "connected"}]})
    assert (result["status"], result["correct"]) == ("error", False)
    assert "network access is disabled in the grader sandbox" in result["detail"]
    assert not _was_contacted(listener)
    _still_works(grader)


def test_code_network_namespace_blocks_syscalls_that_bypass_python(grader, listener):
    # Raw libc socket()+connect() through ctypes skips every Python-level patch; only the kernel can stop it.
    program = (
        "import ctypes, socket, struct\n"
        "port = int(input())\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        "addr = struct.pack('=H', 2) + struct.pack('!H', port) + socket.inet_aton('127.0.0.1') + bytes(8)\n"
        "rc = libc.connect(fd, addr, 16)\n"
        "print('connected' if rc == 0 else 'refused errno %d' % ctypes.get_errno())\n"
    )
    port = listener.getsockname()[1]
    result = grader.score(_response(program), {"tests": [{"input": f"{port}\n", "output": "connected"}]})
    if result["netns"] is not True:
        pytest.skip("no permission to create a network namespace here; only the Python-level block applies")
    assert (result["status"], result["correct"]) == ("wrong", False)
    assert "refused errno" in result["detail"]
    assert not _was_contacted(listener)
    _still_works(grader)


@pytest.mark.parametrize(
    "program",
    ["import os\nos.fork()\n", "import subprocess\nsubprocess.run(['echo', 'hi'])\n",
     "import os\nos.system('echo hi')\n", "import os, signal\nos.kill(os.getppid(), signal.SIGTERM)\n"],
    ids=["fork", "subprocess", "system", "kill_parent"],
)
def test_code_process_control_is_refused(grader, program):
    result = grader.score(_response(program), {"tests": SUM_TESTS})
    assert (result["status"], result["correct"]) == ("error", False)
    assert "disabled in the grader sandbox" in result["detail"]
    _still_works(grader)


def test_code_output_is_capped(grader):
    result = grader.score(_response("while True:\n    print('x' * 10000)\n"), {"tests": SUM_TESTS})
    assert (result["status"], result["correct"]) == ("error", False)
    assert "File too large" in result["detail"]


def test_code_does_not_pass_the_environment_on(grader, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    program = "import os\nprint(os.environ.get('HF_TOKEN'))\n"
    result = grader.score(_response(program), {"tests": [{"input": "", "output": "None"}]})
    assert result["status"] == "passed"


def test_code_refuses_to_misgrade_call_based_tests(grader):
    with pytest.raises(ValueError, match="stdin"):
        grader.score(_response(SUM_SOLUTION), {"tests": [{"input": "[1]", "output": "1", "testtype": "functional"}]})
    with pytest.raises(ValueError):
        grader.score(_response(SUM_SOLUTION), {"tests": []})


# ------------------------------------------------------------------------------------- self-correction

RESPONSES = [
    "Let me see. Wait, that's wrong. Wait — no, it was right.\n</think>\n\nThe answer is (B).",
    "Waiting times are long; wait, the question asks for the median. The answer is (A).",
    "The answer is (C).",
]


def test_self_correction_counts_whole_word_capitalised_wait():
    stats = self_correction_stats(RESPONSES)
    assert stats["wait_per_response"] == pytest.approx(2 / 3)  # 2 + 0 ("Waiting", "wait") + 0
    assert stats["length_words"] == pytest.approx(sum(len(r.split()) for r in RESPONSES) / 3)
    assert "length_tokens" not in stats and stats["n_responses"] == 3


def test_self_correction_measures_length_in_tokens_with_a_tokenizer():
    calls = []

    def tokenizer(text, add_special_tokens=True):
        calls.append(add_special_tokens)
        return SimpleNamespace(input_ids=([0] if add_special_tokens else []) + [ord(c) for c in text])

    stats = self_correction_stats(RESPONSES, tokenizer=tokenizer)
    assert stats["length_tokens"] == pytest.approx(sum(map(len, RESPONSES)) / 3)
    assert calls == [False, False, False] and "length_words" not in stats
    with pytest.raises(ValueError):
        self_correction_stats([])


def test_every_benchmark_kind_has_a_loader_an_instruction_and_a_grader():
    from forgetting.evaluate.benchmarks import BENCHMARK_KINDS

    assert set(BENCHMARK_KINDS) == {"math", "gpqa", "livecodebench", "medical_mc"}
    for kind in BENCHMARK_KINDS.values():
        assert "Q?" in kind.instruction("Q?")
    # the grader a kind names is the one its answers need: a boxed number for math, a letter for multiple choice
    assert BENCHMARK_KINDS["math"].grade(["so \\boxed{12}"], [{"answer": "12"}])[0]["correct"]
    assert BENCHMARK_KINDS["medical_mc"].grade(["The answer is C."], [{"answer": "C", "options": "ABCD"}])[0]["correct"]


def test_an_unknown_kind_is_one_line_naming_the_kinds():
    from conftest import compose

    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError, match=r"kind='poetry' is invalid: expected one of math, gpqa, livecodebench"):
        compose("eval.generative=[{name: x, kind: poetry, path: x.jsonl}]")


def test_code_ordinary_competitive_programs_still_run():
    # Deep recursion on a big thread stack and imports of modules built on sockets must survive the sandbox.
    program = (
        "import sys, threading, heapq, bisect, collections, itertools, functools, math, ssl, asyncio\n"
        "def main():\n"
        "    n = int(sys.stdin.readline())\n"
        "    depth = lambda k: 0 if k == 0 else 1 + depth(k - 1)\n"
        "    print(depth(n))\n"
        "sys.setrecursionlimit(1 << 20)\n"
        "threading.stack_size(1 << 26)\n"
        "t = threading.Thread(target=main)\n"
        "t.start()\n"
        "t.join()\n"
    )
    result = CodeGrader().score(_response(program), {"tests": [{"input": "50000\n", "output": "50000\n"}]})
    assert result["status"] == "passed", result["detail"]
