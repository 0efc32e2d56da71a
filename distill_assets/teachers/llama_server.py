"""``python -m distill_assets.teachers.llama_server [llama_cpp.server options]``: llama-cpp-python's
OpenAI-compatible server, whose models decode under a grammar with the samplers of
``router/fast_grammar.py`` (the same tokens as its own chain, the grammar checked against the best
candidates first). The local teacher runs this."""

import sys

from llama_cpp.server.__main__ import main

from distill_assets.router.fast_grammar import GrammarStats, install
from distill_assets.router.llama_handles import server_model_loader_hook


def _with_fast_grammar(llm):
    install(llm, GrammarStats())
    print(f"distill: fast grammar samplers on {llm.model_path}", file=sys.stderr, flush=True)
    return llm


if __name__ == "__main__":
    server_model_loader_hook(_with_fast_grammar)
    main()
