"""Llama 2 in torch, for training; the same maths as the NumPy reference (reference/).

Parameter names are llama2.c's (`tok_embeddings`, `layers.{i}.attention.{wq,wk,wv,wo}`,
`layers.{i}.feed_forward.{w1,w2,w3}`, `attention_norm`, `ffn_norm`, `norm`, `output`), so a
state dict is a ckpt.pt `model` entry and maps one to one onto llama2.c and GGUF files.
Shapes: B batch, T positions, D, H, Hkv, hd, F, V as in formats/spec.py.
`Transformer.run_with_hooks(tokens, hooks)` and `run_with_cache(tokens)` replace and keep the
activations of one sequence under the names of reference/cache.py, as the NumPy reference's do, so
the two compare point by point, under the same interventions too.

Init (llama2.c's, so a model trained here starts where llama2.c's does): every Linear and the
embedding N(0, 0.02); wo and w3 N(0, 0.02/sqrt(2 * n_layers)), RMSNorm gains 1. The scaled
pair is llama2.c's choice; GPT-2 scales the projections that write into the residual stream
(wo and w2) so that its variance does not grow with depth.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from formats.spec import ModelArgs
from reference.cache import check_replacement, hook_recorder, no_record, scope
from trainer.loss import linear_cross_entropy

INIT_STD = 0.02


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x²) + eps) * weight over the last axis, computed in at least float32."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Half-precision inputs are normalized in float32 (mean(x²) loses too much in 16 bits);
        # float32 and float64 are kept as they are.
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(compute_dtype)
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim, max_seq_len, theta, dtype=torch.float32):
    """cos and sin of position * theta^(-2j/hd), each (max_seq_len, hd/2).

    Computed in float64 and rounded once to `dtype` (bit-identical to reference.rope.rope_tables).
    """
    pair = torch.arange(head_dim // 2, dtype=torch.float64)
    freqs = theta ** (-2 * pair / head_dim)                                  # (hd/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), freqs)
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def apply_rope(x, cos, sin):
    """Rotate adjacent pairs (x[2j], x[2j+1]): x (B, T, n, hd), cos/sin (T, hd/2) -> x's shape."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)                      # (B, T, n, hd/2) each
    cos, sin = cos[:, None, :], sin[:, None, :]                              # (T, 1, hd/2)
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return rotated.flatten(-2).type_as(x)                                    # pairs back to hd


def causal_scores(q, k):
    """The scores that scaled_dot_product_attention computes inside its kernel and never returns,
    for the study cache: q (B, H, T, hd), k (B, Hkv, T, hd) -> (B, H, T, T).

    scores = q kᵀ / sqrt(hd) with -inf above the diagonal; query head h reads kv head
    h // (H / Hkv). Only a recording forward pass calls it: training never pays for it.
    """
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)                # (B, H, T, hd)
    scores = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]))       # (B, H, T, T)
    T = q.shape[2]
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf"))


class Attention(nn.Module):
    """Causal grouped-query self-attention: query head h reads kv head h // (H / Hkv)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.dropout = args.dropout
        self.resid_dropout = nn.Dropout(args.dropout)

    def forward(self, x, cos, sin, record=no_record):
        """x (B, T, D) -> (B, T, D). record: given q, k, v, q_rot, k_rot, scores, pattern and z,
        each (B, heads, T, hd or T), and the forward pass goes on with what it returns
        (reference/cache.py)."""
        B, T, D = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        # Recorded heads first; transposed back, a value nobody replaced is the same view as before.
        q, k, v = (record(name, t.transpose(1, 2)).transpose(1, 2) for name, t in (("q", q), ("k", k), ("v", v)))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))                    # (B, heads, T, hd)
        q, k = record("q_rot", q), record("k_rot", k)
        out = record("z", self.attend(q, k, v, record))                     # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, D)
        return self.resid_dropout(self.wo(out))

    def attend(self, q, k, v, record):
        """softmax(q kᵀ / sqrt(hd) + causal mask) v: q (B, H, T, hd), k and v (B, Hkv, T, hd) ->
        (B, H, T, hd).

        The fused kernel computes it unless the recorder replaced the scores or the pattern; then
        pattern @ v is computed here from the replacement (without attention dropout, which only
        training applies). A recording pass that replaces nothing still runs the kernel, so its
        values are the plain forward pass's bit for bit.
        """
        if record is not no_record:
            computed = causal_scores(q, k)
            scores = record("scores", computed)
            softmaxed = torch.softmax(scores, dim=-1)
            pattern = record("pattern", softmaxed)
            if scores is not computed or pattern is not softmaxed:
                return pattern @ v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        # enable_gqa lets the kernel share each kv head among its query heads without a copy;
        # the scale defaults to 1/sqrt(hd).
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True,
                                              dropout_p=self.dropout if self.training else 0.0)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x, record=no_record):
        """x (B, T, D) -> (B, T, D). record: given gate (w1 x), up (w3 x), act (silu(gate) * up)."""
        gate, up = record("gate", self.w1(x)), record("up", self.w3(x))
        return self.dropout(self.w2(record("act", F.silu(gate) * up)))


class TransformerBlock(nn.Module):
    """Pre-norm block: h = x + attention(norm(x)); out = h + feed_forward(norm(h))."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, record=no_record):
        x = record("resid_pre", x)
        attn_out = self.attention(record("attn_norm", self.attention_norm(x)), cos, sin, scope(record, "attn."))
        h = record("resid_mid", x + record("attn_out", attn_out))
        mlp_out = self.feed_forward(record("ffn_norm", self.ffn_norm(h)), scope(record, "mlp."))
        return record("resid_post", h + record("mlp_out", mlp_out))


class Transformer(nn.Module):
    """The whole Llama 2 network. forward(tokens, targets=None) -> (logits, loss).

    With tied embeddings the state dict still lists `output.weight` (the same tensor as
    `tok_embeddings.weight`), as llama2.c's does; writers of tied files drop it. For a float64
    model use `.double()`, which also rebuilds the RoPE tables in float64.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            # One Parameter under two names: the state dict still lists output.weight.
            self.output.weight = self.tok_embeddings.weight
        self.set_rope_tables(torch.float32)
        self.reset_parameters()

    def set_rope_tables(self, dtype):
        """(Re)build the RoPE tables in `dtype`. Non-persistent: not part of the state dict."""
        cos, sin = rope_tables(self.args.head_dim, self.args.max_seq_len, self.args.rope_theta, dtype)
        device = self.tok_embeddings.weight.device
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def double(self):
        """Cast to float64 with tables rebuilt in float64: casting the float32 tables up would
        keep their float32 rounding (~1e-8), far above the float64 parity bound."""
        super().double()
        self.set_rope_tables(torch.float64)
        return self

    @torch.no_grad()
    def reset_parameters(self):
        """llama2.c's init (see the module docstring)."""
        residual_std = INIT_STD / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("attention.wo.weight", "feed_forward.w3.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(param, mean=0.0, std=INIT_STD)

    def forward(self, tokens, targets=None, record=no_record):
        """tokens: (B, T) ids -> (logits (B, T, V), None), or with targets (None, loss).

        Without targets, logits come for every position. With targets (B, T), ids of -1 ignored,
        only the mean cross-entropy comes back: it is computed chunk by chunk without ever
        holding the (B, T, V) logits (trainer/loss.py), the largest tensor in training.
        record: called as record(name, tensor) on every activation, batch axis first.
        """
        T = tokens.shape[1]
        h = record("embed", self.dropout(self.tok_embeddings(tokens)))        # (B, T, D)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]                       # (T, hd/2)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, scope(record, f"blocks.{i}."))
        h = record("final_norm", self.norm(h))
        if targets is None:
            return record("logits", self.output(h)), None                     # (B, T, V)
        return None, linear_cross_entropy(h.flatten(0, 1), self.output.weight, targets.flatten())

    @torch.no_grad()
    def run_with_hooks(self, tokens, hooks, cache=False):
        """A forward pass of one sequence of ids (T,) with values replaced at named points, as
        reference.model.Llama.run_with_hooks: hooks {name: fn(value, name)}, fn given the value
        without the batch axis and returning its replacement (same shape; cast to the value's
        dtype) or None. Returns the logits (T, V), or (logits, cache) with cache=True.

        Replacing scores or pattern computes attention explicitly (attend); anything else keeps
        the fused kernel. Call .eval() first, or dropout (when configured) draws into the values.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.tok_embeddings.weight.device)
        if tokens.ndim != 1 or not 0 < len(tokens) <= self.args.max_seq_len:
            raise ValueError(f"tokens must be 1 to {self.args.max_seq_len} ids in one row, got shape "
                             f"{tuple(tokens.shape)}")
        kept = {} if cache else None
        record = hook_recorder(hooks, self.args.n_layers, run_hook, kept)

        def one_sequence(name, tensor):
            value = tensor[0]
            recorded = record(name, value)
            # The very tensor back (no replacement) keeps forward's own, fused-kernel path.
            return tensor if recorded is value else recorded[None]

        logits, _ = self(tokens[None], record=one_sequence)
        return (logits[0], kept) if cache else logits[0]

    def run_with_cache(self, tokens):
        """(logits (T, V), cache) = run_with_hooks(tokens, {}, cache=True): every activation of
        one sequence kept, shaped as in reference/cache.py (the batch axis dropped), exactly the
        values forward computes; scores and pattern, which the fused attention kernel never
        materializes, come from causal_scores and a softmax."""
        return self.run_with_hooks(tokens, {}, cache=True)


def run_hook(hook, name, value):
    """hook(value, name) as the forward pass will use it: the value itself when the hook returns
    None, else the replacement cast to value's dtype and device, its shape checked."""
    # torch counts in-place writes to a tensor and its views: a hook that edits its argument
    # would change some later computations (those sharing the memory) and not others.
    version = value._version
    new = hook(value, name)
    if value._version != version:
        raise ValueError(f"the hook at {name} changed its argument in place; return the replacement instead")
    if new is None:
        return value
    new = torch.as_tensor(new).to(dtype=value.dtype, device=value.device, copy=True)
    check_replacement(name, new.shape, value.shape)
    return new
