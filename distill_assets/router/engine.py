"""One llama.cpp model per base GGUF, every stage adapter loaded once, switched per stage without
reloading the model (llama.cpp's adapter API), schema-constrained JSON output."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path

from distill_assets.router.fast_grammar import GrammarStats
from distill_assets.router.fast_grammar import install as install_fast_grammar
from distill_assets.router.llama_handles import context_handle, model_handle
from distill_assets.router.plan_decoder import ENUMERATED_KEYS, PlanSpec, decode_plan
from distill_assets.router.runtime_model import Requantize, runtime_gguf


class RouterError(RuntimeError):
    """A user-facing problem: missing adapter, base/adapter mismatch, dirty or non-git repository."""


@dataclass
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float


_QUOTE_IDS: dict[tuple, object] = {}  # (model path, vocabulary size) -> ids of tokens that start with a quote


class StringCap:
    """A logits processor that closes a JSON string once it is ``limit`` characters long: it leaves only
    tokens that start with a quote, and the grammar picks the one that fits. A small model under a
    grammar otherwise fills one string until the token limit (truncated JSON). Cheap, unlike
    ``maxLength`` in the schema, which multiplies grammar states. Strings under ``free_keys`` (the diff)
    are never cut."""

    def __init__(self, llm, limit: int, free_keys: frozenset = frozenset({"diff"})):
        import numpy as np

        self.llm, self.limit, self.free_keys = llm, limit, free_keys
        self.start: int | None = None
        key = (getattr(llm, "model_path", None) or id(llm), llm.n_vocab())
        if key not in _QUOTE_IDS:  # one pass over the vocabulary per model (~0.1 s), not per call
            _QUOTE_IDS[key] = np.array(
                [i for i in range(key[1]) if llm.detokenize([i]).lstrip().startswith(b'"')], dtype=np.int64
            )
        self.quote_ids = _QUOTE_IDS[key]

    def _open_string(self, text: str) -> tuple[int, str | None] | None:
        """(length, key it belongs to) of the string being written, or None when outside a string."""
        in_str, esc, start, last_str, key = False, False, 0, "", None
        for i, ch in enumerate(text):
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str, last_str = False, text[start:i]
            elif ch == '"':
                in_str, start = True, i + 1
            elif ch == ":":
                key = last_str
            elif ch in ",{[":
                key = None if ch == "{" else key
        return (len(text) - start, key) if in_str else None

    def __call__(self, input_ids, scores):
        import numpy as np

        if self.start is None:
            self.start = len(input_ids)
        text = self.llm.detokenize(list(input_ids[self.start :])).decode("utf-8", "replace")
        state = self._open_string(text)
        if state and state[0] >= self.limit and state[1] not in self.free_keys:
            capped = np.full_like(scores, -np.inf)
            capped[self.quote_ids] = scores[self.quote_ids]
            return capped
        return scores


def _gguf_field(path: Path, key: str):
    from gguf import GGUFReader

    f = GGUFReader(str(path)).fields.get(key)
    return f.contents() if f is not None else None


class StageEngine:
    """``bases``: base GGUF path -> Llama; ``adapters``: stage -> (base path, adapter handle, sha256)."""

    def __init__(
        self,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        repeat_penalty: float = 1.15,
        fast_grammar: bool = True,
        flash_attn: bool = True,
        requantize: Requantize = "auto",
        runtime_dir: Path | None = None,
    ):
        self.n_ctx, self.n_threads, self.seed, self.repeat_penalty = n_ctx, n_threads, seed, repeat_penalty
        # greedy decoding offers the grammar the best token first (fast_grammar: same output, less CPU)
        self.fast_grammar = fast_grammar
        # prompt processing: flash attention, and a Q8_0 copy of Q4_1/Q5_1 weights (runtime_model.py)
        self.flash_attn, self.requantize, self.runtime_dir = flash_attn, requantize, runtime_dir
        self.served: dict[str, str] = {}  # base GGUF -> the file llama.cpp loaded for it
        self.grammar_stats = GrammarStats()
        self.bases: dict[str, object] = {}
        self.adapters: dict[str, tuple[str, object, str]] = {}
        self.active: dict[str, str | None] = {}  # base -> stage whose adapter is set
        self.switches = 0

    @classmethod
    def for_config(cls, cfg) -> "StageEngine":
        """The engine `distill run-task` and the evaluation use: distill.yaml's ``router`` section."""
        r = cfg.router
        return cls(
            n_ctx=r.n_ctx,
            n_threads=r.n_threads,
            flash_attn=r.flash_attn,
            requantize=r.requantize,
            runtime_dir=cfg.resolved_cache_dir() / "runtime_models",
        )

    def _base(self, base_gguf: str):
        from llama_cpp import Llama

        if base_gguf not in self.bases:
            if not Path(base_gguf).exists():
                raise RouterError(f"base model {base_gguf} does not exist")
            served = runtime_gguf(base_gguf, self.requantize, self.runtime_dir)
            self.served[base_gguf] = str(served)
            self.bases[base_gguf] = Llama(
                model_path=str(served),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                seed=self.seed,
                flash_attn=self.flash_attn,
                verbose=False,
            )
            install_fast_grammar(self.bases[base_gguf], self.grammar_stats, enabled=lambda: self.fast_grammar)
            self.active[base_gguf] = None
        return self.bases[base_gguf]

    def load_adapter(self, stage: str, base_gguf: str, adapter_gguf: str, sha256: str = "") -> None:
        import llama_cpp

        if not Path(adapter_gguf).exists():
            raise RouterError(f"stage {stage}: adapter {adapter_gguf} does not exist (materialize gguf_adapters)")
        a_arch, b_arch = (
            _gguf_field(Path(adapter_gguf), "general.architecture"),
            _gguf_field(Path(base_gguf), "general.architecture"),
        )
        if _gguf_field(Path(adapter_gguf), "general.type") != "adapter":
            raise RouterError(f"stage {stage}: {adapter_gguf} is not a GGUF adapter")
        if a_arch != b_arch:
            raise RouterError(f"stage {stage}: adapter is for {a_arch!r}, base {Path(base_gguf).name} is {b_arch!r}")
        llm = self._base(base_gguf)
        handle = llama_cpp.llama_adapter_lora_init(model_handle(llm), str(adapter_gguf).encode())
        if not handle:
            raise RouterError(
                f"stage {stage}: llama.cpp rejected adapter {Path(adapter_gguf).name} on base "
                f"{Path(base_gguf).name} (tensor names or shapes differ: base/adapter mismatch)"
            )
        self.adapters[stage] = (base_gguf, handle, sha256)

    def use(self, stage: str):
        """Activate the stage's adapter on its base (no reload); returns the Llama."""
        import llama_cpp

        if stage not in self.adapters:
            raise RouterError(f"no adapter loaded for stage {stage}")
        base, handle, _ = self.adapters[stage]
        llm = self._base(base)
        if self.active.get(base) != stage:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(1.0)
            if llama_cpp.llama_set_adapters_lora(context_handle(llm), arr, 1, scales):
                raise RouterError(f"stage {stage}: llama.cpp could not set the adapter")
            llm.reset()  # cached KV entries were computed under another adapter
            self.active[base] = stage
            self.switches += 1
        return llm

    def use_base(self, base_gguf: str):
        """The base alone, no adapter (for comparisons)."""
        import llama_cpp

        llm = self._base(base_gguf)
        if self.active.get(base_gguf) is not None:
            llama_cpp.llama_set_adapters_lora(context_handle(llm), None, 0, None)
            llm.reset()
            self.active[base_gguf] = None
        return llm

    def complete(
        self,
        llm,
        messages: list[dict],
        schema: dict | None = None,
        max_tokens: int = 512,
        max_string_chars: int | None = None,
        grammar: str | None = None,
        plan: PlanSpec | None = None,
    ) -> Completion:
        """Greedy chat completion under a JSON schema, under a GBNF ``grammar``, or for stage 4 by the plan
        decoder (``plan``: `router.plan_decoder`), in the students' tagged format (`prompts.student`)."""
        from llama_cpp import LlamaGrammar, LogitsProcessorList

        t0 = time.perf_counter()
        if plan is not None:
            # the string cap must not cut a path, symbol or edge: the grammar enumerates them, and a cut one
            # leaves the grammar no token it allows
            keep = frozenset({"diff"}) | ENUMERATED_KEYS
            cap = (lambda: LogitsProcessorList([StringCap(llm, max_string_chars, keep)])) if max_string_chars else None
            d = decode_plan(
                llm, messages, plan, max_tokens=max_tokens, repeat_penalty=self.repeat_penalty, logits_processor=cap
            )
            if d.error and d.error != "length":
                raise RuntimeError(d.error)
            return Completion(d.text, d.tokens_in, d.tokens_out, (time.perf_counter() - t0) * 1000)
        kwargs: dict = {"response_format": {"type": "json_object", "schema": schema}} if schema else {}
        if grammar:
            kwargs = {"grammar": LlamaGrammar.from_string(grammar, verbose=False)}
        if max_string_chars:
            kwargs["logits_processor"] = LogitsProcessorList([StringCap(llm, max_string_chars)])
        # greedy, with a mild repeat penalty: a small model under a grammar otherwise loops inside a string
        out = llm.create_chat_completion(
            messages=messages, temperature=0.0, max_tokens=max_tokens, repeat_penalty=self.repeat_penalty, **kwargs
        )
        usage = out.get("usage") or {}
        return Completion(
            out["choices"][0]["message"]["content"] or "",
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
            (time.perf_counter() - t0) * 1000,
        )

    def close(self) -> None:
        import llama_cpp

        for llm in self.bases.values():
            llama_cpp.llama_set_adapters_lora(context_handle(llm), None, 0, None)
        for _, handle, _ in self.adapters.values():
            llama_cpp.llama_adapter_lora_free(handle)
        self.adapters.clear()
        for llm in self.bases.values():
            llm.close()
        self.bases.clear()
