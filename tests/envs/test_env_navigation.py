"""Navigation: relative turns, rails, rewards, attempts per position, splits, expert, base corpus."""

import re

import pytest

from postlab.verifiers.navigation import SHORT

from postlab.envs import make
from postlab.envs.navigation import (COMPASS, CORPUS_DIALOGUE_TURNS, Navigation, cities, navigation_corpus,
                                     relative_turn)
from postlab.seeds import corpus_seed, eval_seed
from postlab.verifiers.navigation import RELATIVE

SPLITS = ("id", "ood-rule", "ood-visual")


def test_relative_turn_names():
    n, ne, e, se, s, sw, w, nw = range(8)
    assert relative_turn(n, ne) == "slightly right" and relative_turn(n, nw) == "slightly left"
    assert relative_turn(n, e) == "right" and relative_turn(n, se) == "right"
    assert relative_turn(n, w) == "left" and relative_turn(n, sw) == "left"
    assert relative_turn(w, n) == "right" and relative_turn(nw, sw) == "left"  # wraps around
    with pytest.raises(ValueError):
        relative_turn(n, s)


@pytest.mark.parametrize("style", ("compact", "paper"))
@pytest.mark.parametrize("split", SPLITS)
def test_expert_completes_every_route(split, style):
    env = make("navigation", split=split, style=style)
    for seed in range(120):
        env.reset(seed)
        total, steps = 0.0, 0
        while True:
            r = env.step(env.expert())
            total, steps = total + r.reward, steps + 1
            assert r.reward == 1.0
            if r.done:
                break
        assert r.success and total == steps == len(env.rail)


def test_rail_structure_and_action_spaces():
    for split in SPLITS:
        env = Navigation(split=split)
        for seed in range(50):
            env.reset(seed)
            actions = [s.action for s in env.rail]
            assert actions[0][0] == "turn" and actions[-1] == ("stop",) and actions[1] == ("forward",)
            turns = [a[1] for a in actions if a[0] == "turn"]
            assert all(t in (RELATIVE if split == "ood-rule" else COMPASS) for t in turns)
            # every turn happens at an intersection and the rail never turns twice in a row
            for a, b in zip(env.rail, env.rail[1:]):
                assert not (a.action[0] == "turn" and b.action[0] == "turn")
            assert all(env.city.is_intersection(s.pos) for s in env.rail if s.action[0] != "forward")


def test_rewards_and_two_attempts_per_position():
    env = Navigation(split="id", style="compact")
    obs = env.reset(0)
    assert obs.messages[0]["content"].startswith("mode abs | 1. turn ")
    r = env.step("stop")  # wrong action: -1, retry allowed
    assert (r.reward, r.done) == (-1.0, False) and r.feedback[0]["content"] == "wrong, retry"
    r = env.step(env.expert())
    assert r.reward == 1.0 and r.feedback[0]["content"].startswith("O2: ")
    env.step("stop")
    r = env.step("turn S")  # second failure at the same position ends the episode
    assert r.done and not r.success and r.feedback == []
    env = Navigation(split="id", style="paper")
    env.reset(0)
    claim = '{"current observation": "No landmarks nearby.", "current instruction": "x", "action": "forward()"}'
    r = env.step(claim)  # the start is an intersection: denying it costs -1.5
    assert r.reward == -1.5 and r.feedback[0]["content"].startswith("You failed this trial because you are at an")
    r = env.step(env.expert())
    assert r.reward == 1.0 and r.feedback[0]["content"].startswith("O_2: ")


def test_relative_split_rejects_absolute_answers():
    env = Navigation(split="ood-rule")
    env.reset(3)
    gold = env.rail[0].action[1]
    assert gold in RELATIVE
    start, first = env.rail[0].heading, env.instructions[0][2]
    assert relative_turn(start, COMPASS.index(first)) == gold
    assert env.step(f"turn {first}").reward == -1  # the compass answer is outside this action space
    assert env.step(f"turn {gold}").reward == 1


def test_unseen_cities_share_no_landmark_names_with_seen_cities():
    seen = Navigation(split="id").landmark_names() | Navigation(split="ood-rule").landmark_names()
    unseen = Navigation(split="ood-visual").landmark_names()
    assert seen and unseen and not seen & unseen
    id_env = Navigation(split="id")
    id_text = " ".join(m["content"] for s in range(300) for m in id_env.reset(s).messages)
    assert not any(name in id_text for name in unseen)
    assert {c.name for c in cities("seen", 8, 0)}.isdisjoint({c.name for c in cities("unseen", 4, 0)})


def test_determinism_bounds_and_corpus():
    a, b = Navigation(split="ood-visual"), Navigation(split="ood-visual")
    assert [a.reset(s).messages for s in range(20)] == [b.reset(s).messages for s in range(20)]
    env = Navigation(max_turns=3)
    env.reset(0)
    for _ in range(3):
        r = env.step(env.expert())
    assert r.done and r.info["truncated"]
    with pytest.raises(ValueError, match="valid: id, ood-rule, ood-visual"):
        Navigation(split="ood")
    corpus = navigation_corpus(2000, seed=1)
    lines = [item for item in corpus if isinstance(item, str)]  # the chat items: test below
    text = " ".join(lines)
    assert "slightly left" in text and "mode rel" in text and "U-turn" in text
    assert "O1:" not in text and "wrong, retry" not in text  # text items: no observation, no episode dialogue
    readings = [line for line in lines if "| turns: " in line]
    assert 500 < len(readings) < 700
    unseen = Navigation(split="ood-visual").landmark_names()
    for line in readings:  # instruction lists of seen cities, with the turn words the mode asks for
        mode, instructions, turns = line.split(" | ")
        assert not any(name in instructions for name in unseen)
        asked = [t.split(" to ")[0] for t in instructions.split(". ") if " turn " in f" {t}"]
        words = [t.removeprefix("turn ") for t in turns.removeprefix("turns: ").split(", then ")]
        if mode == "mode rel":
            assert words == [a.split("turn ", 1)[1] for a in asked]
        else:
            assert mode == "mode abs" and all(w in SHORT.values() for w in words) and len(words) == len(asked)
    assert Navigation().base_corpus(10, 1) == corpus[:10]


def _turn_decisions(corpus):
    """(index, mode, prompt, answer) of the corpus's chat items."""
    out = []
    for i, item in enumerate(corpus):
        if isinstance(item, dict):
            user, assistant = item["messages"]
            assert (user["role"], assistant["role"]) == ("user", "assistant") and set(user) == set(assistant) == {
                "role", "content"}
            out.append((i, user["content"].split(" | ")[0], user["content"], assistant["content"]))
    return out


def test_corpus_turn_decisions_are_the_experts_answer_in_both_modes_and_forms():
    corpus = navigation_corpus(2000, seed=1)
    items = _turn_decisions(corpus)
    assert 150 < len(items) < 260  # a modest share (10%): route reading and facts keep their role
    forms = {(mode, "=>" in answer) for _, mode, _, answer in items}
    assert forms == {("mode rel", False), ("mode rel", True), ("mode abs", False), ("mode abs", True)}
    assert any(answer in ("turn left", "turn right", "turn slightly left", "turn slightly right")
               for _, mode, _, answer in items if mode == "mode rel")
    unseen = Navigation(split="ood-visual").landmark_names()
    experts = {(mode, restate): Navigation(split="id" if mode == "mode abs" else "ood-rule", restate=restate)
               for mode in ("mode abs", "mode rel") for restate in (False, True)}
    for i, mode, prompt, answer in items:
        assert not any(name in prompt for name in unseen)
        # the same decision in the corpus route's own episode (rendered by the env, its expert
        # walking the whole route): the item's turn is one of the route's turns, with the same
        # observation, instruction text and action, and the env scores the item's answer +1 there
        restate = "=>" in answer
        env = experts[mode, restate]
        env.reset(corpus_seed(1, i))
        at_turns = []
        while not env.done:
            here = env.rail[env.index]
            if here.action[0] == "turn":
                instruction = env.instruction_text(here.instruction)
                obs = re.search(r"(?:^| )O\d+: (.*)$", env.messages[-1]["content"]).group(1)
                action = env.expert().rsplit(" => ", 1)[-1]
                # restated, the instruction's number is its place in the route: 1 in a one-turn route
                assert env.expert() == (f"{here.instruction + 1}. {instruction} => {action}" if restate else action)
                expected = f"1. {instruction} => {action}" if restate else action
                at_turns.append((instruction, obs, expected, env.verify(answer).reward))
            env.step(env.expert())
        instruction = prompt.split(" | ")[1].removeprefix("1. ").split(" 2. ")[0]
        obs = prompt.rsplit(" | O1: ", 1)[1]
        assert (instruction, obs, answer, 1.0) in at_turns, (i, prompt, answer, at_turns)


def test_corpus_turn_decisions_are_one_opening_decision_never_an_episode():
    corpus = navigation_corpus(2000, seed=1)
    items = _turn_decisions(corpus)
    for _, mode, prompt, answer in items:
        _, instructions, obs = prompt.split(" | ")
        # one turn and the walk to its landmark (the destination): never a route of the task's length
        assert instructions.startswith("1. turn ") and " 2. forward to " in instructions and " 3. " not in instructions
        assert instructions.endswith(", stop.") and instructions.count(" turn ") + 1 == 1 + CORPUS_DIALOGUE_TURNS
        assert obs.startswith("O1: int")  # the opening observation (a turning intersection), no later one
        assert answer.startswith(("turn ", "1. turn "))  # a turn decision, never forward or stop
    prompts = {prompt for _, _, prompt, _ in items}
    for split in ("id", "ood-rule"):  # every task route has more turns; no item is an evaluation prompt
        env = Navigation(split=split)
        for k in range(300):
            env.reset(eval_seed(k))
            assert sum(item[0] == "turn" for item in env.instructions) > CORPUS_DIALOGUE_TURNS
            assert env.prompt() not in prompts


def test_corpus_is_deterministic_from_its_seed():
    a = navigation_corpus(600, seed=3)
    assert a == navigation_corpus(600, seed=3) == Navigation().base_corpus(600, 3)
    assert a[:100] == navigation_corpus(100, seed=3)  # a prefix does not depend on n
    assert a != navigation_corpus(600, seed=4)
    records = Navigation().base_corpus_records(600, 3)
    assert [("messages" in r) for r in records] == [isinstance(item, dict) for item in a]
    # the documented examples (docs/envs.md, module docstring of navigation_corpus)
    first = {mode: (prompt, answer) for _, mode, prompt, answer in reversed(_turn_decisions(navigation_corpus(50)))}
    assert first == {"mode rel": (DOC_REL, "1. turn left to W. => turn left"),
                     "mode abs": (DOC_ABS, "turn NW")}


DOC_REL = "mode rel | 1. turn left to W. 2. forward to Blue Bakery on right, stop. | O1: int, Park Gym left"
DOC_ABS = "mode abs | 1. turn right to NW. 2. forward to Park Gym on left, stop. | O1: int"


def test_restated_answers_name_the_current_instruction_and_score_only_the_action():
    env = Navigation(split="id", restate=True)
    env.reset(0)
    answers = []
    while not env.done:
        answers.append(env.expert())
        assert env.step(answers[-1]).reward == 1.0
    # seed 0's route (module docstring): the instruction being executed, then the action
    assert answers[0] == "1. turn left to W. => turn W"
    assert answers[1] == "2. forward to Park Cafe on left. => forward"
    assert answers[5] == "3. turn slightly left to SW. => turn SW"
    assert answers[-1] == "4. forward to Bay Market on left, stop. => stop"
    env.reset(0)
    # only the action after the last "=>" is scored (the paper's reward ignores the instruction
    # field); a wrong action after a right instruction is wrong; a bare action still counts
    assert env.step("9. nonsense => => turn W").reward == 1.0
    assert env.step("2. forward to Park Cafe on left. => stop").reward == -1.0
    assert env.step("forward").reward == 1.0
    bare = Navigation(split="id", restate=False)
    bare.reset(0)
    assert bare.expert() == "turn W"


def test_action_space_diagnostic_on_turns_only():
    from postlab.verifiers.navigation import action_space_used

    assert action_space_used(("turn", "west"), "absolute") == "stated"
    assert action_space_used(("turn", "west"), "relative") == "other"  # compass answer to a "mode rel" prompt
    assert action_space_used(("turn", "slightly left"), "relative") == "stated"
    assert action_space_used(("turn", "left"), "absolute") == "other"
    assert action_space_used(("forward",), "relative") == action_space_used(None, "absolute") == "neither"
    env = Navigation(split="ood-rule")
    env.reset(3)
    first = env.instructions[0][2]  # the compass word of instruction 1
    assert env.step(f"turn {first}").info["action_space"] == "other"
    assert env.step(env.expert()).info["action_space"] == "stated"
    assert env.step(env.expert()).info["action_space"] is None  # a forward position: no verdict
    assert env.diagnostics == ("action_space",)
