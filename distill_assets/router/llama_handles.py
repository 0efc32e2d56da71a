"""The two llama.cpp handles that llama-cpp-python keeps private and that LoRA switching needs (the model
for ``llama_adapter_lora_init``, the context for ``llama_set_adapters_lora``): reached here and nowhere
else, so an upgrade that renames them breaks one module."""


def model_handle(llm):
    """``llama_model *`` of a ``llama_cpp.Llama``."""
    return llm._model.model


def context_handle(llm):
    """``llama_context *`` of a ``llama_cpp.Llama``."""
    return llm._ctx.ctx
