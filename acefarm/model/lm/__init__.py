"""ACE-Step 1.5's 5 Hz language model: prompts, constrained decoding, backends, the tiny test LM."""
