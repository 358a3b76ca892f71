"""The spec's recorded points of a forward pass, and a forward pass written out in float64 that
recomputes them (with any point substituted): shared by the study and hooks tests."""

import numpy as np


# The SPEC's table ("The activation cache"), written out here rather than read from reference/.
SPEC_BLOCK_POINTS = {
    "resid_pre": "T D", "attn_norm": "T D", "attn.q": "H T hd", "attn.k": "Hkv T hd", "attn.v": "Hkv T hd",
    "attn.q_rot": "H T hd", "attn.k_rot": "Hkv T hd", "attn.scores": "H T T", "attn.pattern": "H T T",
    "attn.z": "H T hd", "attn_out": "T D", "resid_mid": "T D", "ffn_norm": "T D", "mlp.gate": "T F",
    "mlp.up": "T F", "mlp.act": "T F", "mlp_out": "T D", "resid_post": "T D"}


def spec_points(args, n_tokens):
    """{name: shape} of the SPEC table for `args` and n_tokens positions, in the SPEC's order."""
    sizes = {"T": n_tokens, "D": args.dim, "H": args.n_heads, "Hkv": args.n_kv_heads, "hd": args.head_dim,
             "F": args.hidden_dim, "V": args.vocab_size}
    shape = lambda symbols: tuple(sizes[s] for s in symbols.split())  # noqa: E731
    points = {"embed": shape("T D")}
    for i in range(args.n_layers):
        points.update({f"blocks.{i}.{name}": shape(symbols) for name, symbols in SPEC_BLOCK_POINTS.items()})
    points.update({"final_norm": shape("T D"), "logits": shape("T V")})
    return points


def recompute(args, weights, tokens, substitute=None):
    """{name: value} of every SPEC point in float64, with substitute[name](value) in place of the
    value at each substituted point (the computation goes on with it)."""
    w = {name: np.asarray(array, np.float64) for name, array in weights.items()}
    substitute = substitute or {}
    values = {}
    n_tokens, hd, n_heads = len(tokens), args.head_dim, args.n_heads

    def at(name, value):
        values[name] = substitute[name](value) if name in substitute else value
        return values[name]

    def norm(x, gain):
        return x * gain / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + args.norm_eps)

    def split(x, n):                                                 # (T, n*hd) -> (n, T, hd)
        return x.reshape(n_tokens, n, hd).transpose(1, 0, 2)

    # RoPE: pair (2j, 2j+1) at position t as the complex number x[2j] + i x[2j+1], times e^{i t θ_j}.
    turn = np.exp(1j * np.outer(np.arange(n_tokens), args.rope_theta ** (-np.arange(0, hd, 2) / hd)))

    def rope(x):
        rotated = (x[..., 0::2] + 1j * x[..., 1::2]) * turn
        return np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)

    kv_of = np.arange(n_heads) // (n_heads // args.n_kv_heads)      # query head -> its kv head
    causal = np.tril(np.ones((n_tokens, n_tokens), dtype=bool))
    h = at("embed", w["tok_embeddings.weight"][np.asarray(tokens)])
    for i in range(args.n_layers):
        p = f"blocks.{i}."

        def lw(kind):
            return w[f"layers.{i}.{kind}.weight"]

        h = at(p + "resid_pre", h)
        x = at(p + "attn_norm", norm(h, lw("attention_norm")))
        q = at(p + "attn.q", split(x @ lw("attention.wq").T, n_heads))
        k = at(p + "attn.k", split(x @ lw("attention.wk").T, args.n_kv_heads))
        v = at(p + "attn.v", split(x @ lw("attention.wv").T, args.n_kv_heads))
        q, k = at(p + "attn.q_rot", rope(q)), at(p + "attn.k_rot", rope(k))
        scores = np.where(causal, np.einsum("htd,hsd->hts", q, k[kv_of]) / np.sqrt(hd), -np.inf)
        scores = at(p + "attn.scores", scores)
        e = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
        pattern = at(p + "attn.pattern", e / np.sum(e, axis=-1, keepdims=True))
        z = at(p + "attn.z", np.einsum("hts,hsd->htd", pattern, v[kv_of]))
        h = at(p + "resid_mid", h + at(p + "attn_out", z.transpose(1, 0, 2).reshape(n_tokens, -1) @ lw("attention.wo").T))
        x = at(p + "ffn_norm", norm(h, lw("ffn_norm")))
        gate, up = at(p + "mlp.gate", x @ lw("feed_forward.w1").T), at(p + "mlp.up", x @ lw("feed_forward.w3").T)
        act = at(p + "mlp.act", gate * (1 + np.tanh(gate / 2)) / 2 * up)   # silu(g) = g sigmoid(g)
        h = at(p + "resid_post", h + at(p + "mlp_out", act @ lw("feed_forward.w2").T))
    final = at("final_norm", norm(h, w["norm.weight"]))
    at("logits", final @ w.get("output.weight", w["tok_embeddings.weight"]).T)
    return values
