"""The Llama 2 forward pass in NumPy, with a KV cache that grows with the positions used.

    h = tok_embeddings[tokens]
    for each layer:
        h = h + wo · attention(rope(wq · rmsnorm(h)), rope(wk · rmsnorm(h)), wv · rmsnorm(h))
        h = h + swiglu(rmsnorm(h))
    logits = output · rmsnorm(h)

Built from `(ModelArgs, weights)` where weights use llama2.c's state-dict names (see
`weight_shapes`). `Llama.forward(tokens, start_pos)` runs a whole prompt at once (prefill,
start_pos 0) and then one token at a time (decode), each call writing the keys and values of its
positions into the cache and attending over everything cached before them.
`Llama.run_with_hooks(tokens, hooks)` runs the same forward pass with values replaced at named
points (reference/cache.py; the forward pass records each value where it computes it and goes on
with whatever the recorder returns), and `run_with_cache(tokens)` keeps every activation.
Shapes: T new tokens, S = start_pos + T cached positions, D, H, Hkv, hd, F, V as in formats/spec.py.

Maths, read 5th of reference/'s eight, after the layers it is built from
(reference/__init__.py gives the order); reference/runtime/fast.py computes the same, fast.
"""

import dataclasses

import numpy as np

from formats.spec import LAYER_KINDS, ModelArgs, check_weights, weight_shapes
from reference.attention import attention
from reference.cache import check_replacement, hook_recorder, no_record, scope
from reference.rmsnorm import rmsnorm
from reference.rope import RopeTable, apply_rope
from reference.swiglu import swiglu

# LayerWeights field -> the tensor's name inside `layers.{i}.` (then `.weight`): the last part of
# each of formats.spec's LAYER_KINDS ("attention.wq" -> wq).
LAYER_TENSORS = {kind.rpartition(".")[2]: kind for kind in LAYER_KINDS}


@dataclasses.dataclass(frozen=True)
class LayerWeights:
    """One transformer block's tensors, named as in llama2.c."""
    attention_norm: np.ndarray      # (D,)
    wq: np.ndarray                  # (D, D)
    wk: np.ndarray                  # (kv_dim, D)
    wv: np.ndarray                  # (kv_dim, D)
    wo: np.ndarray                  # (D, D)
    ffn_norm: np.ndarray            # (D,)
    w1: np.ndarray                  # (F, D)
    w2: np.ndarray                  # (D, F)
    w3: np.ndarray                  # (F, D)


def matching_weights(args: ModelArgs, weights):
    """(shapes, weights): `weights` as a dict holding exactly the tensors of weight_shapes(args).

    A tied model may still carry `output.weight` (a torch state dict does) if it is the
    embeddings bit for bit; it is then dropped. Errors name the tensors.
    """
    shapes = weight_shapes(args)
    weights = dict(weights)
    if args.tie_embeddings and "output.weight" in weights:
        output, embeddings = weights.pop("output.weight"), weights.get("tok_embeddings.weight")
        same = output is embeddings or (isinstance(output, np.ndarray) and embeddings is not None
                                        and np.array_equal(output, embeddings))
        if not same:
            raise ValueError("tie_embeddings is set but output.weight differs from tok_embeddings.weight")
    check_weights(weights, shapes)
    return shapes, weights


def checked_weights(args: ModelArgs, weights, dtype):
    """`weights` as `dtype` arrays after checking names and shapes; errors name the tensor."""
    shapes, weights = matching_weights(args, weights)
    checked = {}
    for name, shape in shapes.items():
        # np.asarray does not copy an array that already has the dtype (a memmap stays a view).
        checked[name] = np.asarray(weights[name], dtype=dtype)
    return checked


def check_positions(args: ModelArgs, tokens, start_pos, n_cached):
    """`tokens` as a 1-D integer array after checking they fit the vocabulary and the cache:
    positions start_pos .. start_pos+T-1 must continue the cached ones and stay in max_seq_len."""
    tokens = np.asarray(tokens)
    n_tokens = tokens.shape[0] if tokens.ndim == 1 else 0
    if n_tokens == 0 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be a non-empty 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= args.vocab_size:
        raise ValueError(f"token ids must be in [0, {args.vocab_size}), got {tokens.min()}..{tokens.max()}")
    if not 0 <= start_pos <= n_cached:
        raise ValueError(f"start_pos {start_pos} would skip uncached positions (cached: {n_cached})")
    if start_pos + n_tokens > args.max_seq_len:
        raise ValueError(f"positions up to {start_pos + n_tokens} exceed max_seq_len {args.max_seq_len}")
    return tokens


class Llama:
    """Llama 2 inference for one sequence: prefill a prompt, then decode token by token.

        model = Llama(args, weights)
        logits = model.forward(prompt)                    # (V,): logits of the last prompt token
        for pos in range(len(prompt), len(prompt) + n):
            token = int(np.argmax(logits))
            logits = model.forward([token], start_pos=pos)

    `dtype` is np.float32 (as trained and shipped) or np.float64 (to study the maths without
    float32 rounding); weights, cache, activations and logits all use it.
    """

    def __init__(self, args: ModelArgs, weights, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.args = args
        w = checked_weights(args, weights, self.dtype)
        self.tok_embeddings = w["tok_embeddings.weight"]                    # (V, D)
        self.layers = [
            LayerWeights(**{field: w[f"layers.{i}.{name}.weight"] for field, name in LAYER_TENSORS.items()})
            for i in range(args.n_layers)]
        self.norm = w["norm.weight"]                                          # (D,)
        self.output = w.get("output.weight", self.tok_embeddings)            # (V, D)
        self.rope_cos, self.rope_sin = (RopeTable(args.head_dim, args.max_seq_len, args.rope_theta, self.dtype, part)
                                        for part in ("cos", "sin"))            # (S_max, hd/2), lazily
        # Room for no position yet: forward grows it (grow_cache), so a header declaring 2^31
        # positions costs only those used, not 2^31 of them before the first token.
        self.key_cache = self.empty_cache(0)                                  # (L, Hkv, S_room, hd)
        self.value_cache = self.empty_cache(0)
        self.n_cached = 0   # positions 0 .. n_cached-1 of the cache hold valid keys and values

    def forward(self, tokens, start_pos=0, all_logits=False, record=no_record):
        """Run `tokens` at positions start_pos .. start_pos+T-1 and cache their keys and values.

        tokens: (T,) ints. Positions before start_pos must be in the cache already (start_pos <=
        n_cached); starting earlier overwrites the cache from there (e.g. a new prompt at 0).
        Returns the logits of the last position, (V,), or of every position, (T, V).
        record: called as record(name, array) on every activation (reference/cache.py).
        """
        tokens = check_positions(self.args, tokens, start_pos, self.n_cached)
        end_pos = start_pos + len(tokens)

        h = record("embed", self.tok_embeddings[tokens])                     # (T,) -> (T, D)
        for i in range(self.args.n_layers):
            h = self.transformer_block(i, h, start_pos, scope(record, f"blocks.{i}."))
        self.n_cached = end_pos
        # Only the logits that are asked for: (T, D) @ (D, V) is the biggest matmul in a small model.
        h = h if all_logits else h[-1]                                        # (T, D) or (D,)
        return self.unembed(h, record)                                        # -> (T, V) or (V,)

    def empty_cache(self, room):
        """Zeros for the keys (or values) of `room` positions of every layer: (L, Hkv, room, hd)."""
        args = self.args
        return np.zeros((args.n_layers, args.n_kv_heads, room, args.head_dim), dtype=self.dtype)

    def grow_cache(self, n_positions):
        """Make key_cache and value_cache hold positions 0 .. n_positions-1, keeping the cached ones.

        S_room (their third axis) becomes max(n_positions, 2 * S_room), at most max_seq_len.
        """
        room = self.key_cache.shape[2]
        if n_positions <= room:
            return
        # At least doubling: decoding n tokens one at a time then copies O(n) positions in all,
        # not O(n^2) as growing by one position per step would.
        room = min(max(n_positions, 2 * room), self.args.max_seq_len)
        key_cache, value_cache = self.empty_cache(room), self.empty_cache(room)
        key_cache[:, :, :self.n_cached] = self.key_cache[:, :, :self.n_cached]
        value_cache[:, :, :self.n_cached] = self.value_cache[:, :, :self.n_cached]
        self.key_cache, self.value_cache = key_cache, value_cache

    def run_with_hooks(self, tokens, hooks, cache=False):
        """A forward pass of `tokens` from position 0 with values replaced at named points.

        hooks: {name of reference/cache.py: fn(value, name)}; fn gets a read-only view of the
        value and returns its replacement (the same shape; cast to the model's dtype) or None to
        keep it. Every later computation uses the replacement, the KV cache included: hooks at
        attn.k_rot and attn.v change what later decode steps attend to. Returns the logits
        (T, V), or (logits, cache) with cache=True, the cache holding the values after the hooks.
        An unknown name or a replacement of another shape raises ValueError naming the point.
        """
        kept = {} if cache else None
        record = hook_recorder(hooks, self.args.n_layers, self.run_hook, kept)
        logits = self.forward(tokens, start_pos=0, all_logits=True, record=record)
        return (logits, kept) if cache else logits

    def run_hook(self, hook, name, value):
        """hook(value, name) as the forward pass will use it (see run_with_hooks)."""
        # Read-only, so a hook that edits its argument in place fails loudly instead of
        # changing some later computations (those sharing the memory) and not others.
        view = value.view()
        view.flags.writeable = False
        new = hook(view, name)
        if new is None:
            return value
        new = np.array(new, dtype=self.dtype)           # a copy the caller cannot change later
        check_replacement(name, new.shape, value.shape)
        return new

    def run_with_cache(self, tokens):
        """(logits (T, V), cache): run_with_hooks(tokens, {}, cache=True), every activation kept.

        cache maps the names of reference/cache.py (embed, blocks.{i}.resid_pre, ..., logits) to
        arrays in the model's dtype; the logits are those forward(tokens, all_logits=True) returns.
        """
        return self.run_with_hooks(tokens, {}, cache=True)

    def unembed(self, h, record=no_record):
        """Logits read from residual stream h: output · (rmsnorm(h) * norm). (..., D) -> (..., V)."""
        return record("logits", record("final_norm", rmsnorm(h, self.norm, self.args.norm_eps)) @ self.output.T)

    def transformer_block(self, i, h, start_pos, record=no_record):
        """Pre-norm block i: h + attention(rmsnorm(h)), then + swiglu(rmsnorm(.)). (T, D) -> (T, D)."""
        layer, eps = self.layers[i], self.args.norm_eps
        h = record("resid_pre", h)
        x = record("attn_norm", rmsnorm(h, layer.attention_norm, eps))
        attn_out = self.self_attention(i, x, start_pos, scope(record, "attn."))
        h = record("resid_mid", h + record("attn_out", attn_out))
        x = record("ffn_norm", rmsnorm(h, layer.ffn_norm, eps))
        mlp_out = swiglu(x, layer.w1, layer.w2, layer.w3, scope(record, "mlp."))
        return record("resid_post", h + record("mlp_out", mlp_out))

    def self_attention(self, i, x, start_pos, record=no_record):
        """wo · attention over layer i's cache, after writing this call's keys and values to it.

        x: (T, D), the normalized residual stream at positions start_pos .. start_pos+T-1 -> (T, D).
        """
        args, layer, end_pos = self.args, self.layers[i], start_pos + x.shape[0]
        # (T, D) -> (T, heads*hd) -> (heads, T, hd): heads become a batch axis for the matmuls.
        q = record("q", (x @ layer.wq.T).reshape(-1, args.n_heads, args.head_dim).swapaxes(0, 1))
        k = record("k", (x @ layer.wk.T).reshape(-1, args.n_kv_heads, args.head_dim).swapaxes(0, 1))
        v = record("v", (x @ layer.wv.T).reshape(-1, args.n_kv_heads, args.head_dim).swapaxes(0, 1))
        cos, sin = self.rope_cos[start_pos:end_pos], self.rope_sin[start_pos:end_pos]
        q, k = record("q_rot", apply_rope(q, cos, sin)), record("k_rot", apply_rope(k, cos, sin))
        self.grow_cache(end_pos)     # all layers at once: layer 0 grows them, the others find room
        self.key_cache[i, :, start_pos:end_pos] = k                          # (Hkv, T, hd)
        self.value_cache[i, :, start_pos:end_pos] = v
        out = attention(q, self.key_cache[i, :, :end_pos], self.value_cache[i, :, :end_pos], record)
        return out.swapaxes(0, 1).reshape(-1, args.dim) @ layer.wo.T         # (H, T, hd) -> (T, D)
