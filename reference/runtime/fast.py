"""The Llama 2 forward pass arranged for speed: reference/model.py's maths, float32 only.

`FastLlama` computes what model.Llama computes, with the same interface (`forward(tokens,
start_pos, all_logits)`, `args`, `n_cached`); tests/test_fast_path.py holds the two together.
What differs is arranged for speed (the figures: docs/benchmarks.md, "The fast path's design
choices"):

- Logits only where asked: at decode the classifier (V, D) is the largest product.
- Every product goes through an Executor (executor.py), which splits large ones between threads,
  to the kernel for the weight's kind (blockwise.py): np.vecdot for one float32 token, BLAS sgemm
  for a prompt, int8 codes times block scales for quantized matrices.
- wq, wk, wv are one matrix (wqkv) and w1, w3 another (w13), stacked once at load
  (packing.stack_rows): one product each where they lie back to back (GGUF writers store wq,
  wk, wv so; load.py packs quantized matrices so), else a RowStack multiplying the runs in turn.
- A decode step runs in buffers allocated once, every op writing with `out=`, none per head.
- RoPE is one complex multiply for q and k together: pair (x[2j], x[2j+1]) read as the complex
  number x[2j] + i x[2j+1], times cos + i sin, is exactly rope.apply_rope's formula.
- Attention is one batched matmul over the kv heads (their G query heads as rows); a prompt's
  queries go in blocks of QUERY_BLOCK, each scoring only the keys it may see.

Shapes as in model.py: T new tokens, S = start_pos + T cached positions, D, H, Hkv, G = H / Hkv,
hd, F, V.

Runtime (reference/runtime/__init__.py): read reference/model.py first.
"""

import dataclasses
import functools
import math

import numpy as np

from reference.runtime.blockwise import BlockMatrix
from reference.runtime.executor import Executor
from formats.spec import ModelArgs, layer_weight
from reference.runtime.memory import zeros_on_touch
from reference.runtime.packing import row_range, stack_rows
from reference.model import LAYER_TENSORS, check_positions, matching_weights
from reference.rope import RopeTable


# Queries per block in a prompt's attention (FastLlama._attend).
QUERY_BLOCK = 64


@dataclasses.dataclass(frozen=True)
class FastLayer:
    """One block's weights as the fast path multiplies them: wq, wk, wv stacked into one matrix
    and w1, w3 into another (packing.stack_rows). wq .. w3 are row ranges of those."""
    attention_norm: np.ndarray      # (D,)
    wqkv: object                    # (D + 2*kv_dim, D): wq | wk | wv
    wo: object                      # (D, D)
    ffn_norm: np.ndarray            # (D,)
    w13: object                     # (2F, D): w1 | w3
    w2: object                      # (D, F)

    wq = property(lambda self: row_range(self.wqkv, 0, self._dim))
    wk = property(lambda self: row_range(self.wqkv, self._dim, self._dim + self._kv_dim))
    wv = property(lambda self: row_range(self.wqkv, self._dim + self._kv_dim, self.wqkv.shape[0]))
    w1 = property(lambda self: row_range(self.w13, 0, self.w13.shape[0] // 2))
    w3 = property(lambda self: row_range(self.w13, self.w13.shape[0] // 2, self.w13.shape[0]))
    _dim = property(lambda self: self.wqkv.shape[1])
    _kv_dim = property(lambda self: (self.wqkv.shape[0] - self.wqkv.shape[1]) // 2)


# The fields of model.LayerWeights that FastLayer stacks for one product each.
STACKED = {"wqkv": ("wq", "wk", "wv"), "w13": ("w1", "w3")}


class Buffers:
    """Every activation of one forward call of T tokens, allocated once (reused for T = 1).
    empty(shape, dtype) allocates the (Hkv, G, T, n_keys) scores."""

    def __init__(self, args: ModelArgs, n_tokens, n_keys, empty=np.empty):
        T, D, F, kv = n_tokens, args.dim, args.hidden_dim, args.kv_dim
        f32 = np.float32
        self.x = np.empty((T, D), f32)                  # the residual stream
        self.xn = np.empty((T, D), f32)                 # rmsnorm(x)
        self.qkv = np.empty((T, D + 2 * kv), f32)       # q | k | v, side by side per token
        self.attn = np.empty((T, D), f32)               # attention output, heads concatenated
        self.proj = np.empty((T, D), f32)               # wo or w2 output before the residual add
        self.gate_up = np.empty((T, 2 * F), f32)        # w1 x | w3 x
        self.gate = self.gate_up[:, :F]                 # w1 x, then silu(w1 x) * (w3 x)
        self.up = self.gate_up[:, F:]                   # w3 x
        self.tmp = np.empty((T, F), f32)                # silu's exp(-a) + 1
        self.scores = empty((args.n_kv_heads, args.n_heads // args.n_kv_heads, T, n_keys), f32)
        self.mean_square = np.empty((T, 1), f32)
        # Views by head, made once here rather than in every layer of every step.
        Hkv, G, hd = args.n_kv_heads, args.n_heads // args.n_kv_heads, args.head_dim
        self.qk_pairs = self.qkv[:, :D + kv].view(np.complex64).reshape(T, args.n_heads + Hkv, hd // 2)
        self.q = self.qkv[:, :D].reshape(T, Hkv, G, hd).transpose(1, 2, 0, 3)    # (Hkv, G, T, hd)
        self.k = self.qkv[:, D:D + kv].reshape(T, Hkv, hd).swapaxes(0, 1)        # (Hkv, T, hd)
        self.v = self.qkv[:, D + kv:].reshape(T, Hkv, hd).swapaxes(0, 1)
        self.heads_out = self.attn.reshape(T, Hkv, G, hd).transpose(1, 2, 0, 3)  # (Hkv, G, T, hd)


class FastLlama:
    """Llama 2 inference, float32, for one sequence: same interface and results as model.Llama
    (up to float32 rounding; see tests/test_fast_path.py).

    weights: llama2.c names -> float32 arrays (views are kept, never copied) or, for matrices,
    BlockMatrix objects (quantized weights that stay quantized; reference/runtime/load.py makes them).
    threads: how many threads share the large products (executor.Executor).
    """

    def __init__(self, args: ModelArgs, weights, threads=1):
        self.args = args
        w = _checked(args, weights)
        self.dtype = np.dtype(np.float32)
        self.tok_embeddings = w["tok_embeddings.weight"]                    # (V, D)
        self.norm = w["norm.weight"]                                          # (D,)
        self.output = w.get("output.weight", self.tok_embeddings)            # (V, D)
        self.layers = []
        for i in range(args.n_layers):
            layer = {field: w[layer_weight(i, name)] for field, name in LAYER_TENSORS.items()}
            stacked = {name: stack_rows([layer.pop(field) for field in fields]) for name, fields in STACKED.items()}
            self.layers.append(FastLayer(**layer, **stacked))
        # Compressed matrices: prompts' products split between our threads too; one token's
        # products go to helper processes, which hold these matrices (executor.py, helpers.py).
        self.executor = Executor(threads, split_prompts=any(isinstance(m, BlockMatrix) for m in w.values()),
                                 matrices=[self.output] + [m for layer in self.layers
                                                           for m in (layer.wqkv, layer.wo, layer.w13, layer.w2)])
        self.score_scale = 1 / math.sqrt(args.head_dim)       # a Python float keeps float32 float32
        # (S_max, hd/2) complex64 with real part cos and imaginary part sin, the same float32s,
        # computed as positions are reached (a header's context may be 2^31).
        self.rope = RopeTable(args.head_dim, args.max_seq_len, args.rope_theta, np.complex64, "complex")
        cache_shape = (args.n_layers, args.n_kv_heads, args.max_seq_len, args.head_dim)
        self.key_cache = zeros_on_touch(cache_shape)                         # (L, Hkv, S_max, hd)
        self.value_cache = zeros_on_touch(cache_shape)
        self.n_cached = 0
        # Reused every step; its scores span the declared context, resident as positions are used.
        self._decode = Buffers(args, 1, args.max_seq_len, empty=zeros_on_touch)

    def forward(self, tokens, start_pos=0, all_logits=False):
        """As model.Llama.forward: logits of the last position (V,), or of all (T, V)."""
        tokens = check_positions(self.args, tokens, start_pos, self.n_cached)
        with self.executor.running(len(tokens)):
            return self._forward(tokens, start_pos, all_logits)

    def _forward(self, tokens, start_pos, all_logits):
        n_tokens, end_pos = len(tokens), start_pos + len(tokens)
        b = self._decode if n_tokens == 1 else Buffers(self.args, n_tokens, end_pos)
        if isinstance(self.tok_embeddings, BlockMatrix):
            b.x[...] = self.tok_embeddings.take(tokens)                       # (T,) -> (T, D)
        else:
            np.take(self.tok_embeddings, tokens, axis=0, out=b.x)
        rope = self.rope[start_pos:end_pos, None, :]                          # (T, 1, hd/2)
        # silu's exp(-a) overflows to inf for a < -88: a / inf = -0 is the right limit (swiglu.py).
        with np.errstate(over="ignore"):
            for i, layer in enumerate(self.layers):
                self._attention(i, layer, b, rope, start_pos, end_pos)
                self._feed_forward(layer, b)
        self.n_cached = end_pos
        # Only the logits that are asked for: (T, D) @ (D, V) is the biggest matmul here.
        h = b.x if all_logits else b.x[-1:]                                   # (T or 1, D)
        hn = _rmsnorm(h, self.norm, self.args.norm_eps, b.xn[:len(h)], b.mean_square[:len(h)])
        logits = self.executor(hn, self.output)                                 # -> (T or 1, V)
        return logits if all_logits else logits[0]

    def _attention(self, i, layer, b, rope, start_pos, end_pos):
        """x += wo · attention(rope(q), rope(k), v) over layer i's cache. (T, D) -> (T, D)."""
        T, Hkv = b.x.shape[0], self.args.n_kv_heads
        xn = _rmsnorm(b.x, layer.attention_norm, self.args.norm_eps, b.xn, b.mean_square)
        self.executor(xn, layer.wqkv, out=b.qkv)                                # (T, D) -> (T, D+2kv)
        # RoPE on q and k at once: their (T, H + Hkv, hd/2) complex pairs times (T, 1, hd/2).
        np.multiply(b.qk_pairs, rope, out=b.qk_pairs)
        # Scaling q by 1/sqrt(hd) touches T*D numbers, the scores T*S per head.
        b.q *= self.score_scale
        self.key_cache[i, :, start_pos:end_pos] = b.k
        self.value_cache[i, :, start_pos:end_pos] = b.v
        if self.executor.shares_prompt(T) and Hkv >= self.executor.threads:
            self.executor.share(self._attend, [(i, b.q, b.heads_out, b.scores, start_pos, slice(h0, h1))
                                               for h0, h1 in self.executor.ranges(Hkv)])
        else:
            self._attend(i, b.q, b.heads_out, b.scores, start_pos, slice(None))
        b.x += self.executor(b.attn, layer.wo, out=b.proj)

    def _attend(self, i, q, out, scores, start_pos, heads):
        """out = softmax(q k^T) v for the kv heads `heads` (a slice) of layer i's cache, causal
        within the new tokens; q already scaled by 1/sqrt(hd). q, out: (Hkv, G, T, hd); scores:
        (Hkv, G, T, S) scratch."""
        T = q.shape[2]
        # Queries in blocks: block [t0, t1) sees keys 0 .. start_pos + t1 - 1 at most, so the
        # keys no query of the block may see are never scored (a prompt's causal mask hides half
        # of the (T, S) scores). A single query is one block that sees every key.
        for t0 in range(0, T, QUERY_BLOCK):
            t1 = min(t0 + QUERY_BLOCK, T)
            n_keys = start_pos + t1
            keys = self.key_cache[i, heads, None, :n_keys]                   # (Hkv, 1, S', hd)
            values = self.value_cache[i, heads, None, :n_keys]
            block = scores[heads, :, t0:t1, :n_keys]                         # (Hkv, G, t1-t0, S')
            np.matmul(q[heads, :, t0:t1], keys.swapaxes(-1, -2), out=block)
            if t1 - t0 > 1:
                # Keys before the block's own positions are seen by all its queries: the mask is
                # the (t1-t0)^2 corner where query t hides keys start_pos + t0 + j for j > t.
                np.copyto(block[..., start_pos + t0:], -np.inf, where=_above_diagonal(t1 - t0))
            _softmax_(block)
            np.matmul(block, values, out=out[heads, :, t0:t1])               # heads -> (T, D)

    def _feed_forward(self, layer, b):
        """x += w2 (silu(w1 x) * w3 x) on rmsnorm(x). (T, D) -> (T, D)."""
        xn = _rmsnorm(b.x, layer.ffn_norm, self.args.norm_eps, b.xn, b.mean_square)
        self.executor(xn, layer.w13, out=b.gate_up)                             # (T, D) -> (T, 2F)
        T, F = b.gate.shape
        if self.executor.shares_prompt(T):      # each thread its own columns of the (T, F) arrays
            self.executor.share(_swiglu_, [(b.gate[:, f0:f1], b.up[:, f0:f1], b.tmp[:, f0:f1])
                                           for f0, f1 in self.executor.ranges(F)])
        else:
            _swiglu_(b.gate, b.up, b.tmp)
        b.x += self.executor(b.gate, layer.w2, out=b.proj)                      # (T, F) -> (T, D)


@functools.lru_cache(maxsize=8)
def _above_diagonal(n):
    """(n, n) bools, True where column > row: a block's queries' hidden keys among its own."""
    return np.triu(np.ones((n, n), dtype=bool), k=1)


def _swiglu_(gate, up, tmp):
    """gate = silu(gate) * up in place, silu(a) = a / (1 + exp(-a)); tmp: scratch of gate's shape."""
    np.exp(np.negative(gate, out=tmp), out=tmp)
    tmp += 1
    np.divide(gate, tmp, out=gate)
    gate *= up


def _rmsnorm(x, weight, eps, out, mean_square):
    """rmsnorm.rmsnorm(x, weight, eps) written into `out`: (T, D) -> (T, D), same operation order."""
    if x.shape[0] == 1:
        # One token: the scale is one number, computed in Python (7 tiny NumPy calls -> 3). It is
        # rounded to float32 once, where the reference rounds mean, +eps, sqrt and 1/ each.
        np.multiply(x, 1 / math.sqrt(float(x[0] @ x[0]) / x.shape[1] + eps), out=out)
    else:
        np.einsum("td,td->t", x, x, out=mean_square[:, 0])                    # sum of squares
        mean_square /= x.shape[1]                                             # mean
        mean_square += eps
        np.sqrt(mean_square, out=mean_square)
        np.divide(1, mean_square, out=mean_square)                            # (T, 1)
        np.multiply(x, mean_square, out=out)
    out *= weight
    return out


def _softmax_(scores):
    """attention.softmax along the last axis, in place (ufunc reductions: no Python wrappers)."""
    scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= np.add.reduce(scores, axis=-1, keepdims=True)


def _checked(args, weights):
    """Names and shapes as model.checked_weights, keeping BlockMatrix objects and array views."""
    shapes, weights = matching_weights(args, weights)
    # np.asarray does not copy a float32 array or a memmap view.
    return {name: w if isinstance(w, BlockMatrix) else np.asarray(w, dtype=np.float32)
            for name, w in ((name, weights[name]) for name in shapes)}
