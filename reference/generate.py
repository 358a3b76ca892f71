"""The generation loop: prefill the prompt, then sample and decode one token at a time.

    for token_id in generate(model, prompt_ids, rng, max_new_tokens=50, temperature=0.8):
        ...

The model runs lazily: each new token's forward pass happens only when the caller asks for the
token after it, so stopping early costs nothing extra and the caller can time each step.

Maths, read 7th of reference/'s eight (reference/__init__.py gives the order); it runs
model.Llama and runtime.fast.FastLlama alike.
"""

from reference.sampling import sample

# The repetition penalty looks back this many tokens (llama.cpp's default --repeat-last-n).
PENALTY_WINDOW = 64


def generate(model, prompt_ids, rng, max_new_tokens, stop_ids=(), **sampling):
    """Yield new token ids until one of `stop_ids` (not yielded), `max_new_tokens` or the end of
    the context. `sampling` goes to reference.sampling.sample (temperature, top_k, top_p, min_p,
    repetition_penalty); `rng` is a seeded np.random.Generator."""
    ids = list(prompt_ids)
    budget = min(max_new_tokens, model.args.max_seq_len - len(ids))
    if budget <= 0:
        return
    logits = model.forward(ids)                                    # (V,) after the last prompt token
    for step in range(budget):
        if step:
            logits = model.forward([ids[-1]], start_pos=len(ids) - 1)
        token_id = sample(logits, rng, recent_ids=ids[-PENALTY_WINDOW:], **sampling)
        if token_id in stop_ids:
            return
        ids.append(token_id)
        yield token_id
