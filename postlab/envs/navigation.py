"""Navigation: a procedural text city, the lab analogue of V-IRL (language variant, Chu et al. 2025).

A city is a G x G lattice of intersections, `block` steps apart, with streets in all 8
compass directions; named landmarks stand at intersection corners and mid-block. A route
is a rail of ground-truth actions (methods.md section 1): at the start
`turn_direction(first heading)`, then `forward()` steps to the next turning intersection,
`turn_direction(next heading)` there, ..., and `stop()` at the destination. Routes may pass
through intersections where they do not turn: only the landmark named in the instruction
tells the agent where to turn.

Splits: `id` (seen cities, absolute action space: the 8 compass directions), `ood-rule`
(seen cities, relative action space: left / right / slightly left / slightly right, from
the heading change: < -45 left, > 45 right, [-45, 0) slightly left, (0, 45] slightly right),
`ood-visual` (unseen cities: other layouts and landmark names from a disjoint vocabulary,
absolute actions).

Each `step` is one action. Rewards: +1 correct (the rail advances; a correct stop() ends
the episode with success), -1 wrong action, -1.5 wrong claim about being at an
intersection (paper style only: compact answers make no claim). `verify_iter` (default 2)
attempts per position; exhausting them ends the episode as a failure. The dialogue is the
observation/action history: each correct action is followed by a user turn with the next
observation.

Compact style (postlab's, for tiny models), split id, seed 0, with `restate=True`: each answer
restates the current instruction, then the action (the paper's JSON "current instruction" and
"action" fields, compacted). The default answers with the bare action ("turn W", "forward")::

    user:      mode abs | 1. turn left to W. 2. forward to Park Cafe on left. 3. turn slightly left to SW.
               4. forward to Bay Market on left, stop. | O1: int, Hill Diner right
    assistant: 1. turn left to W. => turn W
    user:      O2: int, Hill Diner left
    assistant: 2. forward to Park Cafe on left. => forward
    user:      O3: none
    ...        (forward through an intersection whose landmark is not Park Cafe)
    user:      O6: int, Park Cafe left
    assistant: 3. turn slightly left to SW. => turn SW
    ...
    user:      O9: int, Bay Market left
    assistant: 4. forward to Bay Market on left, stop. => stop

In `ood-rule` the prompt starts "mode rel" and the first answer would be "turn left" (restated:
"1. turn left to W. => turn left").

The base corpus (`navigation_corpus`) teaches the skills, never the task: direction facts,
route reading in both modes, and single turn decisions in the chat form (`turn_decision`: the
opening turn of a one-turn route cut from a corpus-seed route; the task's routes have 2-3 turns).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random

from postlab.envs.base import Env, Observation, StepResult, register_env, reject_unknown_options
from postlab.seeds import city_seed, corpus_seed
from postlab.verifiers.navigation import (COMPASS, RESTATE, SHORT, NavVerdict, action_space_used, format_action,
                                          score_action)

VEC = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))  # N, NE, ..., NW (clockwise)
SIDES = ("front", "right", "right", "right", "back", "left", "left", "left")  # by clockwise offset in 45° steps

# Disjoint vocabularies: landmark names of unseen (ood-visual) cities never occur in seen cities.
SEEN_WORDS = (("Oak", "Blue", "Red", "Sun", "Old", "Star", "Green", "Gold", "Lake", "Hill", "River", "King", "Rose",
               "Pine", "Park", "Bay"),
              ("Cafe", "Bank", "Bakery", "Hotel", "Books", "Pharmacy", "Diner", "Gym", "Market", "School", "Church",
               "Theater"))
UNSEEN_WORDS = (("Maple", "Silver", "Coral", "Moon", "Cedar", "Iron", "Amber", "Fox", "Harbor", "Crown", "Lotus",
                 "Birch", "Jade", "Echo", "Nova", "Tulip"),
                ("Museum", "Library", "Deli", "Salon", "Studio", "Florist", "Tavern", "Clinic", "Arcade", "Gallery",
                 "Bistro", "Cinema"))

SPLITS = {"id": ("seen", "absolute"), "ood-rule": ("seen", "relative"), "ood-visual": ("unseen", "absolute")}

ACTION_SPACE = {  # the authors' action-space texts
    "absolute": '"forward()": indicates moving forward one step\n"turn_direction(x)": indicates adjust the ego agent '
                "direction towards x direction. x could be any following 8 directions ['north', 'northeast', 'east', "
                "'southeast', 'south', 'southwest', 'west', 'northwest']\n\"stop()\": indicates the navigation is finished.",
    "relative": '"forward()": indicates moving forward one step\n"turn_direction(x)": indicates adjust the ego agent '
                "direction towards x direction. x could be any following ['left', 'right', 'slightly left', "
                "'slightly right']\n\"stop()\": indicates the navigation is finished.",
}
PAPER_PROMPT = """[Task Description]
You are an expert in navigation. You will receive a sequence of instructions to follow. You
are also provided with your observation and action history in text. Your goal is to first analyze the instruction and identify the next sentence to be executed.
Then, you need to provide the action to be taken based on the current observation and instruction.

[Instruction]
{instruction}

[Action space]
{action_space}

[Output]
{{
  "current observation": latest observation from the observation sequence,
  "current instruction": analyze the full instruction and identify the sentence to be executed,
  "action": the action to be taken chosen from the action space,
}}

[Observations and actions sequence]
O_1: {obs}"""


def relative_turn(src: int, dst: int) -> str:
    """The relative name of a heading change (indices into COMPASS, 45° apart)."""
    delta = ((dst - src) * 45 + 180) % 360 - 180  # in [-180, 180)
    if delta == 0 or delta == -180:
        raise ValueError("a turn must change the heading and not reverse it")
    if delta < -45:
        return "left"
    if delta > 45:
        return "right"
    return "slightly left" if delta < 0 else "slightly right"


@dataclasses.dataclass(frozen=True)
class City:
    name: str
    grid: int  # intersections per side
    block: int  # forward steps between adjacent intersections
    landmarks: dict  # (x, y) -> tuple of (name, bearing index)

    def is_intersection(self, p) -> bool:
        return p[0] % self.block == 0 and p[1] % self.block == 0 and self.inside(p)

    def inside(self, p) -> bool:
        lim = (self.grid - 1) * self.block
        return 0 <= p[0] <= lim and 0 <= p[1] <= lim


def build_city(seed: int, words: tuple, grid: int) -> City:
    rng = random.Random(f"city/{seed}/{words[0][0]}")
    block = rng.choice((2, 3))
    names = [f"{a} {b}" for a in words[0] for b in words[1]]
    rng.shuffle(names)
    lm: dict = {}
    for i in range(grid):
        for j in range(grid):
            if rng.random() < 0.85:  # corner landmarks (diagonal bearings)
                corners = rng.sample((1, 3, 5, 7), rng.choice((1, 1, 2)))
                lm[(i * block, j * block)] = tuple((names.pop(), c) for c in corners)
    for _ in range(grid * 2):  # mid-block landmarks: things seen along the way that are not turns
        x, y = rng.randrange(grid) * block, rng.randrange(grid) * block
        d, k = rng.randrange(8), rng.randrange(1, block)
        p = (x + VEC[d][0] * k, y + VEC[d][1] * k)
        if p not in lm and names:
            city = City("", grid, block, {})
            if city.inside(p) and not city.is_intersection(p):
                lm[p] = ((names.pop(), rng.randrange(8)),)
    return City(f"city{seed}", grid, block, lm)


@functools.lru_cache(maxsize=8)
def cities(kind: str, n: int, world_seed: int) -> tuple[City, ...]:
    words, grid = (SEEN_WORDS, 5) if kind == "seen" else (UNSEEN_WORDS, 6)
    return tuple(build_city(city_seed(world_seed, i, unseen=kind != "seen"), words, grid) for i in range(n))


@dataclasses.dataclass(frozen=True)
class RailStep:
    pos: tuple
    heading: int
    action: tuple  # ("turn", name) | ("forward",) | ("stop",)
    instruction: int  # index of the instruction being executed


def plan_route(rng: random.Random, city: City):
    """(initial heading, segments) with segments [(heading, path, landmark, side)], or None."""
    ints = [p for p in ((i * city.block, j * city.block) for i in range(city.grid) for j in range(city.grid))]
    start, prev = rng.choice(ints), rng.randrange(8)
    h_init, pos, visited, segs = prev, start, {start}, []
    for _ in range(rng.choice((2, 3))):
        options = [h for h in range(8) if h != prev and (h - prev) % 8 != 4]
        rng.shuffle(options)
        for h in options:
            n_steps = city.block * rng.choice((1, 2))
            path = [(pos[0] + VEC[h][0] * k, pos[1] + VEC[h][1] * k) for k in range(1, n_steps + 1)]
            end = path[-1]
            if city.inside(end) and end in city.landmarks and not visited.intersection(path):
                seen = [lm for lm in city.landmarks[end] if SIDES[(lm[1] - h) % 8] != "back"]
                name, bearing = rng.choice(seen or city.landmarks[end])  # prefer landmarks in view
                segs.append((h, path, name, SIDES[(bearing - h) % 8]))
                visited.update(path)
                pos, prev = end, h
                break
        else:
            return None
    return h_init, start, segs


@register_env("navigation")
class Navigation(Env):
    """Follow route instructions in a text city; absolute vs relative actions, seen vs unseen cities."""

    splits = tuple(SPLITS)
    styles = ("compact", "paper")
    diagnostics = ("action_space",)  # step-info categories evaluation counts on first attempts

    def __init__(self, split: str = "id", style: str = "compact", verify_iter: int = 2, max_turns: int = 200,
                 n_cities: int = 8, world_seed: int = 0, restate: bool = False, **kwargs):
        reject_unknown_options("navigation", type(self), kwargs)
        super().__init__(split=split, style=style, max_turns=max_turns)
        if verify_iter < 1:
            raise ValueError(f"navigation: verify_iter must be >= 1, got {verify_iter}")
        self.verify_iter, self.world_seed, self.n_cities = verify_iter, world_seed, n_cities
        # restate=True: compact expert answers restate the current instruction before the action,
        # as the paper's JSON answer does ("current instruction"), so the action can be copied from
        # text the model has just written. Bare actions (the default) leave the model to find the
        # k-th turn instruction in a 500-character prompt (docs/results.md measures both).
        self.restate = bool(restate)
        self.city_kind, self.space = SPLITS[split]
        n = n_cities if self.city_kind == "seen" else max(2, n_cities // 2)  # fewer unseen cities, as eval only
        self.cities = cities(self.city_kind, n, world_seed)

    # -- episode -----------------------------------------------------------------------------
    def reset(self, seed: int) -> Observation:
        city, (h_init, start, segs) = self._plan(seed)
        return self._start(city, h_init, start, segs)

    def _plan(self, seed: int) -> tuple[City, tuple]:
        """The city and route (initial heading, start, segments) of episode `seed`."""
        rng = random.Random(f"navigation/{self.split}/{seed}")
        while True:
            city = rng.choice(self.cities)
            plan = plan_route(rng, city)
            if plan is not None:
                return city, plan

    def _start(self, city: City, h_init: int, start: tuple, segs: list) -> Observation:
        """Start an episode on a planned route (`reset`; the base corpus's one-turn routes)."""
        self.city = city
        self.instructions, self.rail = self._build(h_init, start, segs)
        self.index, self.tries, self.turns, self.done, self.obs_count = 0, 0, 0, False, 1
        self.messages = [{"role": "user", "content": self.prompt()}]
        return Observation(messages=list(self.messages), info=self.episode_info())

    def _build(self, h_init: int, start: tuple, segs: list):
        instr, rail, heading, pos = [], [], h_init, start
        for k, (h, path, name, side) in enumerate(segs):
            instr.append(("turn", relative_turn(heading, h), COMPASS[h], k == 0))
            rail.append(RailStep(pos, heading, ("turn", COMPASS[h] if self.space == "absolute"
                                                else relative_turn(heading, h)), len(instr) - 1))
            last = k == len(segs) - 1
            instr.append(("go", name, side, last))
            rail += [RailStep(p, h, ("forward",), len(instr) - 1) for p in [pos] + path[:-1]]
            heading, pos = h, path[-1]
        rail.append(RailStep(pos, heading, ("stop",), len(instr) - 1))
        return instr, rail

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("navigation: episode is over; call reset(seed)")
        here = self.rail[self.index]
        verdict = self.verify(text)
        self.turns += 1
        self.messages.append({"role": "assistant", "content": text})
        success = False
        if verdict.correct:
            self.index, self.tries = self.index + 1, 0
            success = self.done = here.action == ("stop",)
        else:
            self.tries += 1
            self.done = self.tries >= self.verify_iter
        truncated = not self.done and self.turns >= self.max_turns
        self.done = self.done or truncated
        feedback = [] if self.done else [{"role": "user", "content": self._feedback(verdict)}]
        self.messages += feedback
        info = self.episode_info() | {"verdict": verdict.kind, "reasons": [verdict.reason] if verdict.reason else [],
                                      "gold_action": format_action(here.action), "truncated": truncated,
                                      "action_space": (action_space_used(verdict.action, self.space)
                                                       if here.action[0] == "turn" else None)}
        return StepResult(feedback=feedback, reward=verdict.reward, done=self.done, success=success, info=info)

    def verify(self, text: str) -> NavVerdict:
        here = self.rail[self.index]
        return score_action(text, here.action, self.city.is_intersection(here.pos))

    def expert(self) -> str:
        here = self.rail[self.index]
        if self.style == "compact":
            action = format_action(here.action, "compact")
            if not self.restate:
                return action
            return f"{here.instruction + 1}. {self.instruction_text(here.instruction)}{RESTATE}{action}"
        return ('{\n  "current observation": ' + json.dumps(self.observation(here)) +
                ',\n  "current instruction": ' + json.dumps(self.instruction_text(here.instruction)) +
                ',\n  "action": ' + json.dumps(format_action(here.action)) + "\n}")

    # -- texts ------------------------------------------------------------------------------------
    def observation(self, step: RailStep) -> str:
        parts = []
        if self.city.is_intersection(step.pos):
            parts.append("int" if self.style == "compact" else "You observe an intersection")
        for name, bearing in self.city.landmarks.get(step.pos, ()):
            side = SIDES[(bearing - step.heading) % 8]
            parts.append(f"{name} {side}" if self.style == "compact" else f"{name} is on your {side}")
        if self.style == "compact":
            return ", ".join(parts) or "none"
        return ". ".join(parts or ["No landmarks nearby"]) + "."

    def instruction_text(self, k: int) -> str:
        item = self.instructions[k]
        if self.style == "compact":
            if item[0] == "turn":
                return f"turn {item[1]} to {SHORT[item[2]]}."
            return f"forward to {item[1]} on {item[2]}{', stop' if item[3] else ''}."
        if item[0] == "turn":
            return f"{'First, turn' if item[3] else 'Turn'} {item[1]} to face {item[2]}."
        where = "destination" if item[3] else "next intersection"
        return f"Move forward until you reach {where} where {item[1]} is on your {item[2]}."

    def prompt(self) -> str:
        obs = self.observation(self.rail[0])
        lines = [f"{k + 1}. {self.instruction_text(k)}" for k in range(len(self.instructions))]
        if self.style == "compact":
            mode = "abs" if self.space == "absolute" else "rel"
            return f"mode {mode} | {' '.join(lines)} | O1: {obs}"
        return PAPER_PROMPT.format(instruction="\n".join(lines), action_space=ACTION_SPACE[self.space], obs=obs)

    def _feedback(self, verdict: NavVerdict) -> str:
        if not verdict.correct:
            if self.style == "compact":
                return "wrong, retry"
            return (f"You failed this trial because {verdict.reason}. "
                    "Please avoid this action and try again in the same format.")
        self.obs_count += 1
        obs = self.observation(self.rail[self.index])
        return f"O{self.obs_count}: {obs}" if self.style == "compact" else f"O_{self.obs_count}: {obs}"

    def episode_info(self) -> dict:
        return {"city": self.city.name, "position": self.index, "route_length": len(self.rail),
                "action_space": self.space, "split": self.split}

    def landmark_names(self) -> set[str]:
        return {name for c in self.cities for lms in c.landmarks.values() for name, _ in lms}

    def base_corpus(self, n: int, seed: int = 0) -> list[str | dict]:
        return navigation_corpus(n, seed, self.world_seed, self.n_cities)


CORPUS_DIALOGUE_TURNS = 1  # turn instructions in a corpus dialogue's route; the task's routes have 2-3


def turn_decision(env: Navigation, route_seed: int, rng: random.Random) -> dict:
    """A turn decision in the task's chat form, on a one-turn route: never an episode of the task.

    Route `route_seed` of `env`'s split (a corpus seed) is cut down to one of its turns and the
    walk to that turn's landmark, which becomes the destination: a two-instruction route starting
    at the turning intersection, with the heading the walker arrives with. The user turn is the
    env's own opening prompt for it (mode, instructions, first observation) and the assistant turn
    the env's expert answer (bare or restated, as `env.restate`). The task's routes have 2-3
    turns, so this prompt is never one of its episodes, and only the opening decision is shown."""
    city, (h_init, start, segs) = env._plan(route_seed)
    k = rng.randrange(len(segs))
    heading, pos = (h_init, start) if k == 0 else (segs[k - 1][0], segs[k - 1][1][-1])
    obs = env._start(city, heading, pos, [segs[k]])
    assert sum(item[0] == "turn" for item in env.instructions) == CORPUS_DIALOGUE_TURNS
    return {"messages": [dict(m) for m in obs.messages] + [{"role": "assistant", "content": env.expert()}]}


def navigation_corpus(n: int, seed: int = 0, world_seed: int = 0, n_cities: int = 8) -> list[str | dict]:
    """Compass and relative-direction facts, and route reading in both action spaces; never an episode.

    Relative OOD needs the mapping (heading, new heading) -> left/right/slightly ...; an
    ID-trained model has only ever answered with compass names. Route reading ("mode rel |
    1. turn right to S. ... | turns: turn right, then turn slightly left") is the reading skill
    a pre-trained LLM brings: which turn words an instruction list asks for, in each mode. Turn
    decisions (chat records, `turn_decision`) show the same reading in the task's dialogue form,
    so that a relative turn has been answered in the assistant position: the opening turn of a
    one-turn route ("mode rel | 1. turn left to W. 2. forward to Blue Bakery on right, stop. |
    O1: int, Park Gym left" -> "turn left" or "1. turn left to W. => turn left"). All items
    use seen cities only (unseen landmark names stay unseen); none shows a forward/stop
    decision, feedback or a second observation, and none a route of the task's length.

    Shares: route reading 30%, turn decisions 10% (half "mode rel", half "mode abs"; half bare,
    half restated answers), facts and action-space lines the rest. Items are `str` (text) and
    `dict` (``{"messages": ...}``); deterministic from `seed`."""
    if n < 0:
        raise ValueError(f"base_corpus: n must be >= 0, got {n}")
    rng = random.Random(f"navigation-corpus/{seed}")
    readers = {space: Navigation(split=split, world_seed=world_seed, n_cities=n_cities)
               for space, split in (("abs", "id"), ("rel", "ood-rule"))}
    talkers = {(space, restate): Navigation(split=split, world_seed=world_seed, n_cities=n_cities, restate=restate)
               for space, split in (("abs", "id"), ("rel", "ood-rule")) for restate in (False, True)}
    out: list[str | dict] = []
    for i in range(n):
        a, b = rng.randrange(8), rng.randrange(8)
        r = rng.random()
        if r < 0.3:
            env = readers[rng.choice(("abs", "rel"))]
            env.reset(corpus_seed(seed, i))  # the corpus seed range: never a training or evaluation route
            head = env.prompt().rsplit(" | O1:", 1)[0]
            turns = [format_action(st.action, "compact") for st in env.rail if st.action[0] == "turn"]
            out.append(f"{head} | turns: {', then '.join(turns)}")
        elif r < 0.4:
            space = rng.choice(("abs", "rel"))  # the only draw from the shared stream, as route reading
            own = random.Random(f"navigation-corpus/{seed}/{i}")
            out.append(turn_decision(talkers[space, own.random() < 0.5], corpus_seed(seed, i), own))
        elif a == b or (a - b) % 8 == 4:
            out.append(f"from {SHORT[COMPASS[a]]} to {SHORT[COMPASS[b]]} is {'no turn' if a == b else 'a U-turn'}.")
        elif r < 0.65:
            out.append(f"from {SHORT[COMPASS[a]]} to {SHORT[COMPASS[b]]} is {relative_turn(a, b)}.")
        elif r < 0.82:
            out.append(f"Facing {COMPASS[a]}, turning {relative_turn(a, b)} to face {COMPASS[b]} is a "
                       f"{abs(((b - a) * 45 + 180) % 360 - 180)} degree turn.")
        elif r < 0.9:
            nxt = COMPASS[(a + 1) % 8]
            out.append(f"{SHORT[COMPASS[a]]} is {COMPASS[a]}. Clockwise after {COMPASS[a]} comes {nxt}.")
        elif r < 0.95:
            out.append("mode abs: turn to a compass direction, like turn N, turn NE or turn SW; then forward or stop.")
        else:
            out.append("mode rel: turn left, turn right, turn slightly left or turn slightly right; "
                       "then forward or stop.")
    return out


__all__ = ["Navigation", "City", "cities", "relative_turn", "navigation_corpus", "turn_decision"]
