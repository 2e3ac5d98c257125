"""Biographies: the synthetic world of "From Atomic to Composite" (Cheng et al., complementary reasoning).

World (methods.md section 2), deterministic from `world_seed`:

- people with unique names; a parametric world P (`n_people`) and a contextual world C of
  the same size, half shared with P and half new people;
- 39 relations (`biographies_data.RELATIONS`) split into a parametric group (20) and a
  contextual group (19), each inverse pair split across the groups; parametric facts exist
  for people in P, contextual facts for people in C; attribute objects come uniformly from
  fixed vocabularies, person objects uniformly from the same world (symmetric relations
  are matchings, so "A's spouse is B" implies "B's spouse is A");
- each group's relations are shuffled 20% / 70% / 10% into iid / composition / held-out
  classes (stratified over attribute and person relations so every class can build paths).

Questions are paths of h = 2..5 hops (probabilities .5/.3/.15/.05): h-1 person relations,
then a final relation. Three question sets: `mem` (parametric relations only, no context),
`ctx` (contextual relations only, all facts in the context), `comp` (complementary: both
groups, guaranteed). Splits, as the paper builds them, per set:

- a path with a held-out relation is zero-shot (test only);
- else a path with an iid relation is I.I.D.: instances alternate train / test;
- else (composition relations only) it is Composition: whole relation paths alternate
  train / test, so no test relation path is ever trained on.

Env split names: `{set}-train` (iid train + composition train), `{set}-iid`,
`{set}-composition`, `{set}-zeroshot` for set in mem, ctx, comp.

The context holds shuffled paragraphs of the contextual facts of the chain's entities that
are in C (never parametric facts). The answer is a chain of thought, one sentence per hop,
ending "So, the answer is: X"; the reward is exact match (1 or 0).

Presets: `lab` (CPU minutes: 40 people, 4-digit phones, one distractor fact per context
paragraph, base-corpus items of 5 facts), `tiny` (200 people, one template per relation,
6-digit phones, each context paragraph holds the needed fact plus 2 distractor facts) and
`paper` (10,000 people, 3 templates, 10-digit phones, full paragraphs).
"""

from __future__ import annotations

import dataclasses
import functools
import random

from postlab.envs.base import Env, Observation, StepResult, register_env, reject_unknown_options
from postlab.envs.biographies_data import FIRST_NAMES, LAST_NAMES, QUESTION_FRAMES, RELATIONS, VOCAB
from postlab.verifiers.answers import MARKER, exact_match, extract_answer, normalize

PRESETS = {
    "tiny": dict(n_people=200, n_templates=1, phone_digits=6, context_facts=2, pool=3000, bio_facts=None),
    # CPU minutes: 40 people, and base-corpus items of 5 facts (~170 characters) instead of whole
    # 20-fact biographies (~770), so pre-training sees every fact many times in a small budget.
    "lab": dict(n_people=40, n_templates=1, phone_digits=4, context_facts=1, pool=1500, bio_facts=5),
    "paper": dict(n_people=10_000, n_templates=3, phone_digits=10, context_facts=None, pool=60_000, bio_facts=None),
}
SETS = ("mem", "ctx", "comp")
PARTS = ("train", "iid", "composition", "zeroshot")
HOPS, HOP_PROBS = (2, 3, 4, 5), (0.5, 0.3, 0.15, 0.05)
PERSON_KINDS = ("sym", "inv")
PAPER_INSTRUCTION = ("Answer the question. Some facts are given in the context; others you have to recall. "
                     f"Reason step by step and end with \"{MARKER} <answer>\".")


@dataclasses.dataclass(frozen=True)
class Question:
    qset: str  # mem | ctx | comp
    part: str  # iid-train | iid-test | composition-train | composition-test | zeroshot
    relations: tuple[str, ...]
    entities: tuple[int, ...]  # the chain: start person, then each hop's person object (entities[i] is the
    # subject of relations[i]; a final person relation's object is entities[-1])
    answer: str
    uid: int


class World:
    """People, facts and relation splits; build with `world(preset, seed)` (cached)."""

    def __init__(self, preset: str = "tiny", seed: int = 0, **overrides):
        if preset not in PRESETS:
            raise ValueError(f"biographies: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        cfg = PRESETS[preset] | overrides
        self.preset, self.seed, self.cfg = preset, seed, cfg
        rng = random.Random(f"biographies-world/{preset}/{seed}")
        n = cfg["n_people"]
        names = [f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES]
        if n + n // 2 > len(names):
            raise ValueError(f"biographies: at most {2 * len(names) // 3} people, got n_people={n}")
        self.names = rng.sample(names, n + n // 2)
        self.P = list(range(n))  # parametric world
        self.C = sorted(rng.sample(self.P, n - n // 2) + list(range(n, n + n // 2)))  # half shared, half new
        self.in_P, self.in_C = set(self.P), set(self.C)
        self.everyone = list(range(len(self.names)))
        self.group = self._assign_groups(rng)
        self.rel_class = self._assign_classes(rng)
        self.facts = {r: self._sample_facts(rng, r) for r in RELATIONS}
        self._questions: dict[str, dict[str, list[Question]]] = {}

    def _assign_groups(self, rng: random.Random) -> dict[str, str]:
        attrs = [r for r, v in RELATIONS.items() if v[0] == "attr"]
        syms = [r for r, v in RELATIONS.items() if v[0] == "sym"]
        pairs = sorted({tuple(sorted((r, v[1]))) for r, v in RELATIONS.items() if v[0] == "inv"})
        rng.shuffle(attrs)
        rng.shuffle(syms)
        group = {}
        for a, b in pairs:  # each inverse pair split across the groups
            first = rng.random() < 0.5
            group[a], group[b] = ("parametric", "contextual") if first else ("contextual", "parametric")
        for i, r in enumerate(syms):
            group[r] = "parametric" if i < len(syms) // 2 else "contextual"
        for i, r in enumerate(attrs):  # 12 parametric + 11 contextual -> groups of 20 and 19
            group[r] = "parametric" if i < (len(attrs) + 1) // 2 else "contextual"
        return group

    def _assign_classes(self, rng: random.Random) -> dict[str, str]:
        out = {}
        for g in ("parametric", "contextual"):
            for person in (True, False):
                rels = sorted(r for r in RELATIONS
                              if self.group[r] == g and (RELATIONS[r][0] in PERSON_KINDS) == person)
                rng.shuffle(rels)
                n_iid, n_held = max(1, round(0.2 * len(rels))), max(1, round(0.1 * len(rels)))
                for i, r in enumerate(rels):
                    out[r] = "iid" if i < n_iid else ("held-out" if i < n_iid + n_held else "composition")
        return out

    def _sample_facts(self, rng: random.Random, rel: str) -> dict:
        kind, vocab = RELATIONS[rel][:2]
        people = self.P if self.group[rel] == "parametric" else self.C
        if kind == "sym":  # a random matching: symmetric facts agree both ways
            order = people[:]
            rng.shuffle(order)
            facts = {}
            for a, b in zip(order[0::2], order[1::2]):
                facts[a], facts[b] = b, a
            if len(order) % 2:
                facts[order[-1]] = order[0]
            return facts
        if kind == "inv":
            return {p: rng.choice([q for q in rng.sample(people, 2) if q != p]) for p in people}
        return {p: self._value(rng, vocab, p) for p in people}

    def _value(self, rng: random.Random, vocab: str, person: int) -> str:
        return self._value_for(rng, vocab, self.names[person])

    def _value_for(self, rng: random.Random, vocab: str, name: str) -> str:
        if vocab == "date":
            return f"{rng.randint(1, 28)} {rng.choice(VOCAB['month'])} {rng.randint(1900, 2005)}"
        if vocab == "address":
            return f"{rng.randint(1, 999)} {rng.choice(VOCAB['street'])} Street"
        if vocab == "email":
            first, last = name.lower().split(" ", 1)
            return f"{first}.{last}{rng.randint(1, 99)}@mail.com"
        if vocab == "phone":
            d = self.cfg["phone_digits"]
            return str(rng.randint(10 ** (d - 1), 10 ** d - 1))
        if vocab == "book":
            return f"The {rng.choice(VOCAB['book_adj'])} {rng.choice(VOCAB['book_noun'])}"
        return rng.choice(VOCAB[vocab])

    # -- facts as text --------------------------------------------------------------------------
    def is_person_rel(self, rel: str) -> bool:
        return RELATIONS[rel][0] in PERSON_KINDS

    def object_text(self, rel: str, subject: int) -> str:
        o = self.facts[rel][subject]
        return self.names[o] if self.is_person_rel(rel) else o

    def sentence(self, rel: str, subject: int, template: int = 0) -> str:
        return RELATIONS[rel][2][template].format(s=self.names[subject], o=self.object_text(rel, subject))

    def biography(self, person: int, rng: random.Random) -> str:
        """The parametric biography: one templated sentence per parametric relation, shuffled;
        with the preset's `bio_facts` = k, a random k of them (a biography excerpt)."""
        rels = [r for r in RELATIONS if self.group[r] == "parametric"]
        rng.shuffle(rels)
        rels = rels[:self.cfg.get("bio_facts") or len(rels)]
        k = self.cfg["n_templates"]
        return " ".join(self.sentence(r, person, rng.randrange(k)) for r in rels)

    @functools.cached_property
    def strangers(self) -> list[str]:
        """Names of nobody in either world: the people of reading passages."""
        taken = set(self.names)
        return [f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES if f"{a} {b}" not in taken]

    def reading_passage(self, rng: random.Random, phrases: float = 0.0) -> str:
        """A base-corpus reading item: paragraphs about 2-3 strangers, then " | " and two of the
        passage's sentences restated, whose objects can only be copied from the passage.

        Pre-trained language models can read; a model trained from scratch on biographies
        alone cannot, and then learns the contextual skill from a few hundred SFT questions
        (Ctx I.I.D. 19% in the demo, docs/results.md). Strangers are in neither world and their
        facts are drawn fresh per item, so this teaches copying from the prompt, not a fact;
        it has no question, so it shows no question of the task. Relations of both groups and
        every split class appear, as in the world's own sentences (the biographies already
        show each parametric relation's sentence).

        With probability `phrases` the restated facts come each after its relation's question
        phrase ("the university of Ann Lee: Ann Lee studied at ..."): what a pre-trained model
        knows of language, that the phrase names that fact. Without it a lab model has never
        seen a held-out relation's phrase next to its sentence, and zero-shot chains break at
        exactly that hop (docs/results.md)."""
        people = rng.sample(self.strangers, rng.randint(2, 3))
        k, n_facts = self.cfg["n_templates"], 1 + (self.cfg["context_facts"] or 2)
        paragraphs = []
        for name in people:
            facts = []
            for rel in rng.sample(list(RELATIONS), n_facts):
                obj = (rng.choice([p for p in people if p != name]) if self.is_person_rel(rel)
                       else self._value_for(rng, RELATIONS[rel][1], name))
                facts.append((RELATIONS[rel][2][rng.randrange(k)].format(s=name, o=obj), rel, name))
            paragraphs.append(facts)
        rng.shuffle(paragraphs)
        restated = rng.sample([f for facts in paragraphs for f in facts], 2)
        # drawn only when asked for, so that phrases=0 leaves the corpus exactly as it was
        if phrases and rng.random() < phrases:
            lines = [f"{RELATIONS[rel][3][rng.randrange(k)].format(x=name)}: {text}" for text, rel, name in restated]
        else:
            lines = [text for text, _, _ in restated]
        return " ".join(text for facts in paragraphs for text, _, _ in facts) + " | " + " ".join(lines)

    # -- questions --------------------------------------------------------------------------------
    @functools.cached_property
    def _candidates(self) -> dict:
        """Relations usable from an entity, keyed by (parametric ok, contextual ok, final hop)."""
        out = {}
        for p_ok in (False, True):
            for c_ok in (False, True):
                for final in (False, True):
                    out[p_ok, c_ok, final] = [r for r in RELATIONS if (final or self.is_person_rel(r)) and (
                        (p_ok and self.group[r] == "parametric") or (c_ok and self.group[r] == "contextual"))]
        return out

    def sample_path(self, rng: random.Random, qset: str, h: int, tries: int = 50):
        """(relations, chain) of an h-hop path for the question set, or None. h is drawn
        before the retries so the hop distribution is the paper's even after rejections."""
        use_p, use_c = qset in ("mem", "comp"), qset in ("ctx", "comp")
        starts = self.P if qset == "mem" else self.C if qset == "ctx" else self.everyone
        for _ in range(tries):
            chain, rels = [rng.choice(starts)], []
            for hop in range(h):
                e = chain[-1]
                cands = self._candidates[use_p and e in self.in_P, use_c and e in self.in_C, hop == h - 1]
                if not cands:
                    break
                r = rng.choice(cands)
                rels.append(r)
                if self.is_person_rel(r):
                    o = self.facts[r][e]
                    if o in chain:  # cycles make trivial or ambiguous questions
                        break
                    chain.append(o)
            else:
                if qset != "comp" or len({self.group[r] for r in rels}) == 2:  # complementary: both groups
                    return tuple(rels), tuple(chain)
        return None

    def questions(self, qset: str) -> dict[str, list[Question]]:
        """Every question of one set, keyed by env split name ("comp-train", ...); built once."""
        if qset not in SETS:
            raise ValueError(f"biographies: unknown question set {qset!r}; valid: {', '.join(SETS)}")
        if qset not in self._questions:
            self._questions[qset] = self._build_questions(qset)
        return self._questions[qset]

    def _build_questions(self, qset: str) -> dict[str, list[Question]]:
        out = {f"{qset}-{p}": [] for p in PARTS}
        rng = random.Random(f"biographies-paths/{self.preset}/{self.seed}/{qset}")
        seen, path_index, n_iid = set(), {}, 0
        for _ in range(self.cfg["pool"] * 3):
            if len(seen) >= self.cfg["pool"]:
                break
            got = self.sample_path(rng, qset, rng.choices(HOPS, HOP_PROBS)[0])
            if got is None or (got[1][0], got[0]) in seen:
                continue
            rels, chain = got
            seen.add((chain[0], rels))
            classes = {self.rel_class[r] for r in rels}
            if "held-out" in classes:
                part = "zeroshot"
            elif "iid" in classes:  # instances alternate train/test
                part, n_iid = ("iid-train" if n_iid % 2 == 0 else "iid-test"), n_iid + 1
            else:  # whole relation paths alternate train/test
                k = path_index.setdefault(rels, len(path_index))
                part = "composition-train" if k % 2 == 0 else "composition-test"
            q = Question(qset, part, rels, chain, self.object_text(rels[-1], chain[len(rels) - 1]), len(seen))
            key = {"iid-train": "train", "composition-train": "train", "iid-test": "iid",
                   "composition-test": "composition", "zeroshot": "zeroshot"}[part]
            out[f"{qset}-{key}"].append(q)
        return out

    def question_text(self, q: Question, rng: random.Random) -> str:
        k = self.cfg["n_templates"]
        np = self.names[q.entities[0]]
        for r in q.relations:
            np = RELATIONS[r][3][rng.randrange(k)].format(x=np)
        frame = QUESTION_FRAMES[rng.randrange(k)]
        if self.is_person_rel(q.relations[-1]):  # the answer is a person
            frame = frame.replace("What is", "Who is")
        return frame.format(np=np)

    def context(self, q: Question, rng: random.Random) -> list[str]:
        """Shuffled paragraphs of contextual facts about the chain's entities in C."""
        needed = {}
        for e, r in zip(q.entities, q.relations):
            if self.group[r] == "contextual":
                needed.setdefault(e, []).append(r)
        ctx_rels = [r for r in RELATIONS if self.group[r] == "contextual"]
        k, n_extra = self.cfg["n_templates"], self.cfg["context_facts"]
        paragraphs = []
        for e in dict.fromkeys(q.entities):
            if e not in self.in_C:
                continue
            rels = list(needed.get(e, []))
            others = [r for r in ctx_rels if r not in rels]
            rels += others if n_extra is None else rng.sample(others, min(n_extra, len(others)))
            rng.shuffle(rels)
            paragraphs.append(" ".join(self.sentence(r, e, rng.randrange(k)) for r in rels))
        rng.shuffle(paragraphs)
        return paragraphs

    def hop_sentences(self, q: Question) -> list[str]:
        """The chain of thought's steps: one canonical sentence per hop."""
        return [self.sentence(r, e) for e, r in zip(q.entities, q.relations)]

    def chain_of_thought(self, q: Question) -> str:
        return " ".join(self.hop_sentences(q)) + f" {MARKER} {q.answer}"


def first_wrong_hop(text: str, steps: list[str]) -> str:
    """Where an answer's chain of thought leaves the expert's: ``hop{k}`` for the first hop
    whose sentence is not the expert's (k from 1), ``none`` when every hop is written right
    (the final answer may still be wrong). A zero-shot failure that reads ``hop1`` never
    started the chain; one at the last hop lost only the final fact. Exact text, because the
    expert's steps use each relation's canonical template."""
    text = text.strip()
    prefix = ""
    for k, step in enumerate(steps, 1):
        prefix = f"{prefix} {step}".strip()
        if not text.startswith(prefix):
            return f"hop{k}"
    return "none"


@functools.lru_cache(maxsize=4)
def world(preset: str = "tiny", seed: int = 0) -> World:
    return World(preset, seed)


@register_env("biographies")
class Biographies(Env):
    """Multi-hop questions over a synthetic biography world: Mem / Ctx / Comp sets, I.I.D. / Composition / Zero-shot."""

    splits = tuple(f"{s}-{p}" for s in SETS for p in PARTS)
    styles = ("compact", "paper")
    diagnostics = ("wrong_hop",)  # `first_wrong_hop`: which hop of the chain an answer breaks at

    def __init__(self, split: str = "comp-train", style: str = "compact", preset: str = "tiny", world_seed: int = 0,
                 max_turns: int = 1, reading: float = 0.0, phrases: float = 0.0, **kwargs):
        # Single-turn: the episode ends after one answer whatever max_turns says (accepted so that
        # generic callers can pass it). For DRIFT-style retries wrap it: make("unary-feedback", env="biographies").
        # `reading`: the fraction of base-corpus items that are reading passages (`World.reading_passage`);
        # `phrases`: the fraction of those that restate their facts after the relation's question phrase.
        reject_unknown_options("biographies", type(self), kwargs)
        super().__init__(split=split, style=style, max_turns=max_turns)
        if not isinstance(reading, (int, float)) or not 0 <= reading < 1:
            raise ValueError(f"biographies: reading must be a fraction in [0, 1) (of base-corpus items that are "
                             f"reading passages), got {reading!r}")
        if not isinstance(phrases, (int, float)) or not 0 <= phrases <= 1:
            raise ValueError(f"biographies: phrases must be a fraction in [0, 1] (of reading passages that restate "
                             f"facts after their question phrase), got {phrases!r}")
        if phrases and not reading:
            raise ValueError("biographies: phrases > 0 needs reading > 0 (phrases are part of reading passages); "
                             "set reading, e.g. reading=0.3")
        self.reading, self.phrases = float(reading), float(phrases)
        self.world = world(preset, world_seed)
        self.items = self.world.questions(split.split("-")[0])[split]
        if not self.items:
            raise ValueError(f"biographies: split {split!r} is empty for preset {preset!r}; use a larger pool")

    def reset(self, seed: int) -> Observation:
        self.question = self.items[seed % len(self.items)]
        rng = random.Random(f"biographies-text/{self.split}/{self.question.uid}/{seed // len(self.items)}")
        q = self.question
        self.question_text = self.world.question_text(q, rng)
        paragraphs = self.world.context(q, rng) if q.qset != "mem" else []
        if self.style == "compact":
            prompt = (f"{' '.join(paragraphs)} | " if paragraphs else "") + f"Q: {self.question_text}"
        else:
            ctx = "Context:\n" + "\n".join(paragraphs) + "\n\n" if paragraphs else ""
            prompt = f"{PAPER_INSTRUCTION}\n\n{ctx}Question: {self.question_text}"
        self.done = False
        info = {"answer": q.answer, "relation_path": list(q.relations), "part": q.part, "hops": len(q.relations),
                "split": self.split}
        return Observation(messages=[{"role": "user", "content": prompt}], info=info)

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("biographies: episode is over; call reset(seed)")
        self.done = True
        ok = exact_match(text, self.question.answer) if isinstance(text, str) else False
        info = {"verdict": "correct" if ok else "wrong", "answer": self.question.answer,
                "predicted": extract_answer(text) if isinstance(text, str) else None,
                "wrong_hop": (first_wrong_hop(text, self.world.hop_sentences(self.question))
                              if isinstance(text, str) else None)}
        return StepResult(feedback=[], reward=1.0 if ok else 0.0, done=True, success=ok, info=info)

    def expert(self) -> str:
        return self.world.chain_of_thought(self.question)

    def expert_answer(self) -> str:
        return self.question.answer

    def expert_reasoning(self) -> str:
        return self.expert().rsplit(MARKER, 1)[0].strip()

    def check_answer(self, answer: str) -> bool:
        return isinstance(answer, str) and normalize(answer) == normalize(self.question.answer)

    def base_corpus(self, n: int, seed: int = 0) -> list[str]:
        """Parametric biographies (what the base model memorizes), cycling over P with fresh
        shuffles; with `reading` > 0, that fraction of the items are reading passages instead."""
        if n < 0:
            raise ValueError(f"base_corpus: n must be >= 0, got {n}")
        w = self.world
        if not self.reading:  # the corpus without reading, unchanged
            return [w.biography(w.P[i % len(w.P)], random.Random(f"bio/{seed}/{i}")) for i in range(n)]
        out, n_bios = [], 0
        for i in range(n):
            rng = random.Random(f"bio/{seed}/{i}")
            if rng.random() < self.reading:
                out.append(w.reading_passage(rng, self.phrases))
            else:  # every person's biography still comes round in turn
                out.append(w.biography(w.P[n_bios % len(w.P)], rng))
                n_bios += 1
        return out
