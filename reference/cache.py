"""The activation cache: every named point of a forward pass, and how a forward pass records it.

A forward pass takes a `record(name, array) -> array` callable and calls it on each value as it
computes it; `no_record` (the default) gives the value back and keeps nothing, so the maths is
written once, in the forward pass, whether anyone looks or not. `scope(record, "blocks.3.")`
prefixes the names a block records. `run_with_hooks` (reference/model.py, trainer/model.py)
passes `hook_recorder`'s recorder, which runs the caller's hooks and may keep every array in a
dict; whatever a recorder returns is the value the forward pass goes on with, so a hook changes
everything downstream of its point (the KV cache included) and nothing upstream.

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


def check_point_names(names, n_layers):
    """ValueError naming the first of `names` that is no point of an n_layers model."""
    known = set(point_names(n_layers))
    for name in names:
        if name not in known:
            raise ValueError(f"no point named {name!r} in a {n_layers}-block model "
                             f"(names: reference/cache.py's points({n_layers}))")


def hook_recorder(hooks, n_layers, run_hook, kept=None):
    """A recorder that, at each point with a hook, goes on with run_hook(hooks[name], name, value),
    and puts every value after its hook into `kept` (a dict, or None to keep nothing).

    run_hook is the model's: it calls hook(value, name) and returns the value itself when the hook
    returns None, else the replacement in the model's dtype, its shape checked by
    check_replacement. Names outside the points of an n_layers model raise before anything runs.
    >>> kept = {}
    >>> record = hook_recorder({"embed": lambda v, n: v + 1}, 1, lambda hook, name, v: hook(v, name), kept)
    >>> record("embed", 1.0), record("logits", 5.0), kept
    (2.0, 5.0, {'embed': 2.0, 'logits': 5.0})
    >>> hook_recorder({"blocks.1.attn.z": print}, 1, run_hook=None)
    Traceback (most recent call last):
    ValueError: no point named 'blocks.1.attn.z' in a 1-block model (names: reference/cache.py's points(1))
    """
    check_point_names(hooks, n_layers)
    for name, hook in hooks.items():
        if not callable(hook):
            raise ValueError(f"the hook at {name} is of type {type(hook).__name__}, not a function fn(value, name)")

    def record(name, value):
        if name in hooks:
            value = run_hook(hooks[name], name, value)
        if kept is not None:
            kept[name] = value
        return value

    return record


def check_replacement(name, new_shape, shape):
    """Raise the error that names the point and both shapes unless a hook's replacement has the
    point's shape (a broadcastable one would hide a mistake, so none is accepted).
    >>> check_replacement("blocks.0.attn.z", (4, 7), (4, 7, 8))
    Traceback (most recent call last):
    ValueError: the hook at blocks.0.attn.z returned shape (4, 7); the point's shape is (4, 7, 8)
    """
    if tuple(new_shape) != tuple(shape):
        raise ValueError(f"the hook at {name} returned shape {tuple(new_shape)}; the point's shape is {tuple(shape)}")


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


def position_axis(name):
    """The axis of point `name` that runs over positions (the queries' for scores and pattern).
    >>> position_axis("blocks.3.attn.scores"), position_axis("logits")
    (1, 0)
    """
    inner = name.split(".", 2)[2] if name.startswith("blocks.") else name
    symbols = {point: shape for point, shape, _ in (*FIRST_POINTS, *BLOCK_POINTS, *LAST_POINTS)}[inner]
    return symbols.split().index("T")
