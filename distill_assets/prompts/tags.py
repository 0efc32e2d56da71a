"""The span markers of stage-4 answers ([REASONING] ... [PLAN] {json}). Kept apart so the training process imports
no table or prompt-building code."""

REASONING_TAG, PLAN_TAG = "[REASONING]", "[PLAN]"
