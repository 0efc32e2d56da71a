"""router/plan_decoder.py: stage-4 plans written segment by segment, each under a grammar made from what was
written before it, so that their bookkeeping (mutual edges into the plan, no duplicates, the execution order)
is right as written. The writer's state on its own, its grammars through llama.cpp's parser, and the real
SmolLM2 (base and with a stage adapter) writing plans that the validator accepts."""

import json

import pytest
from llama_cpp import LlamaGrammar, LogitsProcessorList

from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.prompts.student import decoding, parse_student_output
from distill_assets.router.engine import StageEngine, StringCap
from distill_assets.router.plan_decoder import PlanSpec, PlanWriter, decode_plan, jlit, lit, name_not_in

NOT_BOOKKEEPING = {"code_in_plan", "add_existing_symbol"}  # what the decoder leaves to the model


def change(symbol, action="modify", depends_on=(), depended_by=()):
    return json.dumps(
        {
            "symbol": symbol,
            "action": action,
            "description": "d",
            "depends_on": list(depends_on),
            "depended_by": list(depended_by),
        },
        separators=(",", ":"),
    )


def compiles(grammar: str) -> str:
    LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp's own parser: raises on a bad grammar
    return grammar


def test_a_promise_forces_the_edge_back_and_keeps_the_plan_open_until_it_is_kept():
    w = PlanWriter(PlanSpec(paths=["a.py", "b.py"], symbols={"a.py": ["f", "g"], "b.py": ["h"]}))
    compiles(w.head_grammar())
    assert jlit("a.py") in compiles(w.file_grammar()) and jlit("b.py") in w.file_grammar()
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    assert jlit("a.py") not in compiles(w.file_grammar())  # a file is written once
    g = compiles(w.change_grammar())
    assert jlit("f") in g and jlit("b.py:h") in g and jlit("b.py:<module>") in g
    # what may follow a change: with no promise, another change, another file or the list's end; with a
    # promise into b.py, not the list's end; with one into a.py itself, only another change
    assert w._separators("f", False, False) == [",", "]},", "]}]"]
    assert w._separators("f", False, True) == [",", "]},"]
    assert w._separators("f", True, False) == [","]
    assert w.take_change(change("f", depended_by=["b.py:h"]) + "]},") == "file"
    assert jlit("f") not in compiles(w.file_grammar())
    w.take_file('{"path":"b.py","role":"supporting","changes":[')
    g = compiles(w.change_grammar())
    assert jlit("h") in g and lit('["a.py:f"]') in g  # h depends on exactly what promised it
    assert w._separators("h", False, False) == [",", "]}]"]  # no path left for another file
    assert w.take_change(change("h", depends_on=["a.py:f"]) + "]}]") == "order"
    # b.py depends on a.py: only a.py may come first, then b.py closes the order
    g = compiles(w.order_grammar())
    assert lit("a.py") in g and "b.py" not in g
    assert not w.take_order(',"execution_order":["a.py","')
    assert lit("b.py") in compiles(w.order_grammar())
    assert w.take_order('b.py"]')
    assert w.ordered == ["a.py", "b.py"]
    compiles(w.tail_grammar())


def test_a_file_with_a_promise_into_itself_cannot_close_and_its_last_slots_go_to_the_promises():
    spec = PlanSpec(paths=["a.py"], symbols={"a.py": ["f", "g", "k"]}, max_changes=2)
    w = PlanWriter(spec)
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    assert w.take_change(change("f", depended_by=["a.py:k"]) + ",") == "change"
    assert w._separators("g", False, False) == [","]  # had g come instead of k, k would still be owed
    g = compiles(w.change_grammar())  # one slot left, and it is k's
    assert jlit("k") in g and jlit("g") not in g and "new-name" not in g
    assert w._separators("k", False, False) == ["]}]"]  # the file is full, no promise is open, no path is left
    assert w.take_change(change("k", depends_on=["a.py:f"]) + "]}]") == "order"


def test_out_of_budget_a_file_with_promises_into_it_takes_only_the_promised_changes():
    # the click failures: a file opened by a promise took new adds until it was full, and the plan ran out
    spec = PlanSpec(paths=["a.py", "b.py"], symbols={"a.py": ["f"], "b.py": ["h", "k"]})
    w = PlanWriter(spec)
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    w.take_change(change("f", depended_by=["b.py:k"]) + "]},")
    w.take_file('{"path":"b.py","role":"supporting","changes":[')
    g = compiles(w.change_grammar())  # with budget left: any symbol, or a new name
    assert jlit("h") in g and "new-name" in g
    w.closing = True
    g = compiles(w.change_grammar())
    assert jlit("k") in g and jlit("h") not in g and "new-name" not in g
    assert w._separators("k", False, False) == ["]}]"]  # nothing new after it: the plan closes
    # a file with nothing owed still takes one change, and then closes
    w = PlanWriter(spec)
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    w.closing = True
    assert jlit("f") in compiles(w.change_grammar()) and w._separators("f", False, False) == ["]}]"]


def test_where_the_model_would_repeat_a_change_or_file_the_writer_offers_only_the_closings_it_allows():
    w = PlanWriter(PlanSpec(paths=["a.py", "b.py"], symbols={"a.py": ["f", "g"], "b.py": ["h"]}))
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    assert w.take_change(change("f") + ",") == "change"
    # the model, left alone after the ",", would write f again: a repeat; g or a new name is not
    assert w.wants_out(' {"symbol": "f", "action"', "change")
    assert not w.wants_out('{"symbol":"g","action"', "change") and not w.wants_out('{"symbol":"f2"', "change")
    assert not w.wants_out('{"symbol":"f', "change")  # a name not finished within the peek: not judged
    # it would open another file or end the list: it wants the file closed
    assert w.wants_out('{"path":"b.py","role"', "change") and w.wants_out("]}],", "change")
    assert not w.wants_out('"depends_on":[', "change")  # what the model would write is no plan: not judged
    assert w.closings() == ["]},", "]}]"]
    assert w.retake("]},") == "file" and w.current is None
    assert w.wants_out('{"path":"a.py","role"', "file") and not w.wants_out('{"path":"b.py"', "file")
    # a promise into b.py keeps the plan open: the file may close, the file list may not
    w.take_file('{"path":"b.py","role":"supporting","changes":[')
    w = PlanWriter(PlanSpec(paths=["a.py", "b.py"], symbols={"a.py": ["f", "g"], "b.py": ["h"]}))
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    w.take_change(change("f", depended_by=["b.py:h"]) + ",")
    assert w.closings() == ["]},"]
    # a promise into this file keeps the file open: no closing at all
    w = PlanWriter(PlanSpec(paths=["a.py"], symbols={"a.py": ["f", "g"]}))
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    w.take_change(change("f", depended_by=["a.py:g"]) + ",")
    assert w.closings() == []


def test_new_names_are_identifiers_other_than_the_files_symbols_and_what_was_written():
    g = compiles("root ::= n\n" + name_not_in(["pad", "padding", "p", "<module>"], "n"))
    assert g.count("::=") > 4
    w = PlanWriter(PlanSpec(paths=["a.py"], symbols={"a.py": ["pad"]}))
    w.take_file('{"path":"a.py","role":"primary","changes":[')
    w.take_change(change("pad_v2", action="add") + ",")
    assert "new-name" in compiles(w.change_grammar())


def test_the_spec_binds_each_shown_symbol_to_its_file(sample_prompts, sample_inputs):
    _, ctx, _ = sample_inputs
    for p in sample_prompts["plan_generation"]:
        spec = PlanSpec.from_schema(p.schema, list(ctx[p.task_id]["symbols"] or []))
        rows = {(r["path"], r["name"]) for r in ctx[p.task_id]["symbols"] or []}
        assert spec.paths and spec.symbols
        assert all((path, s) in rows for path, names in spec.symbols.items() for s in names)
        loose = PlanSpec.from_schema(p.schema)  # without the rows: every shown symbol in every file
        assert set(loose.symbols) == set(spec.paths)
        # the decoder is opt-in: students decode stage 4 under the one plan grammar unless asked
        assert set(decoding("plan_generation", p.schema)) == {"grammar"}


@pytest.mark.parametrize("system", ["base", "adapter"])
def test_smollm2_writes_plans_whose_bookkeeping_is_valid_as_written(
    tmp_path, system, smollm2_gguf, stage_ggufs, sample_prompts, sample_inputs
):
    _, ctx, _ = sample_inputs
    engine = StageEngine(n_ctx=4096, n_threads=2, runtime_dir=tmp_path / "rt")
    try:
        if system == "adapter":
            base, adapter, sha = stage_ggufs["plan_generation"]
            engine.load_adapter("plan_generation", base, adapter, sha)
            llm = engine.use("plan_generation")
        else:
            llm = engine.use_base(str(smollm2_gguf))
        finished = closed = 0
        for p in sample_prompts["plan_generation"]:
            c = ctx[p.task_id]
            spec = decoding("plan_generation", p.schema, list(c["symbols"] or []), bookkeeping=True)["plan"]
            d = decode_plan(
                llm,
                p.messages,
                spec,
                max_tokens=1400,
                repeat_penalty=1.15,
                logits_processor=lambda: LogitsProcessorList([StringCap(llm, 80)]),
            )
            assert d.error in (None, "length"), d.error
            closed += d.closed_on_repeat
            if d.error:
                continue
            finished += 1
            # the segments chained on the model's own token stream: the text is what the tokens say
            assert llm.detokenize(list(llm.input_ids[d.tokens_in : llm.n_tokens])).decode() == d.text
            parsed, err = parse_student_output("plan_generation", d.text)
            assert err is None, (err, d.text[-300:])
            report = validate_plan(parsed.plan, PlanContext.from_rows(c["file_tree"], c["symbols"] or []))
            assert set(report.codes) <= NOT_BOOKKEEPING, [str(v) for v in report.violations]
            assert parsed.plan.execution_order and sorted(parsed.plan.execution_order) == sorted(
                f.path for f in parsed.plan.affected_files
            )
        assert finished >= 2, f"only {finished} of the sample's plans finished within 1,400 tokens"
        if system == "base":  # the base repeats itself on every sample task (closings taken back and re-chosen)
            assert closed > 0
    finally:
        engine.close()


def test_the_string_cap_leaves_long_enumerated_paths_and_edges_whole(tmp_path, smollm2_gguf, sample_prompts):
    """Through the engine: a path or symbol longer than the string cap is written whole (the cap cutting one
    inside the grammar's enumeration would leave no token the grammar allows), while free text is capped."""
    long_path = "src/package/subpackage/module_name.py"  # both longer than the cap of 20 characters
    spec = PlanSpec(paths=[long_path], symbols={long_path: ["SomeClass.some_method_name"]})
    engine = StageEngine(n_ctx=4096, n_threads=2, runtime_dir=tmp_path / "rt")
    try:
        llm = engine.use_base(str(smollm2_gguf))
        c = engine.complete(
            llm, sample_prompts["plan_generation"][0].messages, max_tokens=1400, max_string_chars=20, plan=spec
        )
        assert engine.grammar_stats.dead_ends == 0
        parsed, err = parse_student_output("plan_generation", c.text)
        assert err is None and parsed.plan.affected_files[0].path == long_path, (err, c.text[-300:])
        assert all(len(c.description) <= 24 for f in parsed.plan.affected_files for c in f.changes)
    finally:
        engine.close()
