"""pytest tests/evaluate/test_graders.py

Generative graders for the reasoning evaluation of the paper's Section 3.2 (SkyThought for AIME24, MATH500,
LiveCodeBench and GPQA-Diamond; MedReason for MedQA and MedBullets). Each grader is a small class with one
method, ``score(response, problem) -> dict``, returning at least ``{"extracted": str | None, "correct": bool}``.

- ``MathGrader``: last ``\\boxed{...}`` (else last "the answer is X") compared with math-verify.
- ``MultipleChoiceGrader``: last stated option letter, one rule applied once.
- ``AnswerPatternGrader``: your own task's answer, extracted by a pattern from the response and the reference.
- ``CodeGrader``: last fenced code block run against stdin/stdout tests in a sandboxed child process.
- ``shuffle_options``: deterministic per-problem option order for GPQA.
- ``self_correction_stats``: "Wait" count and response length (the paper's Table 6).

The math, multiple-choice and code graders read only the *final-answer region* of a response
(``strip_thinking``): R1-style models reason inside ``<think>...</think>`` and often box or state a provisional
answer there before changing their mind, so the text after the last ``</think>`` is what the model actually
answered.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from math_verify import parse, verify

from forgetting.data.files import extract_answer

__all__ = [
    "AnswerPatternGrader",
    "CodeGrader",
    "grade_code",
    "grade_math",
    "grade_multiple_choice",
    "MathGrader",
    "MultipleChoiceGrader",
    "extract_code",
    "last_boxed",
    "self_correction_stats",
    "shuffle_options",
    "strip_thinking",
]


def strip_thinking(response: str) -> str:
    """The text after the last ``</think>`` if the tag is there and something non-blank follows it, else the
    whole response.

    R1-Distill's chat template ends the prompt with ``<think>\\n``, so responses carry only the closing tag.
    A response cut off mid-thought (no closing tag) or one that answers inside the block and stops is graded
    on everything it wrote rather than scored as empty.
    """
    head, sep, tail = response.rpartition("</think>")
    if sep and tail.strip():
        return tail
    return response


# ----------------------------------------------------------------------------------------------- math

def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed), or of the
    brace-less form ``\\boxed 5``. A box cut off by the generation limit is skipped in favour of the one
    before it."""
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)\b", text))):
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
            continue  # unbalanced: truncated box
        if i > match.end():  # "\boxed 5": the token up to whitespace or a closing math delimiter
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0).rstrip(".")
    return None


_ANSWER_IS = re.compile(r"the (?:final )?answer is\s*:?\s*(.+)", re.IGNORECASE)


def _answer_is(text: str) -> str | None:
    matches = _ANSWER_IS.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip()
    answer = re.sub(r"^(?:\*\*|\$|\\\(|\\\[)+|(?:\*\*|\$|\\\)|\\\]|\.)+$", "", answer).strip()
    return answer or None


_UNIT_SUFFIX = re.compile(r"(?:\\%|%|\^\s*\{?\\circ\}?|°)\s*$")


def _math_parse(expr: str, timeout: int | None) -> list:
    expr = expr.strip().strip("$").strip()
    # MATH writes "10\%" or "30^\circ" where a model may write 10 or 30; Hendrycks' normaliser, which
    # SkyThought inherits, drops these suffixes too, and math-verify would otherwise compare them as strings.
    expr = _UNIT_SUFFIX.sub("", expr).strip()
    # Wrapping in \boxed makes math-verify treat the whole string as the answer instead of hunting for one.
    return parse("\\boxed{" + expr + "}", parsing_timeout=timeout)


class MathGrader:
    """AIME / MATH500 grader: the last ``\\boxed{}`` of the final-answer region, else the last
    "the answer is X", compared with ``problem["answer"]`` by math-verify, so ``\\dfrac12``, ``1/2`` and
    ``0.5`` are the same answer and ``3`` is not ``4``.

    SkyThought checks answers by regex parsing and string normalisation, which the paper notes under-reports
    accuracy (Supp. C); math-verify's symbolic comparison also accepts equivalent forms that string matching
    misses, so scores can sit above SkyThought's on the same outputs.
    """

    def score(self, response: str, problem: dict) -> dict:
        region = strip_thinking(response)
        extracted = last_boxed(region)
        if extracted is None:
            extracted = _answer_is(region)
        if extracted is None:
            return {"extracted": None, "correct": False}
        # math-verify bounds sympy with SIGALRM, which exists only on the main thread; elsewhere the
        # caller's own worker timeout has to do.
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold = _math_parse(str(problem["answer"]), timeout)
        pred = _math_parse(extracted, timeout)
        correct = bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))
        return {"extracted": extracted, "correct": correct}


# -------------------------------------------------------------------------------------- multiple choice

class MultipleChoiceGrader:
    """GPQA-Diamond (ABCD), MedQA (ABCD or ABCDE), MedBullets op4 (ABCD) / op5 (ABCDE) grader.

    The extracted letter is the LAST option letter the final-answer region states, by one rule applied once:
    every occurrence of "answer is (C)" / "answer: C" / "**C**" / "\\boxed{C}" / a "(C)" that ends the response
    is found and the one that comes last wins; ``problem["answer"]`` is the gold letter. Letters must be
    uppercase, so the article "a" is never read as option A.

    MedReason's own scorer (``match_choice`` + ``score`` in its eval code, inherited from HuatuoGPT-o1) keeps
    both the first and the last matched letter of every response, computes accuracy once with each, and
    reports the larger of the two. Choosing between two readings after seeing the gold answers overstates
    accuracy; we do not do that, so our MedQA/MedBullets numbers can sit below ones computed with it.
    """

    def __init__(self, options: str = "ABCD"):
        if not options or not options.isalpha() or not options.isupper() or len(set(options)) != len(options):
            raise ValueError(f"options must be distinct uppercase letters, got {options!r}")
        self.options = options
        letter = f"([{options}])"
        self._patterns = [
            re.compile(
                r"(?i:answer)(?:\s+(?i:is|would be|should be|must be))?\s*:?\s*(?:\*\*)?\s*\(?" + letter + r"\b"
            ),
            re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?" + letter + r"\b"),
            re.compile(r"\*\*\s*\(?" + letter + r"(?:\)|\.|:|\*\*)"),
            re.compile(r"\(" + letter + r"\)\W*$"),
        ]

    def score(self, response: str, problem: dict) -> dict:
        gold = str(problem["answer"]).strip().strip("()").upper()
        if gold not in self.options:
            raise ValueError(f"gold answer {problem['answer']!r} is not one of {self.options!r}")
        region = strip_thinking(response)
        hits = [m for pattern in self._patterns for m in pattern.finditer(region)]
        extracted = max(hits, key=lambda m: m.start(1)).group(1) if hits else None
        return {"extracted": extracted, "correct": extracted == gold}


# --------------------------------------------------------------------------------- answer pattern (own task)

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class AnswerPatternGrader:
    """Your own task's grader (``dataset.test_path``): the answer ``pattern`` extracts from the reference response
    (``problem["response"]``) against the one it extracts from the generation, as GSM8K's strict match does with
    "#### N" (default: MetaMathQA's "The answer is: X"). Both are trimmed of spaces and a final period; numbers
    compare by value once "$" and thousands commas are dropped ("1,000" = "1000.0"), anything else as written."""

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)

    @staticmethod
    def normalise(answer: str | None) -> Any:
        if answer is None:
            return None
        text = " ".join(answer.split()).rstrip(".").strip()
        number = text.lstrip("$").replace(",", "")
        return decimal.Decimal(number) if _NUMBER.fullmatch(number) else text

    def score(self, response: str, problem: dict) -> dict:

        extracted, gold = (extract_answer(self.pattern, t) for t in (response, problem["response"]))
        correct = extracted is not None and self.normalise(extracted) == self.normalise(gold)
        return {"extracted": extracted, "gold": gold, "correct": correct}


GPQA_INSTRUCTION = (  # SkyThought's GPQA-Diamond instruction, prepended by the prompt template
    "Return your final response within \\boxed{} and only include the letter choice (A, B, C, or D) as your "
    "final response."
)


def shuffle_options(
    question: str, choices: list[str], correct_index: int, seed: int | str, problem_id: Any = None
) -> tuple[str, str]:
    """Question followed by its choices in a shuffled order, as ``(prompt_text, gold_letter)``.

    GPQA lists the correct answer first, so the order must be shuffled — and per problem: one permutation
    shared by every problem would put the gold answer under the same letter everywhere. The generator is
    ``random.Random(f"{seed}:{problem_id}")`` (``problem_id`` defaults to a hash of the question); a string
    seed, unlike ``hash()``, is the same in every process, so a rerun asks exactly the same prompts.
    """
    if not 0 <= correct_index < len(choices):
        raise IndexError(f"correct_index {correct_index} out of range for {len(choices)} choices")
    key = problem_id if problem_id is not None else hashlib.sha256(question.encode()).hexdigest()[:16]
    order = list(range(len(choices)))
    random.Random(f"{seed}:{key}").shuffle(order)
    letters = "ABCDEFGHIJ"[: len(choices)]
    lines = [f"({letters[pos]}) {str(choices[idx]).strip()}" for pos, idx in enumerate(order)]
    return question.strip() + "\n\n" + "\n".join(lines), letters[order.index(correct_index)]


# ----------------------------------------------------------------------------------------------- code

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str | None:
    """The last ```python block of the final-answer region; if there is none, the last untagged block.

    Tagged blocks win because models often follow their solution with an untagged sample-input block.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(strip_thinking(response))]
    for wanted in (("python", "py", "python3"), ("",)):
        bodies = [body for lang, body in blocks if lang in wanted]
        if bodies and bodies[-1].strip():
            return bodies[-1]
    return None


_CLONE_NEWNET = 0x40000000
_EXIT_MEMORY = 107  # the bootstrap's exit code when the program dies of MemoryError
_OUTPUT_LIMIT = 32 * 2**20

# Runs in the child as `python -I -c _BOOTSTRAP config`, BEFORE any model-written code: limits, a private
# network namespace, Python-level tripwires, then the solution as __main__. The limits are set by the child on
# itself instead of in preexec_fn because preexec_fn is unsafe when the grader runs in a thread pool, and
# nothing untrusted has run yet at this point, so the effect is the same.
_BOOTSTRAP = r"""
import errno, json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, (soft, hard) in cfg["rlimits"].items():
    res = getattr(resource, name)
    cur_hard = resource.getrlimit(res)[1]
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
        soft = min(soft, hard)
    resource.setrlimit(res, (soft, hard))
netns = False
try:
    if hasattr(os, "unshare"):
        os.unshare(cfg["clone_newnet"])
        netns = True
    else:
        import ctypes
        netns = ctypes.CDLL(None, use_errno=True).unshare(cfg["clone_newnet"]) == 0
except Exception:
    pass

def _refuse(what):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, what + " is disabled in the grader sandbox")
    return refuse

import _socket, socket
def _no_socket(*args, **kwargs):
    raise PermissionError(errno.EACCES, "network access is disabled in the grader sandbox")
# Subclasses rather than functions, so that modules subclassing socket (ssl, a reloaded socket.py) still
# import; the C-level one has no __weakref__ slot, which a reloaded socket.py adds itself.
class _NoRawSocket(_socket.socket):
    __slots__ = ()
    __init__ = _no_socket
class _NoSocket(socket.socket):
    __init__ = _no_socket
_socket.socket = _socket.SocketType = _NoRawSocket
socket.socket = socket.SocketType = _NoSocket
for mod in (socket, _socket):
    for name in ("socketpair", "fromfd", "fromshare", "create_connection", "create_server", "getaddrinfo",
                 "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn"):
        if hasattr(mod, name):
            setattr(mod, name, _refuse("network access"))
import posix, _posixsubprocess
for mod in (os, posix):
    for name in ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg",
                 "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe"):
        if hasattr(mod, name):
            setattr(mod, name, _refuse("process control"))
_posixsubprocess.fork_exec = _refuse("process creation")

os.write(cfg["report_fd"], b"1" if netns else b"0")
os.close(cfg["report_fd"])
path = cfg["solution"]
with open(path, encoding="utf-8") as f:
    code = compile(f.read(), path, "exec")
sys.argv = [path]
try:
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})
except MemoryError:
    os._exit(cfg["memory_exit"])
"""


def _tasks_of_user(uid: int) -> int:
    """Threads and processes owned by ``uid``: the quantity RLIMIT_NPROC bounds."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


def _wait_without_reaping(pid: int, deadline: float) -> bool:
    """True once ``pid`` has exited, False at the deadline. The child stays a zombie, so its pid cannot be
    reused and its process group stays valid for the ``killpg`` that follows."""
    delay = 0.002
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().splitlines()]


class CodeGrader:
    """LiveCodeBench-style grader: the last fenced code block (``extract_code``) is run against
    ``problem["tests"]``, a list of ``{"input": str, "output": str}`` stdin/stdout tests, and passes when
    every test's stdout equals the expected output line by line after stripping whitespace. The first
    failing test stops the run. Only stdin tests are supported: LiveCodeBench's "functional" (LeetCode
    call-based) tests raise ``ValueError`` rather than being mis-graded.

    Each test runs in its own child process, never in the grader's: ``sys.executable -I`` (no user site, no
    PYTHON* variables, no cwd on ``sys.path``) in a fresh temporary working directory, with a minimal
    environment (the parent's variables, e.g. API tokens, are not passed on), in a new session whose whole
    process group is SIGKILLed when the test ends or times out. What is enforced:

    - wall time: ``timeout_s`` per test, measured by the grader → status ``"timeout"``;
    - CPU time: RLIMIT_CPU at ceil(timeout_s)+1 s (SIGXCPU), a backstop → ``"timeout"``;
    - memory: RLIMIT_AS = ``memory_mb`` MiB of address space; the program's MemoryError → ``"memory"``;
    - output: RLIMIT_FSIZE = 32 MiB per written file (stdout goes to a file, so the grader never buffers an
      unbounded pipe); no core dumps (RLIMIT_CORE = 0);
    - processes: RLIMIT_NPROC = the user's current task count + 64 for non-root users (the kernel exempts
      root from it, so as root only the Python-level block below applies);
    - network, kernel level: the child moves into a new, empty network namespace (``unshare(CLONE_NEWNET)``)
      when it is allowed to (root / CAP_SYS_ADMIN on Linux) — no interface but a downed loopback, so no IP
      traffic at all, whatever the code does. Each result reports whether it was in effect (``"netns"``);
      where it is not permitted the child silently continues with the Python-level block only;
    - network and processes, Python level: ``socket.socket``, ``_socket.socket``, ``create_connection``,
      ``socketpair``, DNS lookups, ``os.fork``/``exec*``/``spawn*``/``system``/``kill``, ``subprocess``
      (``_posixsubprocess.fork_exec``) all raise ``PermissionError`` → ``"error"``. This is a tripwire for
      ordinary code, not a security boundary: ``ctypes`` gets around it.

    NOT enforced: the file system. The child runs as the grader's user and can read or write whatever that
    user can, and filesystem-path Unix sockets are reachable through ``ctypes``. Grade untrusted model code
    as an unprivileged user or inside a container.

    Statuses: ``"passed"``, ``"wrong"`` (ran, output differs), ``"timeout"``, ``"memory"``, ``"error"``
    (crash, non-zero exit, refused socket or process, output limit), ``"no_code"`` (no code block).
    """

    def __init__(self, timeout_s: float = 6.0, memory_mb: int = 512):
        if timeout_s <= 0 or memory_mb <= 0:
            raise ValueError("timeout_s and memory_mb must be positive")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)

    def score(self, response: str, problem: dict) -> dict:
        tests = problem["tests"]
        if not tests:
            raise ValueError("problem has no tests: it cannot be graded")
        for test in tests:
            if test.get("testtype", "stdin") != "stdin":
                raise ValueError(f"only stdin tests are supported, got testtype {test['testtype']!r}")
        code = extract_code(response)
        result: dict[str, Any] = {"extracted": code, "correct": False, "status": "no_code", "passed": 0,
                                  "total": len(tests), "detail": "", "netns": None}
        if code is None:
            return result
        with tempfile.TemporaryDirectory(prefix="codegrader-", ignore_cleanup_errors=True) as root:
            solution = os.path.join(root, "solution.py")
            with open(solution, "w", encoding="utf-8") as f:
                f.write(code)
            for i, test in enumerate(tests):
                status, stdout, detail, netns = self._run(solution, test["input"], root, i)
                result["netns"] = netns
                if status == "ok":
                    if _lines(stdout) == _lines(test["output"]):
                        result["passed"] += 1
                        continue
                    status, detail = "wrong", f"expected {test['output'][:200]!r}, got {stdout[:200]!r}"
                result.update(status=status, detail=f"test {i}: {detail}")
                return result
        result.update(correct=True, status="passed")
        return result

    def _rlimits(self) -> dict[str, tuple[int, int]]:
        cpu = math.ceil(self.timeout_s) + 1
        limits = {
            "RLIMIT_AS": (self.memory_mb * 2**20, self.memory_mb * 2**20),
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_FSIZE": (_OUTPUT_LIMIT, _OUTPUT_LIMIT),
            "RLIMIT_CORE": (0, 0),
        }
        if os.geteuid() != 0:
            nproc = _tasks_of_user(os.getuid()) + 64
            limits["RLIMIT_NPROC"] = (nproc, nproc)
        return limits

    def _run(self, solution: str, stdin_text: str, root: str, index: int) -> tuple[str, str, str, bool | None]:
        """Run the solution once; returns (status, stdout, detail, netns) with status "ok" for a clean exit."""
        cwd = tempfile.mkdtemp(prefix=f"cwd{index}-", dir=root)
        io = {name: os.path.join(root, f"{name}{index}.txt") for name in ("stdin", "stdout", "stderr")}
        with open(io["stdin"], "w", encoding="utf-8") as f:
            f.write(stdin_text)
        report_r, report_w = os.pipe()
        config = {"rlimits": self._rlimits(), "clone_newnet": _CLONE_NEWNET, "report_fd": report_w,
                  "memory_exit": _EXIT_MEMORY, "solution": solution}
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": cwd, "TMPDIR": cwd}
        try:
            with open(io["stdin"], "rb") as fin, open(io["stdout"], "wb") as fout, open(io["stderr"], "wb") as ferr:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(config)],
                    stdin=fin, stdout=fout, stderr=ferr, cwd=cwd, env=env,
                    start_new_session=True, pass_fds=(report_w,),
                )
        finally:
            os.close(report_w)
        timed_out = not _wait_without_reaping(proc.pid, time.monotonic() + self.timeout_s)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # also reaps what the program left running in its group
        except (ProcessLookupError, PermissionError):
            pass
        _, wait_status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped here; keeps Popen from re-waiting
        with os.fdopen(report_r, "rb") as report:
            flag = report.read(1)
        netns = {b"1": True, b"0": False}.get(flag)
        stdout = _read_head(io["stdout"], _OUTPUT_LIMIT)
        stderr = _read_tail(io["stderr"], 2000)
        rc = proc.returncode
        cpu_used = usage.ru_utime + usage.ru_stime
        if timed_out:
            return "timeout", stdout, f"wall time > {self.timeout_s:g} s", netns
        if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and cpu_used >= math.ceil(self.timeout_s)):
            return "timeout", stdout, f"CPU time {cpu_used:.1f} s", netns
        if rc == _EXIT_MEMORY or "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            return "memory", stdout, f"over {self.memory_mb} MiB\n{stderr}", netns
        if rc != 0:
            return "error", stdout, f"exit code {rc}\n{stderr}", netns
        return "ok", stdout, stderr, netns


def _read_head(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def _read_tail(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - limit))
        return f.read().decode("utf-8", errors="replace")


# -------------------------------------------------------------------------------------- self-correction

_WAIT = re.compile(r"\bWait\b")


def self_correction_stats(responses: list[str], tokenizer=None) -> dict:
    """Mean number of self-corrections and mean length per response (the paper's Table 6).

    Self-corrections are whole-word, case-sensitive occurrences of ``Wait`` — the paper counts the "Wait"
    token, which R1-Distill emits capitalised at the start of a correction ("Wait, ..."), so "wait" inside a
    sentence and "Waiting" are not counted. Length is in tokens (key ``length_tokens``) when a Hugging Face
    tokenizer is given, without special tokens; otherwise in whitespace-separated words (key
    ``length_words``), which is not comparable with the paper's token counts.
    """
    if not responses:
        raise ValueError("no responses")
    n = len(responses)
    stats = {"n_responses": n, "wait_per_response": sum(len(_WAIT.findall(r)) for r in responses) / n}
    if tokenizer is not None:
        lengths = [len(tokenizer(r, add_special_tokens=False).input_ids) for r in responses]
        stats["length_tokens"] = sum(lengths) / n
    else:
        stats["length_words"] = sum(len(r.split()) for r in responses) / n
    return stats


def grade_math(responses: list[str], problems: list[dict], **_) -> list[dict]:
    grader = MathGrader()
    return [grader.score(r, p) for r, p in zip(responses, problems)]


def grade_multiple_choice(responses: list[str], problems: list[dict], **_) -> list[dict]:
    graders: dict[str, MultipleChoiceGrader] = {}  # one per option set (GPQA: ABCD; MedBullets op5: ABCDE)
    out = []
    for r, p in zip(responses, problems):
        letters = p.get("options", "ABCD")
        out.append(graders.setdefault(letters, MultipleChoiceGrader(options=letters)).score(r, p))
    return out


def grade_code(responses: list[str], problems: list[dict], *, code_timeout_s: float = 6.0, workers: int = 2,
               **_) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    grader = CodeGrader(timeout_s=code_timeout_s)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(grader.score, responses, problems))
