"""The activation cache: every named point of a forward pass, and how a forward pass records it.

A forward pass takes a `record(name, array) -> array` callable and calls it on each value as it
computes it; `no_record` (the default) gives the value back and keeps nothing, so the maths is
written once, in the forward pass, whether anyone looks or not. `scope(record, "blocks.3.")`
prefixes the names a block records. `Llama.run_with_cache` (reference/model.py) and
`Transformer.run_with_cache` (trainer/model.py) pass a recorder that keeps every array in a dict.

The names, in the order a forward pass records them (T positions, H heads, Hkv kv heads, hd head
dim, D, F hidden dim, V vocab; heads first, as in reference/attention.py):

>>> from formats.spec import ModelArgs
>>> args = ModelArgs(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, hidden_dim=64)
>>> [(name, point_shape(name, args, n_tokens=7)) for name in point_names(1)][:4]
[('embed', (7, 32)), ('blocks.0.resid_pre', (7, 32)), ('blocks.0.attn_norm', (7, 32)), ('blocks.0.attn.q', (4, 7, 8))]
>>> point_names(1)[-3:], point_shape("blocks.0.attn.scores", args, 7), point_shape("blocks.0.attn.k", args, 7)
(['blocks.0.resid_post', 'final_norm', 'logits'], (4, 7, 7), (2, 7, 8))
"""

# (name inside `blocks.{i}.`, shape in the symbols above, what it is), in recording order.
BLOCK_POINTS = (
    ("resid_pre", "T D", "residual stream entering the block"),
    ("attn_norm", "T D", "rmsnorm(resid_pre) * attention_norm"),
    ("attn.q", "H T hd", "wq · attn_norm, before RoPE"),
    ("attn.k", "Hkv T hd", "wk · attn_norm, before RoPE"),
    ("attn.v", "Hkv T hd", "wv · attn_norm"),
    ("attn.q_rot", "H T hd", "q after RoPE"),
    ("attn.k_rot", "Hkv T hd", "k after RoPE"),
    ("attn.scores", "H T T", "q_rot k_rotᵀ / sqrt(hd), -inf above the diagonal"),
    ("attn.pattern", "H T T", "softmax of scores over the keys"),
    ("attn.z", "H T hd", "pattern @ v (query head h reads kv head h // (H/Hkv))"),
    ("attn_out", "T D", "wo · z, heads concatenated"),
    ("resid_mid", "T D", "resid_pre + attn_out"),
    ("ffn_norm", "T D", "rmsnorm(resid_mid) * ffn_norm"),
    ("mlp.gate", "T F", "w1 · ffn_norm"),
    ("mlp.up", "T F", "w3 · ffn_norm"),
    ("mlp.act", "T F", "silu(gate) * up"),
    ("mlp_out", "T D", "w2 · act"),
    ("resid_post", "T D", "resid_mid + mlp_out"),
)
FIRST_POINTS = (("embed", "T D", "tok_embeddings[tokens]"),)
LAST_POINTS = (("final_norm", "T D", "rmsnorm(last resid_post) * norm"),
               ("logits", "T V", "output · final_norm"))


def no_record(name, array):
    """The recorder of a plain forward pass: keeps nothing, gives `array` back."""
    return array


def scope(record, prefix):
    """A recorder that hands `prefix + name` to `record`; no_record stays no_record, so a plain
    forward pass builds no wrappers (and the torch model can tell that nobody records)."""
    if record is no_record:
        return no_record
    return lambda name, array: record(prefix + name, array)


def points(n_layers):
    """(name, shape symbols, description) of every point of an n_layers model, in recording order."""
    blocks = [(f"blocks.{i}.{name}", shape, what) for i in range(n_layers) for name, shape, what in BLOCK_POINTS]
    return [*FIRST_POINTS, *blocks, *LAST_POINTS]


def point_names(n_layers):
    """Every cache name of an n_layers model, in recording order."""
    return [name for name, _, _ in points(n_layers)]


def point_shape(name, args, n_tokens):
    """The shape of point `name` for a forward pass of `n_tokens` positions of the model `args`."""
    sizes = {"T": n_tokens, "D": args.dim, "H": args.n_heads, "Hkv": args.n_kv_heads, "hd": args.head_dim,
             "F": args.hidden_dim, "V": args.vocab_size}
    symbols = {point: shape for point, shape, _ in points(args.n_layers)}[name]
    return tuple(sizes[s] for s in symbols.split())
