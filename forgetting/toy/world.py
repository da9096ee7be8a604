"""The toy world: a pretraining corpus with four measurable abilities, and a downstream task it lacks.

    python launch.py method=base debug=micro      # builds a micro world, pretrains, evaluates

Everything is a pure function of ``WorldConfig`` (its seed included), so two machines build the same world.
Abilities of the base model (each probed as multiple choice, lm-eval style):
- ``facts``: invented countries with a capital, a language and a symbol animal (memorised knowledge);
- ``categories``: which kind of thing a common word names (memorised knowledge, real words);
- ``agreement``: subject-verb number agreement across an attractor noun, on held-out combinations (grammar);
- ``patterns``: continue a repeating sequence of nonsense syllables, fresh at test time (in-context copying).
The downstream task is one-digit arithmetic word problems in MetaMathQA's format, ending
``The answer is: N``; the corpus contains no arithmetic, so the base model scores ~0 on it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from forgetting.config import WorldConfig
from forgetting.data.jsonl import read_jsonl, write_jsonl
from forgetting.toy.tokenizer import train_tokenizer

SYLLABLES = ["ka", "mo", "ri", "tu", "ze", "la", "po", "ni", "ve", "su", "da", "fe", "go", "hu", "ji", "lo",
             "me", "nu", "pa", "qi", "ro", "si", "ta", "vu", "wo", "xe", "yi", "zu", "be", "co"]
CATEGORIES = {
    "animal": ["dog", "cat", "horse", "cow", "sheep", "goat", "pig", "rabbit"],
    "fruit": ["apple", "pear", "plum", "cherry", "banana", "grape", "lemon", "peach"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "axe"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "brown", "pink"],
    "vehicle": ["car", "bus", "truck", "train", "bicycle", "boat", "plane", "tram"],
    "instrument": ["piano", "violin", "guitar", "flute", "drum", "harp", "trumpet", "cello"],
    "tree": ["oak", "pine", "maple", "birch", "willow", "cedar", "elm", "ash"],
    "bird": ["robin", "eagle", "crow", "owl", "sparrow", "swan", "hawk", "parrot"],
    "fish": ["trout", "salmon", "cod", "carp", "tuna", "perch", "pike", "eel"],
    "furniture": ["chair", "table", "sofa", "bed", "desk", "shelf", "stool", "bench"],
}
NOUNS = [("dog", "dogs"), ("girl", "girls"), ("boy", "boys"), ("farmer", "farmers"), ("teacher", "teachers"),
         ("bird", "birds"), ("king", "kings"), ("doctor", "doctors"), ("cat", "cats"), ("baker", "bakers"),
         ("sailor", "sailors"), ("singer", "singers"), ("friend", "friends"), ("child", "children"),
         ("woman", "women"), ("man", "men")]
PLACES = ["tree", "house", "river", "gate", "hill", "wall", "lake", "road", "tower", "bridge"]
VERBS = [("runs", "run"), ("sleeps", "sleep"), ("sings", "sing"), ("waits", "wait"), ("works", "work"),
         ("smiles", "smile"), ("walks", "walk"), ("reads", "read"), ("jumps", "jump"), ("laughs", "laugh"),
         ("eats", "eat"), ("swims", "swim")]
ADVERBS = ["every day", "at night", "in the morning", "all the time", "very often", "again"]
NAMES = ["Tom", "Ann", "Ben", "Mia", "Sam", "Eva", "Leo", "Ivy", "Max", "Zoe", "Dan", "Amy", "Joe", "Liz",
         "Ray", "Kim", "Ted", "Sue", "Ian", "Meg"]
OBJECTS = ["apple", "pen", "book", "coin", "card", "ball", "cup", "shell", "stamp", "marble", "sticker", "toy"]
FACT_RELATIONS = ("capital", "language", "animal")


@dataclass
class Country:
    name: str
    capital: str
    language: str
    animal: str


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()


def make_countries(cfg: WorldConfig) -> list[Country]:
    rng = random.Random(f"{cfg.seed}:countries")
    used: set[str] = set()

    def fresh(n: int, suffix: str = "") -> str:
        while True:
            w = _word(rng, n) + suffix
            if w not in used:
                used.add(w)
                return w

    animals = [m for m in CATEGORIES["animal"] + CATEGORIES["bird"]]
    return [Country(fresh(3, "ia"), fresh(2), fresh(2, "ish"), rng.choice(animals)) for _ in range(cfg.n_entities)]


# ---- sentences of the corpus, one generator per ability -------------------------------------------------
def fact_sentence(rng: random.Random, c: Country) -> str:
    return rng.choice([
        f"The capital of {c.name} is {c.capital}.",
        f"{c.capital} is the capital of {c.name}.",
        f"In {c.name}, people speak {c.language}.",
        f"The people of {c.name} speak {c.language}.",
        f"The symbol of {c.name} is the {c.animal}.",
        f"The {c.animal} is the symbol of {c.name}.",
    ])


def category_sentence(rng: random.Random) -> str:
    cat = rng.choice(list(CATEGORIES))
    member = rng.choice(CATEGORIES[cat])
    return rng.choice([f"A {member} is a kind of {cat}.", f"The {member} is a {cat}.",
                       f"Every {member} is a {cat}."])


def agreement_parts(rng: random.Random) -> tuple[str, str, str, bool]:
    """(subject phrase with attractor, verb singular, verb plural, subject is plural)."""
    noun = rng.choice(NOUNS)
    plural = rng.random() < 0.5
    place = rng.choice(PLACES)
    # the attractor noun has the opposite number, so copying the nearest noun's number is wrong
    attractor = place if plural else place + "s"
    subject = f"The {noun[1] if plural else noun[0]} near the {attractor}"
    verb = rng.choice(VERBS)
    return subject, verb[0], verb[1], plural


def agreement_heldout(subject: str) -> bool:
    """A fixed fifth of subject phrases never appears in the corpus: the probe tests generalisation."""
    return sum(map(ord, subject)) % 5 == 0


def agreement_sentence(rng: random.Random) -> str:
    while True:
        subject, sg, pl, plural = agreement_parts(rng)
        if not agreement_heldout(subject):
            return f"{subject} {pl if plural else sg} {rng.choice(ADVERBS)}."


def pattern_parts(rng: random.Random) -> tuple[list[str], int]:
    period = rng.randint(2, 4)
    unit = rng.sample(SYLLABLES, period)
    length = rng.randint(3 * period, 12)
    return [unit[i % period] for i in range(length)], period


def pattern_sentence(rng: random.Random) -> str:
    seq, _ = pattern_parts(rng)
    return "pattern : " + " ".join(seq) + " ."


# the corpus's mix of sentence kinds (relative weights); a continued-pretraining corpus may reweight it
MIX = {"fact": 4.0, "category": 2.0, "agreement": 2.0, "pattern": 2.0}


def document(rng: random.Random, countries: list[Country], mix: dict[str, float] = MIX) -> str:
    kinds = rng.choices(list(MIX), weights=[mix.get(k, 0.0) for k in MIX], k=rng.randint(4, 7))
    out = []
    for kind in kinds:
        if kind == "fact":
            out.append(fact_sentence(rng, rng.choice(countries)))
        elif kind == "category":
            out.append(category_sentence(rng))
        elif kind == "agreement":
            out.append(agreement_sentence(rng))
        else:
            out.append(pattern_sentence(rng))
    return " ".join(out)


# ---- probes of the pre-existing abilities (multiple choice) ----------------------------------------------
def _mc(context: str, gold: str, distractors: list[str], rng: random.Random) -> dict:
    choices = [gold] + distractors
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(gold)}


def probes(cfg: WorldConfig, countries: list[Country]) -> dict[str, list[dict]]:
    rng = random.Random(f"{cfg.seed}:probes")
    facts = []
    for c in countries:
        others = [o for o in countries if o is not c]
        facts.append(_mc(f"The capital of {c.name} is", c.capital,
                         [o.capital for o in rng.sample(others, 3)], rng))
        facts.append(_mc(f"In {c.name}, people speak", c.language,
                         [o.language for o in rng.sample(others, 3)], rng))
        animals = sorted({o.animal for o in countries} - {c.animal})
        facts.append(_mc(f"The symbol of {c.name} is the", c.animal, rng.sample(animals, 3), rng))
    rng.shuffle(facts)

    cats = []
    for cat, members in CATEGORIES.items():
        for m in members:
            other = rng.sample([k for k in CATEGORIES if k != cat], 3)
            cats.append(_mc(f"A {m} is a kind of", cat, other, rng))
    rng.shuffle(cats)

    agreement, seen = [], set()
    while len(agreement) < cfg.n_eval and len(seen) < 10_000:
        subject, sg, pl, plural = agreement_parts(rng)
        if not agreement_heldout(subject) or (subject, sg) in seen:
            seen.add((subject, sg))
            continue
        seen.add((subject, sg))
        gold, wrong = (pl, sg) if plural else (sg, pl)
        agreement.append(_mc(subject, gold, [wrong], rng))

    patterns = []
    for _ in range(cfg.n_eval):
        seq, _ = pattern_parts(rng)
        gold = seq[-1]
        context = "pattern : " + " ".join(seq[:-1])
        unit = list(dict.fromkeys(seq))
        distract = [s for s in unit if s != gold]
        distract += rng.sample([s for s in SYLLABLES if s not in unit], 3 - len(distract))
        patterns.append(_mc(context, gold, distract[:3], rng))
    return {"facts": facts[: cfg.n_eval], "categories": cats[: cfg.n_eval],
            "agreement": agreement, "patterns": patterns}


# ---- the downstream task: arithmetic word problems in MetaMathQA's format ---------------------------------
def arithmetic_problem(rng: random.Random, max_operand: int) -> dict:
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
    kind = rng.randrange(3)
    if kind == 0:
        query = f"{name} has {a} {obj}s. {name} gets {b} more. How many {obj}s does {name} have now?"
        response = f"{name} has {a} + {b} = {a + b} {obj}s now."
        answer = a + b
    elif kind == 1:
        a, b = max(a, b), min(a, b)
        query = f"{name} has {a} {obj}s and gives {b} to {other}. How many {obj}s does {name} have left?"
        response = f"{name} has {a} - {b} = {a - b} {obj}s left."
        answer = a - b
    else:
        query = f"There are {a} {obj}s in a box and {b} {obj}s on a table. How many {obj}s are there in total?"
        response = f"There are {a} + {b} = {a + b} {obj}s in total."
        answer = a + b
    return {"query": query, "response": f"{response} The answer is: {answer}", "answer": str(answer)}


def downstream(cfg: WorldConfig) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"{cfg.seed}:downstream")
    test, seen = [], set()
    while len(test) < cfg.n_down_test:
        p = arithmetic_problem(rng, cfg.max_operand)
        if p["query"] not in seen:
            seen.add(p["query"])
            test.append(p)
    train = []
    while len(train) < cfg.n_down_train:
        p = arithmetic_problem(rng, cfg.max_operand)
        if p["query"] not in seen:  # no test question appears in training
            train.append(p)
    return train, test


@dataclass(frozen=True)
class ToyWorld:
    """A built toy world (the world stage's directory), asked for its parts by what they are, never by file name:
    the pretraining corpus, the held-out documents, the probes, the downstream train and test rows, the countries
    and the tokenizer. :func:`build_world` writes it; the rest of the code reads it through this object."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(getattr(self.path, "path", self.path)))  # an Artifact, or a path

    @property
    def corpus_file(self) -> Path:
        return self.path / "corpus.jsonl"

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    @property
    def down_test_file(self) -> Path:
        return self.path / "down_test.jsonl"

    def probe_file(self, ability: str) -> Path:
        return self.path / f"probe_{ability}.jsonl"

    def corpus(self) -> list[str]:
        return [r["text"] for r in read_jsonl(self.corpus_file)]

    def heldout(self) -> list[str]:
        """Documents of the corpus's distribution that no model pretrains on."""
        return [r["text"] for r in read_jsonl(self.path / "heldout.jsonl")]

    def down_train(self) -> list[dict]:
        return read_jsonl(self.path / "down_train.jsonl")

    def down_test(self) -> list[dict]:
        return read_jsonl(self.down_test_file)

    def countries(self) -> list[Country]:
        return [Country(**row) for row in read_jsonl(self.path / "countries.jsonl")]

    def write(self, cfg: WorldConfig) -> None:
        """Build the world of ``cfg`` into ``path``."""

        countries = make_countries(cfg)
        rng = random.Random(f"{cfg.seed}:corpus")
        corpus = [{"text": document(rng, countries)} for _ in range(cfg.n_docs)]
        rng = random.Random(f"{cfg.seed}:heldout")
        heldout = [{"text": document(rng, countries)} for _ in range(cfg.n_heldout_docs)]
        train, test = downstream(cfg)
        write_jsonl(self.corpus_file, corpus)
        write_jsonl(self.path / "heldout.jsonl", heldout)
        write_jsonl(self.path / "down_train.jsonl", train)
        write_jsonl(self.down_test_file, test)
        for task, rows in probes(cfg, countries).items():
            write_jsonl(self.probe_file(task), rows)
        write_jsonl(self.path / "countries.jsonl", [c.__dict__ for c in countries])
        # the tokenizer covers the downstream text too, as a real tokenizer covers text its model never saw
        texts = [r["text"] for r in corpus] + [f"Question : {p['query']}, Answer : {p['response']}" for p in train]
        train_tokenizer(texts, cfg.vocab_size).save_pretrained(self.tokenizer_dir)


def reweighted_corpus(world_dir: Path, mix: dict[str, float], n_docs: int, seed: int) -> list[str]:
    """``n_docs`` new documents about the world's countries with the sentence kinds weighted by ``mix`` (kinds left
    out: weight 0): a "stage-2" corpus for continued pretraining (paper 004's reweighted mid-training data)."""
    countries = ToyWorld(world_dir).countries()
    rng = random.Random(f"{seed}:mix:{sorted(mix.items())}")
    return [document(rng, countries, mix) for _ in range(n_docs)]


def reweighted_documents(world_dir: Path, mix: dict[str, float], seed: int):
    """:func:`reweighted_corpus`'s documents one at a time, as many as the world's corpus has (a stream)."""
    world = ToyWorld(world_dir)
    countries = world.countries()
    with open(world.corpus_file) as f:
        n_docs = sum(1 for line in f if line.strip())
    rng = random.Random(f"{seed}:mix:{sorted(mix.items())}")
    for _ in range(n_docs):
        yield document(rng, countries, mix)


# ---- writing the world -----------------------------------------------------------------------------------
def build_world(cfg: WorldConfig, out: Path) -> None:
    """Write corpus, held-out corpus, probes, downstream train/test and the tokenizer into ``out``."""
    ToyWorld(out).write(cfg)
