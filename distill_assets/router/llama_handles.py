"""What llama-cpp-python keeps private and the router needs: the model and context handles for LoRA
switching (``llama_adapter_lora_init``, ``llama_set_adapters_lora``), the vocabulary for grammar samplers,
and the sampler-chain constructor (``fast_grammar``). Reached here and nowhere else, so an upgrade that
renames them breaks one module."""


def model_handle(llm):
    """``llama_model *`` of a ``llama_cpp.Llama``."""
    return llm._model.model


def context_handle(llm):
    """``llama_context *`` of a ``llama_cpp.Llama``."""
    return llm._ctx.ctx


def vocab_handle(llm):
    """``llama_vocab *`` of a ``llama_cpp.Llama`` (grammar samplers are built on it)."""
    return llm._model.vocab


def sampler_init_hook(llm, wrapper) -> None:
    """Route ``llm``'s sampler-chain construction (``Llama._init_sampler``, called once per generation)
    through ``wrapper(original, **kwargs)``."""
    original = llm._init_sampler
    llm._init_sampler = lambda **kw: wrapper(original, **kw)


def server_model_loader_hook(wrapper) -> None:
    """Route llama-cpp-python's server model loading (``LlamaProxy.load_llama_from_model_settings``) through
    ``wrapper(llm)``, which may change the freshly loaded ``Llama``."""
    from llama_cpp.server import model as server_model

    load = server_model.LlamaProxy.load_llama_from_model_settings
    server_model.LlamaProxy.load_llama_from_model_settings = staticmethod(lambda settings: wrapper(load(settings)))
