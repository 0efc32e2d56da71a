"""Decoding under a grammar that checks the best few tokens per step instead of the whole vocabulary.

llama-cpp-python's sampler chain (logits processors, penalties, grammar, then greedy or top-k ... dist)
applies the grammar to every one of SmolLM2's ~49k candidates at every step: on the CPU that costs about as
much as the 135M model's own forward pass (``bench/results/student_decoding.md``). What follows the grammar
only ever looks at the best allowed tokens: the argmax (greedy) or the ``top_k`` best (sampling). So these
samplers, which take the place of grammar + greedy / grammar + top-k in the chain, offer the grammar the
best ``SCAN`` tokens of the unmasked logits, best first, and mask the whole vocabulary only when too few of
those are allowed (llama.cpp's common sampler checks the argmax first in the same way). The chain downstream
sees the same candidates in the same order, so the tokens chosen are the same, with the same seed when
sampling. The one difference: among tokens with exactly equal logits, ties break by vocabulary position.
"""

import ctypes
import math
from dataclasses import dataclass

import numpy as np

from distill_assets.router.llama_handles import sampler_init_hook, vocab_handle

SCAN = 1024  # unmasked candidates offered to the grammar before it masks the whole vocabulary


@dataclass
class GrammarStats:
    """Steps decoded under a grammar: answered by the argmax alone, from the best ``SCAN``, or only after
    masking the whole vocabulary."""

    steps: int = 0
    argmax: int = 0
    scan: int = 0
    full_masks: int = 0
    dead_ends: int = 0  # no token of the vocabulary allowed (e.g. a logits processor left only ones it forbids)


class _GrammarFirst:
    """A llama.cpp sampler (its C interface filled from Python) that owns a grammar sampler."""

    def __init__(self, llm, grammar, stats: GrammarStats):
        import llama_cpp

        self._lc, self.stats = llama_cpp, stats
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            vocab_handle(llm), grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self.grammar:
            raise ValueError("llama.cpp rejected the grammar")
        self._few = (llama_cpp.llama_token_data * SCAN)()
        self._few_arr = llama_cpp.llama_token_data_array(data=self._few, size=1, selected=-1)
        self._few_np = np.ctypeslib.as_array(self._few)
        # the callbacks must stay referenced as long as llama.cpp may call them
        self._cbs = (
            llama_cpp.llama_sampler_i_apply(lambda _s, cur_p: self.apply(cur_p)),
            llama_cpp.llama_sampler_i_accept(lambda _s, token: self.accept(token)),
            llama_cpp.llama_sampler_i_reset(lambda _s: self.reset()),
        )
        self._iface = llama_cpp.llama_sampler_i(apply=self._cbs[0], accept=self._cbs[1], reset=self._cbs[2])
        self.sampler = llama_cpp.llama_sampler(iface=ctypes.pointer(self._iface), ctx=None)

    dead = False  # the grammar allowed nothing: it stops constraining (llama.cpp would abort the process)

    def apply(self, cur_p) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        if not self.dead:
            self._lc.llama_sampler_accept(self.grammar, token)

    def reset(self) -> None:
        self.dead = False
        self._lc.llama_sampler_reset(self.grammar)

    def _allowed(self, data, positions: np.ndarray) -> np.ndarray:
        """Which of ``positions`` (indices into ``data``) hold a token the grammar allows now."""
        n = len(positions)
        few = self._few_np[:n]
        few["id"], few["logit"], few["p"] = data["id"][positions], data["logit"][positions], 0.0
        self._few_arr.size, self._few_arr.selected, self._few_arr.sorted = n, -1, False
        self._lc.llama_sampler_apply(self.grammar, ctypes.byref(self._few_arr))
        return few["logit"] != -math.inf

    def _mask_all(self, cur_p) -> None:
        """The grammar over the whole vocabulary. When it allows no token at all, the logits are left as they
        were and the grammar stops constraining this generation: accepting a token it forbids would abort
        the process (llama-grammar.cpp), and the answer, unconstrained from here, fails to parse as one row."""
        self.stats.full_masks += 1
        if self.dead:
            return
        cur = cur_p.contents
        data = np.ctypeslib.as_array(cur.data, shape=(cur.size,))
        before = data["logit"].copy()
        self._lc.llama_sampler_apply(self.grammar, cur_p)
        if np.isneginf(data["logit"]).all():
            data["logit"] = before
            self.dead = True
            self.stats.dead_ends += 1

    def free(self) -> None:
        if self.grammar:
            self._lc.llama_sampler_free(self.grammar)
            self.grammar = None


def _best_first(logits: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` highest logits, best first, ties by position (as ``np.argmax``)."""
    top = np.argpartition(-logits, m - 1)[:m] if m < len(logits) else np.arange(len(logits))
    return top[np.lexsort((top, -logits[top]))]


class GreedyGrammarSampler(_GrammarFirst):
    """Grammar + greedy: selects the best allowed token."""

    def apply(self, cur_p) -> None:
        cur = cur_p.contents
        data = np.ctypeslib.as_array(cur.data, shape=(cur.size,))
        logits = data["logit"]
        self.stats.steps += 1
        best = int(np.argmax(logits))
        if self.dead:
            pass
        elif self._allowed(data, np.array([best]))[0]:
            self.stats.argmax += 1
        else:
            top = _best_first(logits, min(SCAN, cur.size))
            ok = self._allowed(data, top)
            if ok.any():
                self.stats.scan += 1
                best = int(top[np.argmax(ok)])
            else:
                self._mask_all(cur_p)
                best = int(np.argmax(logits))
        cur.selected = best


class TopKGrammarSampler(_GrammarFirst):
    """Grammar + top-k: leaves the ``k`` best allowed tokens, best first, for the rest of the chain."""

    def __init__(self, llm, grammar, stats: GrammarStats, k: int):
        super().__init__(llm, grammar, stats)
        self.k = k

    def apply(self, cur_p) -> None:
        cur = cur_p.contents
        data = np.ctypeslib.as_array(cur.data, shape=(cur.size,))
        logits = data["logit"]
        k = min(self.k, cur.size)
        self.stats.steps += 1
        top = _best_first(logits, min(SCAN, cur.size))
        chosen = top[:k] if self.dead else top[self._allowed(data, top)][:k]
        if self.dead:
            pass
        elif len(chosen) == k:
            self.stats.scan += 1
        else:  # as grammar then top-k: the k best of the masked logits (masked ones too if fewer are allowed)
            self._mask_all(cur_p)
            chosen = _best_first(logits, k)
        data[:k] = data[chosen]  # fancy indexing copies before the write
        cur.size, cur.sorted = k, True


def _swap(chain, at: int, expected: str, new) -> bool:
    """Replace the sampler at position ``at`` of llama-cpp-python's chain (named ``expected``) by ``new``."""
    import llama_cpp

    n = llama_cpp.llama_sampler_chain_n(chain.sampler)
    if at >= n or llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(chain.sampler, at)) != expected:
        return False
    tail = [llama_cpp.llama_sampler_chain_remove(chain.sampler, at) for _ in range(n - at)]
    llama_cpp.llama_sampler_free(tail[0])
    llama_cpp.llama_sampler_chain_add(chain.sampler, ctypes.pointer(new.sampler))
    for smpl in tail[1:]:
        llama_cpp.llama_sampler_chain_add(chain.sampler, smpl)
    # llama-cpp-python takes its Python-made samplers out of the chain before freeing it; the grammar is ours
    chain.custom_samplers.append((at, new))
    chain._exit_stack.callback(new.free)
    return True


def install(llm, stats: GrammarStats, enabled=lambda: True) -> None:
    """From now on, calls of ``llm`` under a grammar, greedy or top-k sampled, use the samplers above while
    ``enabled()``; any other call (no grammar, mirostat, top_k <= 0) gets llama-cpp-python's own chain."""

    def init(original, **kw):
        grammar = kw.get("grammar")
        if grammar is None or not enabled() or kw.get("mirostat_mode", 0) != 0:
            return original(**kw)
        greedy, top_k = kw.get("temp", 0.8) == 0.0, kw.get("top_k", 40)
        if not greedy and top_k <= 0:
            return original(**kw)
        chain = original(**{**kw, "grammar": None})  # [processors], penalties, greedy | top-k, ..., dist
        at = len(chain.custom_samplers) + 1
        if greedy:
            new, name = GreedyGrammarSampler(llm, grammar, stats), b"greedy"
        else:
            new, name = TopKGrammarSampler(llm, grammar, stats, top_k), b"top-k"
        if _swap(chain, at, name, new):
            return chain
        new.free()  # a chain laid out otherwise (another llama-cpp-python): its own samplers
        chain.close()
        return original(**kw)

    sampler_init_hook(llm, init)
