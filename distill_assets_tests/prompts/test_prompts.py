import json
import re

import pytest

from distill_assets.plans.schema import MODULE
from distill_assets.prompts.builders import STAGES, build_prompt
from distill_assets.prompts.schemas import extract_json, parse_output, split_reasoning, task_schema


def test_every_stage_has_a_prompt_within_its_budget(sample_prompts):
    for stage in STAGES:
        prompts = sample_prompts[stage]
        assert len(prompts) == 3
        for p in prompts:
            assert p.messages[0]["role"] == "system" and p.messages[1]["role"] == "user"
            assert p.prompt_tokens <= 1200 + 150, (stage, p.prompt_tokens)  # budget + fixed header slack
            assert len(p.prompt_hash) == 64


def test_prompts_carry_the_code_they_need(sample_prompts):
    wrap_task = [p for p in sample_prompts["plan_generation"] if "textkit" in p.messages[1]["content"]][0]
    user = wrap_task.messages[1]["content"]
    assert "Add width parameter to wrap()" in user
    assert re.search(r"textkit/wrap.py: wrap [0-9]+-[0-9]+", user)  # the symbol index
    assert "   1 def wrap(text):" in user  # line-numbered base contents
    code = [p for p in sample_prompts["code_generation"] if "textkit" in p.messages[1]["content"]][0]
    assert '"execution_order":["textkit/wrap.py","textkit/cli.py"]' in code.messages[1]["content"]
    analysis = sample_prompts["task_analysis"][0].messages[1]["content"]
    assert "Files in the repository" in analysis


def test_budget_truncation_is_counted(sample_prompts):

    big = {"task_id": "t", "repo": "r", "description": "Change f"}
    ctx = {
        "file_tree": ["a.py"],
        "symbols": [],
        "candidates": [
            {
                "path": "a.py",
                "content": "".join(f"x{i} = {i}\n" for i in range(3000)),
                "tokens": 9000,
                "truncated": False,
            }
        ],
    }
    p = build_prompt("plan_generation", big, ctx, budget_tokens=600, chars_per_token=3.5)
    assert p.files_truncated == 1 and p.prompt_tokens <= 700
    assert "... (truncated)" in p.messages[1]["content"]


def test_task_schemas_constrain_paths_and_symbols():
    s = task_schema("symbol_selection", ["a.py", "b.py"], ["a.py", "b.py", "c.py"], {"a.py": ["f", "C.m"]})
    a_py, b_py, added = s["properties"]["symbols"]["items"]["anyOf"]  # each file's own symbols; new ones
    assert a_py["properties"]["path"]["enum"] == ["a.py"] and a_py["properties"]["symbol"]["enum"] == [
        "f",
        "C.m",
        MODULE,
    ]
    assert b_py["properties"]["path"]["enum"] == ["b.py"] and b_py["properties"]["symbol"]["enum"] == [MODULE]
    assert "add" not in a_py["properties"]["action"]["enum"] and added["properties"]["action"]["enum"] == ["add"]
    assert added["properties"]["path"]["enum"] == ["a.py", "b.py"] and "enum" not in added["properties"]["symbol"]
    for item in (a_py, added):
        assert item["additionalProperties"] is False and set(item["required"]) == {"path", "symbol", "action", "reason"}
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # llama.cpp can decode under it

    assert "root" in json_schema_to_gbnf(json.dumps(s))
    ok, err = parse_output(
        "symbol_selection",
        json.dumps({"symbols": [{"path": "a.py", "symbol": "C.m", "action": "modify", "reason": "r"}]}),
    )
    assert err is None and ok.symbols[0].symbol == "C.m"
    plan = task_schema("plan_generation", ["a.py"], ["a.py", "c.py"], {"a.py": ["f"]})
    change = plan["properties"]["plan"]["properties"]["affected_files"]["items"]["properties"]["changes"]["items"]
    existing, added = change["anyOf"]
    assert existing["properties"]["symbol"]["enum"] == ["f", MODULE]
    assert added["properties"]["action"]["enum"] == ["add"] and "enum" not in added["properties"]["symbol"]
    assert list(plan["properties"]) == ["reasoning", "plan"]  # reasoning first
    rel = task_schema("relevance", ["a.py", "b.py"], [], {})
    assert rel["properties"]["files"]["minItems"] == rel["properties"]["files"]["maxItems"] == 2


def test_parsing_answers():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! {"a": {"b": "}"}} trailing') == {"a": {"b": "}"}}
    assert extract_json('{"a": "line\nbreak"}') == {"a": "line\nbreak"}
    with pytest.raises(ValueError, match="truncated"):
        extract_json('{"a": [1, 2')
    with pytest.raises(ValueError, match="truncated"):
        extract_json('[REASONING] r\n[PLAN] {"plan": {"task_summary": "cut in the mid')  # cut inside a string
    with pytest.raises(ValueError, match="Expecting"):
        extract_json('{"a": nope} and more')  # balanced but not JSON: the decoder's own message
    content, thought = split_reasoning('<think>hmm</think>{"diff": "x"}')
    assert content == '{"diff": "x"}' and thought == "hmm"
    ok, err = parse_output("code_generation", '<think>plan</think>{"diff": "diff --git a/x b/x"}')
    assert err is None and ok.diff.startswith("diff --git")
    bad, err = parse_output(
        "task_analysis",
        json.dumps({"intent": "x", "change_kind": "nope", "scope": "multi_file", "risks": [], "planner_questions": []}),
    )
    assert bad is None and err.startswith("schema: change_kind")


@pytest.mark.parametrize("stage", ["symbol_selection", "plan_generation"])
def test_a_real_module_sized_symbol_index_and_tree_stay_within_the_budget(stage):
    """A real repository's candidate (hundreds of methods, a long file tree) used to put the whole symbol index
    in the prompt, 10x the budget: now the files share a symbol budget, the symbols the task names are kept,
    each file says how many were left out, and the prompt notes the cut."""
    task = {"task_id": "t", "repo": "r", "description": "Fix the help text of count options in format_help"}
    symbols = [
        {
            "path": "pkg/core.py",
            "name": f"Command.method_{i:03d}",
            "kind": "method",
            "start_line": 10 + 5 * i,
            "end_line": 14 + 5 * i,
        }
        for i in range(400)
    ]
    symbols.insert(
        250,
        {"path": "pkg/core.py", "name": "Command.format_help", "kind": "method", "start_line": 1300, "end_line": 1320},
    )
    symbols += [
        {"path": "pkg/types.py", "name": f"Type{i}", "kind": "class", "start_line": 3 + 20 * i, "end_line": 20 + 20 * i}
        for i in range(200)
    ]
    ctx = {
        "file_tree": [f"pkg/mod_{i}.py" for i in range(900)],
        "symbols": symbols,
        "candidates": [
            {"path": "pkg/core.py", "content": "x = 1\n" * 2000},
            {"path": "pkg/types.py", "content": "y = 2\n" * 50},
        ],
    }
    p = build_prompt(stage, task, ctx, budget_tokens=900, chars_per_token=3.5)
    user = p.messages[1]["content"]
    assert p.prompt_tokens <= 900 + 150, p.prompt_tokens
    index = user.split("Symbol index of the candidate files (name first-last line):\n")[1].split("\n\n")[0]
    assert "Command.format_help 1300-1320" in index  # named by the task
    assert index.count("pkg/core.py: ") == 1 and "pkg/types.py: Type0 3-20" in index  # both files get a share
    assert "more)" in index and any(n.startswith("symbol index: ") and "of 601 symbols left out" in n for n in p.notes)
    assert "... and " in user and "more files" in user  # the tree is cut too
    # the answer may name exactly the symbols shown (an enum that fits), not the 601 the index holds
    shown = set(re.findall(r"([A-Za-z_][\w.]*) \d+-\d+", index))
    if stage == "symbol_selection":
        allowed = {
            n
            for b in p.schema["properties"]["symbols"]["items"]["anyOf"]
            for n in b["properties"]["symbol"].get("enum", [])
        }
    else:
        change = p.schema["properties"]["plan"]["properties"]["affected_files"]["items"]["properties"]["changes"]
        allowed = set(change["items"]["anyOf"][0]["properties"]["symbol"]["enum"])
    assert allowed == shown | {MODULE} and "Command.format_help" in allowed and len(shown) < 601
    # a small index is shown whole, unchanged
    small = build_prompt(stage, task, {**ctx, "symbols": symbols[:3]}, budget_tokens=900, chars_per_token=3.5)
    assert "pkg/core.py: Command.method_000 10-14, Command.method_001 15-19" in small.messages[1]["content"]
    assert not [n for n in small.notes if n.startswith("symbol index")]


def test_a_cut_symbol_index_keeps_the_symbols_whose_words_the_task_uses():
    from distill_assets.prompts.builders import symbol_rank

    task = "fix(typing): use the same type for `param_hint` in BadParameter and its subclasses"
    syms = [
        {"name": n, "start_line": i}
        for i, n in enumerate(
            ["Abort", "echo", "Context.invoke", "BadParameter.__init__", "param_hint", "ParamType.convert"]
        )
    ]
    ranked = [s["name"] for s in sorted(syms, key=symbol_rank(task))]
    assert ranked[0] == "param_hint"  # named exactly
    assert ranked[1:3] == [
        "BadParameter.__init__",
        "ParamType.convert",
    ]  # share words with the task (bad, parameter / param, type)
    assert ranked[3:] == ["Abort", "echo", "Context.invoke"]  # the rest: top-level first, in source order


def test_stage_prompt_rows_say_why_a_task_was_not_prompted(sample_inputs):
    from distill_assets.prompts.builders import stage_prompt_rows

    tasks, ctx, plans = sample_inputs
    ids = [t["task_id"] for t in tasks.iter_rows(named=True)]
    contexts = {**ctx, ids[1]: {**ctx[ids[1]], "status": "too_large"}}
    kw = dict(budget_tokens=1200, chars_per_token=3.5)
    rows, skipped = stage_prompt_rows("plan_generation", tasks.iter_rows(named=True), contexts, plans, {ids[0]}, **kw)
    assert [r["task_id"] for r in rows] == ids[2:] and skipped == {"filtered_task": 1, "no_context": 1}
    r = rows[0]
    assert r["stage"] == "plan_generation" and json.loads(r["messages_json"])[0]["role"] == "system"
    assert json.loads(r["schema_json"])["required"] == ["reasoning", "plan"] and r["prompt_tokens"] > 0
    # stage 5 implements a reference plan: a task without a usable one is skipped, and said so
    no_plan = {k: v for k, v in plans.items() if k != ids[2]}
    rows, skipped = stage_prompt_rows("code_generation", tasks.iter_rows(named=True), ctx, no_plan, set(), **kw)
    assert ids[2] not in {r["task_id"] for r in rows} and skipped == {"no_reference_plan": 1}


def _fields(schema: dict, prefix: str = "") -> set[str]:
    """Every property path of a schema, through arrays and anyOf branches."""
    out = set()
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "array":
            out |= _fields(branch["items"], prefix + "[]")
        for name, sub in (branch.get("properties") or {}).items():
            out |= {prefix + "." + name} | _fields(sub, prefix + "." + name)
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_each_task_schema_is_its_stage_model_with_the_task_on_top(stage):
    """One source of truth: the per-task schema has exactly the pydantic model's fields, every one required,
    no extra properties anywhere; its constraints (minLength, minItems, enums of the Literal types) come along."""
    from distill_assets.prompts.schemas import STAGE_MODELS, strict_schema

    model = strict_schema(STAGE_MODELS[stage])
    assert "$defs" not in json.dumps(model) and '"title"' not in json.dumps(model)
    s = task_schema(stage, ["a.py", "b.py"], ["a.py", "b.py", "c.py"], {"a.py": ["f", "C.m"]})
    assert _fields(s) == _fields(model) and _fields(s)

    def objects(node):
        if isinstance(node, dict):
            if "properties" in node:
                yield node
            for v in node.values():
                yield from objects(v)
        elif isinstance(node, list):
            for v in node:
                yield from objects(v)

    for obj in objects(s):
        assert obj["required"] == list(obj["properties"]) and obj["additionalProperties"] is False
    if stage == "plan_generation":  # 'description' is a Change field, not an annotation to strip
        change = s["properties"]["plan"]["properties"]["affected_files"]["items"]["properties"]["changes"]["items"]
        added = change["anyOf"][1]["properties"]
        assert added["description"] == {"type": "string"} and added["symbol"]["minLength"] == 1
    if stage == "task_analysis":
        assert s["properties"]["intent"]["minLength"] == 1 and s["properties"]["risks"]["maxItems"] == 5
        assert s["properties"]["change_kind"]["enum"][0] == "feature"
