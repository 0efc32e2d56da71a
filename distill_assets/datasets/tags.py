"""The span markers of stage-4 completions. Kept apart so the training process imports no table code."""

REASONING_TAG, PLAN_TAG = "[REASONING]", "[PLAN]"
