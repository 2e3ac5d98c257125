"""Training, corpus and evaluation problems never meet: one module owns every seed range."""

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postlab import seeds

REPO = Path(__file__).resolve().parents[2]


def test_ranges_are_disjoint():
    spans = sorted((r.start, r.stop) for r in seeds.RANGES)
    assert all(a1 <= b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))


@settings(max_examples=300, deadline=None)
@given(run_seed=st.integers(0, 99), steps=st.integers(1, 100_000), per_step=st.integers(1, 64),
       n_expert=st.integers(1, 100_000), n_eval=st.integers(1, 100_000), corpus=st.integers(0, 99 + seeds.BASE_MIX_OFFSET))
def test_for_any_study_seed_and_step_count_the_seeds_never_meet(run_seed, steps, per_step, n_expert, n_eval, corpus):
    """The largest seed each use draws stays inside its own range (so no two uses share a seed)."""
    last_rl = seeds.rl_seed(run_seed, steps * per_step - 1)
    # the expert range keeps its historical layout (s * 100_003 + i), so it serves run seeds 0..8
    last_expert = seeds.expert_seed(run_seed % (seeds.SFT_EXPERT.max_run_seed() + 1), n_expert - 1)
    last_eval = seeds.eval_seed(n_eval - 1)
    last_corpus = seeds.corpus_seed(corpus, 99_999)
    assert last_rl in seeds.RL and seeds.rl_seed(run_seed, 0) in seeds.RL
    assert last_expert in seeds.SFT_EXPERT and last_eval in seeds.EVAL and last_corpus in seeds.CORPUS


def test_the_former_defect_rl_seed_1_versus_evaluation():
    """Before: RL drew run.seed * 1_000_000 + i, i.e. evaluation's 1_000_000 + i for seed 1."""
    rl = {seeds.rl_seed(1, i) for i in range(10_000)}
    assert not rl & {seeds.eval_seed(i) for i in range(10_000)}


def test_out_of_range_requests_fail_loudly():
    with pytest.raises(ValueError, match="problems per run seed"):
        seeds.expert_seed(0, 100_003)
    with pytest.raises(ValueError, match="outside"):
        seeds.eval_seed(1_000_000)
    with pytest.raises(ValueError, match="outside"):
        seeds.rl_seed(1000, 0)


def test_city_seeds_keep_their_values_and_never_share_a_city():
    """Moved from navigation.py unchanged: world 3's seen city 2 and unseen city 2, by hand."""
    assert seeds.city_seed(3, 2) == 3 * 100_003 + 2 == 300_011
    assert seeds.city_seed(3, 2, unseen=True) == 3 * 100_003 + 10_000 + 2 == 310_011
    seen = {seeds.city_seed(w, i) for w in range(4) for i in range(64)}
    unseen = {seeds.city_seed(w, i, unseen=True) for w in range(4) for i in range(64)}
    assert len(seen) == len(unseen) == 4 * 64 and not seen & unseen
    with pytest.raises(ValueError, match="at most 10000 cities"):
        seeds.city_seed(0, 10_000)


def _literal_seed_arithmetic(tree) -> list[int]:
    """Line numbers where code adds a big integer literal to something named like a seed."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            text = ast.unparse(node)
            big = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, int)
                   and n.value >= 100_000]
            if big and "seed" in text.lower():
                out.append(node.lineno)
    return out


def test_no_module_but_seeds_makes_problem_seeds_from_big_literals():
    """A new `seed * 1_000_000 + i` elsewhere would bring the defect back; the ranges live in postlab/seeds.py."""
    offenders = {}
    for path in (REPO / "postlab").rglob("*.py"):
        if path.name == "seeds.py":
            continue
        lines = _literal_seed_arithmetic(ast.parse(path.read_text()))
        if lines:
            offenders[str(path.relative_to(REPO))] = lines
    # known RNG mixing that picks no problem: data-order permutations (trainers/setup.py DataOrder), the sampler's
    # per-turn seed (episodes)
    allowed = {"postlab/trainers/setup.py", "postlab/rollout/episodes.py"}
    assert set(offenders) <= allowed, offenders


def _imports(path: Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
    return found


def test_studies_package_has_no_import_cycle():
    """Including imports inside functions: kinds, runner, spec, report and compute form a DAG."""
    pkg = REPO / "postlab" / "studies"
    graph = {f"postlab.studies.{p.stem}": {m for m in _imports(p, "postlab.studies")
                                           if m != f"postlab.studies.{p.stem}"}
             for p in pkg.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, ()):
            visit(dep, path + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_the_table_says_where_rasft_refreshes_draw_from():
    """Issue 29: RASFT's refresh rollouts replay its items' own problems (meta.seed, expert range)."""
    from postlab import seeds

    table = seeds.__doc__.split("=============  ")[4].split("\n", 1)[1]  # the rows, after the header rule
    rows: dict[str, str] = {}
    for line in table.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            rows[name] = line
        elif line.strip():
            rows[name] += " " + line.strip()
    assert set(rows) == {"sft_expert", "eval", "corpus", "rl"}
    assert "RASFT" in rows["sft_expert"] and "RASFT" not in rows["rl"]
    source = (Path(seeds.__file__).parent / "trainers" / "rasft.py").read_text()
    assert "rl_seed" not in source  # no new problem seed: the items' own
