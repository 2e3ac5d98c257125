"""Biographies: world structure, split construction and separation, contexts, expert, base corpus."""

import random
import re
from collections import Counter

import pytest

from postlab.envs import make
from postlab.envs.biographies import SETS, Biographies, World, world
from postlab.envs.biographies_data import RELATIONS
from postlab.verifiers.answers import MARKER


@pytest.fixture(scope="module")
def w():
    return world("tiny", 0)


def test_relation_groups_and_classes(w):
    assert len(RELATIONS) == 39
    groups = Counter(w.group.values())
    assert groups == {"parametric": 20, "contextual": 19}
    for r, (kind, inv, *_) in RELATIONS.items():
        if kind == "inv":
            assert w.group[r] != w.group[inv]  # each inverse pair is split across the groups
    for g, n in (("parametric", 20), ("contextual", 19)):
        classes = Counter(w.rel_class[r] for r in RELATIONS if w.group[r] == g)
        assert classes["iid"] == 4 and classes["held-out"] == 2 and classes["composition"] == n - 6  # 20/70/10


def test_world_facts(w):
    assert len(set(w.names)) == len(w.names) == 300
    shared = w.in_P & w.in_C
    assert len(w.C) == len(w.P) == 200 and len(shared) == 100  # half shared, half new
    for r, (kind, *_) in RELATIONS.items():
        people = w.in_P if w.group[r] == "parametric" else w.in_C
        assert set(w.facts[r]) == people
        if kind == "sym":
            assert all(w.facts[r][w.facts[r][p]] == p for p in people)
        if kind in ("sym", "inv"):
            assert all(o in people and o != p for p, o in w.facts[r].items())
    assert World("tiny", 0).names == w.names and World("tiny", 1).names != w.names


def _paths(w, qset, part):
    return [q for q in w.questions(qset)[f"{qset}-{part}"]]


@pytest.mark.parametrize("qset", SETS)
def test_splits_really_separate(w, qset):
    train, iid, comp, zero = (_paths(w, qset, p) for p in ("train", "iid", "composition", "zeroshot"))
    held = {r for r, c in w.rel_class.items() if c == "held-out"}
    assert all(not held & set(q.relations) for q in train + iid + comp)  # held-out relations: zero-shot only
    assert all(held & set(q.relations) for q in zero)
    train_comp_paths = {q.relations for q in train if q.part == "composition-train"}
    assert train_comp_paths and not train_comp_paths & {q.relations for q in comp}  # composition paths unseen
    assert all(not any(w.rel_class[r] == "iid" for r in q.relations) for q in comp)
    instances = lambda qs: {(q.entities[0], q.relations) for q in qs}  # noqa: E731
    assert not instances(train) & instances(iid + comp + zero)  # no test question is a training question
    groups = [{w.group[r] for r in q.relations} for q in train + iid + comp + zero]
    expected = {"mem": [{"parametric"}], "ctx": [{"contextual"}], "comp": [{"parametric", "contextual"}]}[qset]
    assert all(g in expected for g in groups)  # complementary questions always mix both groups
    hops = Counter(len(q.relations) for q in train + iid + comp + zero)
    assert set(hops) == {2, 3, 4, 5} and hops[2] > hops[3] > hops[4] > hops[5]


def test_context_holds_contextual_facts_only(w):
    env = Biographies(split="comp-iid")
    for seed in range(100):
        text = env.reset(seed).messages[0]["content"]
        q = env.question
        context = text.split(" | Q: ")[0]
        for e, r in zip(q.entities, q.relations):
            fact = w.sentence(r, e)
            if w.group[r] == "contextual":
                assert fact in context  # the needed contextual fact is given
            else:
                assert fact not in context  # parametric facts must be recalled
    env = Biographies(split="mem-train")
    assert env.reset(0).messages[0]["content"].startswith("Q: ")  # Mem questions have no context


@pytest.mark.parametrize("split", Biographies.splits)
def test_expert_gets_full_reward(split):
    for style in ("compact", "paper"):
        env = make("biographies", split=split, style=style)
        for seed in range(0, 400, 7):
            obs = env.reset(seed)
            r = env.step(env.expert())
            assert (r.reward, r.success, r.done) == (1.0, True, True)
            assert env.expert().endswith(f"{MARKER} {obs.info['answer']}")
            assert len(env.expert().split(". ")) >= len(env.question.relations)


def test_exact_match_reward_and_answer_text():
    env = Biographies(split="comp-composition")
    env.reset(5)
    gold = env.question.answer
    assert env.step(f"blah. {MARKER} {gold}").reward == 1
    env.reset(5)
    assert env.step(f"{MARKER} {gold} and more").reward == 0
    env.reset(5)
    assert env.step("no marker at all").reward == 0
    assert env.check_answer(gold) and not env.check_answer(gold + "x")


def test_question_text_and_determinism():
    a, b = Biographies(split="ctx-train", style="paper"), Biographies(split="ctx-train", style="paper")
    assert [a.reset(s).messages for s in range(30)] == [b.reset(s).messages for s in range(30)]
    text = a.reset(0).messages[0]["content"]
    assert "Context:\n" in text and "Question: " in text and MARKER in text
    with pytest.raises(ValueError, match="valid: mem-train"):
        Biographies(split="iid")
    with pytest.raises(ValueError, match="valid: tiny, lab, paper"):
        Biographies(preset="huge")


def test_base_corpus_is_the_parametric_biographies(w):
    env = Biographies()
    bios = env.base_corpus(250, seed=0)
    assert len(bios) == 250 and bios == env.base_corpus(250, seed=0)
    i = next(i for i, p in enumerate(w.P) if p in w.in_C)  # a person of both worlds
    for r in RELATIONS:
        fact = w.sentence(r, w.P[i])
        assert (fact in bios[i]) == (w.group[r] == "parametric")  # every parametric fact, no contextual one
    assert all("?" not in b and MARKER not in b for b in bios)  # no questions


def test_lab_preset_has_every_split_and_short_corpus_items():
    from postlab.envs.biographies import PARTS, SETS, Biographies

    for qset in SETS:
        for part in PARTS:
            env = Biographies(split=f"{qset}-{part}", preset="lab")  # raises if a split is empty
            env.reset(0)
            assert env.step(env.expert()).reward == 1
    corpus = Biographies(preset="lab").base_corpus(200, seed=0)
    assert all(len(re.findall(r"\.(?= |$)", item)) == 5 for item in corpus)  # 5 one-sentence facts per excerpt
    assert max(len(item) for item in corpus) < 400
    w = world("lab")
    assert len(w.P) == 40
    subjects = {w.names[p] for p in w.P}
    assert all(any(item.startswith(name) or f" {name}" in item for name in subjects) for item in corpus)


def test_wrong_hop_diagnostic_names_the_first_broken_hop():
    from postlab.envs.biographies import first_wrong_hop

    steps = ["A's boss is B.", "B's phone number is 123."]
    assert first_wrong_hop(f"A's boss is B. B's phone number is 123. {MARKER} 123", steps) == "none"
    assert first_wrong_hop(f"A's boss is B. B's phone number is 123. {MARKER} 9", steps) == "none"  # chain right
    assert first_wrong_hop(f"A's boss is B. B's phone number is 124. {MARKER} 124", steps) == "hop2"
    assert first_wrong_hop("A's boss is C. C's phone number is 123.", steps) == "hop1"
    assert first_wrong_hop("", steps) == "hop1"
    env = Biographies(split="ctx-iid", preset="lab")
    env.reset(3)
    hops = len(env.question.relations)
    assert env.step(env.expert()).info["wrong_hop"] == "none"
    env.reset(3)
    last_wrong = env.expert().replace(env.question.answer, "nobody")  # only the last step names the answer
    assert env.step(last_wrong).info["wrong_hop"] == f"hop{hops}"


def test_reading_passages_teach_copying_not_facts():
    w = world("lab", 0)
    people_of_worlds = set(w.names)
    for item in [w.reading_passage(random.Random(i)) for i in range(200)]:
        passage, restated = item.split(" | ")
        assert "?" not in item and MARKER not in item  # no question of the task
        assert not any(name in item for name in people_of_worlds)  # strangers only
        sentences = re.findall(r"[^.]*?[^ .]+(?:\.[^ .]+)*\.", restated)
        assert len(sentences) == 2 and all(s.strip() in passage for s in sentences)  # copies of the passage
    env = Biographies(preset="lab", reading=0.3)
    corpus = env.base_corpus(1000, seed=0)
    reading = [c for c in corpus if " | " in c]
    assert 250 <= len(reading) <= 350 and corpus == env.base_corpus(1000, seed=0)
    # every person's biography still comes round in turn: each excerpt is about P's next person
    bios = [c for c in corpus if " | " not in c]
    assert all(b.count(w.names[w.P[i % len(w.P)]]) == 5 for i, b in enumerate(bios))
    assert all(" | " not in c for c in Biographies(preset="lab").base_corpus(1000, seed=0))
    for bad in (1.0, -0.1, "0.3"):
        with pytest.raises(ValueError, match="reading must be a fraction"):
            Biographies(preset="lab", reading=bad)


def _fills(template: str, text: str, slot: str):
    """The name `text` puts in `template`'s {slot} (other slots anything), or None if it does not fit."""
    pattern = re.escape(template).replace(re.escape("{" + slot + "}"), "(?P<slot>[A-Z][a-z]+ [A-Z][a-z]+)")
    m = re.fullmatch(re.sub(r"\\\{\w\\\}", ".+", pattern), text)
    return m and m["slot"]


def test_phrase_restatements_name_each_fact_by_its_question_phrase():
    from postlab.envs.biographies_data import RELATIONS

    w = world("lab", 0)
    phrased = 0
    for i in range(200):
        item = w.reading_passage(random.Random(i), phrases=0.5)
        passage, restated = item.split(" | ")
        assert "?" not in item and not any(name in item for name in w.names)
        if ": " not in restated:
            continue
        phrased += 1
        # "the birthplace of Gideon Lynch: Gideon Lynch was born in Elmstead." twice: the phrase is
        # one of the relation's question phrases about the sentence's subject, the sentence a copy
        pairs = re.findall(r"(the [^:]+?): ([^:]+?\.)(?= the |$)", restated)
        assert len(pairs) == 2, restated
        for phrase, sentence in pairs:
            assert sentence in passage
            assert any(_fills(t, phrase, "x") == _fills(u, sentence, "s") is not None
                       for r in RELATIONS for t in RELATIONS[r][3] for u in RELATIONS[r][2]), (phrase, sentence)
    assert 70 <= phrased <= 130
    # off by default, and drawn only when asked for: phrases=0 leaves every item as it was
    assert [w.reading_passage(random.Random(i)) for i in range(50)] == \
        [w.reading_passage(random.Random(i), phrases=0.0) for i in range(50)]
    with pytest.raises(ValueError, match="phrases > 0 needs reading > 0"):
        Biographies(preset="lab", phrases=0.5)
    for bad in (1.5, -0.1, "0.5"):
        with pytest.raises(ValueError, match="phrases must be a fraction"):
            Biographies(preset="lab", reading=0.3, phrases=bad)
