"""The implementations verify compares, behind one interface.

    name                   "torch" | "numpy" | "transformers" | "llama.cpp"
    logits(ids)            (T, V) float32 logits at every position of one sequence
    greedy(prompt_ids, n)  the n ids each implementation appends on its own: the argmax of the
                           last position (the first, lowest id on ties), fed back, n times
    close()                release what the implementation holds

Building one raises ValueError when the file does not load in it (a failed `load` check, not an
error). `logits` and `greedy` raise ValueError, RuntimeError or IndexError (FAILURES) when the
implementation cannot run the ids, e.g. an id past its vocabulary; parity/run.py catches those
in one place and reports the pairs involving it as failed.

torch, transformers and llama_cpp are imported when their backend is built.
"""

import contextlib
import os

import numpy as np

from formats.ggml import GGMLType
from parity import LLAMA_CPP, NUMPY, TORCH, TRANSFORMERS

FAILURES = (ValueError, RuntimeError, IndexError)


class Backend:
    name = None

    def logits(self, ids):
        raise NotImplementedError

    def last_logits(self, ids, cached):
        """(V,) logits of the last of `ids` when ids[:cached] have been run just before."""
        raise NotImplementedError

    def greedy(self, prompt_ids, n):
        ids = list(prompt_ids)
        for step in range(n):
            ids.append(int(np.argmax(self.last_logits(ids, len(ids) - 1 if step else 0))))
        return ids[len(prompt_ids):]

    def close(self):
        pass


class TorchBackend(Backend):
    """trainer/model.py with the ckpt.pt weights, in float32 as trained."""
    name = TORCH

    def __init__(self, args, weights, threads=None):
        import torch

        from trainer.model import Transformer

        self.torch = torch
        self.threads = threads
        model = Transformer(args)
        state = {name: torch.from_numpy(np.ascontiguousarray(w)) for name, w in weights.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed_missing = {"output.weight"} if args.tie_embeddings else set()
        if set(missing) - allowed_missing or unexpected:
            raise ValueError(f"checkpoint weights do not fit the model: missing {missing}, "
                             f"unexpected {unexpected}")
        self.model = model.eval()

    def logits(self, ids):
        torch = self.torch
        with _torch_threads(torch, self.threads), torch.no_grad():
            logits, _ = self.model(torch.tensor([ids], dtype=torch.long))    # (1, T, V)
        return logits[0].numpy()

    def last_logits(self, ids, cached):
        return self.logits(ids)[-1]     # no KV cache: the whole sequence again

    def greedy(self, prompt_ids, n):
        # Each step recomputes the whole sequence, so apply the classifier to the last position
        # only (the (T, D) @ (D, V) product dominates with a 32000-piece vocabulary).
        last_only = self.model.output.register_forward_pre_hook(lambda module, inputs: (inputs[0][:, -1:],))
        try:
            return super().greedy(prompt_ids, n)
        finally:
            last_only.remove()


@contextlib.contextmanager
def _torch_threads(torch, threads):
    """torch on `threads` threads (None: as it is) for the duration of the block.

    On a busy machine torch's spinning worker threads can make small matmuls 100x slower
    (measured: 37 ms instead of 0.2 ms for (160, 64) @ (64, 192) with 2 threads on 2 busy cores)."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


class TransformersBackend(Backend):
    """transformers' LlamaForCausalLM on MODEL, a Hugging Face folder, computing in float32
    whatever the folder stores (dtype=float32 upcasts F16/BF16 weights, as NumPy does). It
    reads the folder alone (local_files_only: nothing is looked up on a hub). Greedy reruns the
    whole sequence at each step, keeping only the last position's logits."""
    name = TRANSFORMERS

    def __init__(self, folder, threads=None):
        import torch
        import transformers
        from transformers.utils import logging

        self.torch = torch
        self.threads = threads
        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()          # its "Loading weights" bar would land in the report
        try:
            model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(" ".join(str(exc).split())[:500]) from None
        finally:
            if bars:
                logging.enable_progress_bar()
        self.model = model.eval()

    def _logits(self, ids, keep):
        torch = self.torch
        with _torch_threads(torch, self.threads), torch.no_grad():
            out = self.model(torch.tensor([ids], dtype=torch.long), logits_to_keep=keep)
        return out.logits[0].numpy()                                        # (keep or T, V)

    def logits(self, ids):
        return self._logits(list(ids), 0)                                   # 0 keeps every position

    def last_logits(self, ids, cached):
        return self._logits(ids, 1)[-1]     # no KV cache: the whole sequence again


class NumpyBackend(Backend):
    """reference/model.py on MODEL: the prompt in one pass; greedy decodes one token at a time
    against the KV cache, as `generate` does."""
    name = NUMPY

    def __init__(self, model_file):
        self.model = model_file.model()

    def logits(self, ids):
        return self.model.forward(np.asarray(ids), 0, all_logits=True)

    def last_logits(self, ids, cached):
        return self.model.forward(np.asarray(ids[cached:]), start_pos=cached)


class LlamaCppBackend(Backend):
    """llama-cpp-python on MODEL. Logits of every position (logits_all) in a context of exactly
    n_ctx; the KV cache in f32 (llama.cpp's default is f16, which would add its own rounding to
    every dtype and hide what the file contributes). Greedy is our argmax over llama.cpp's
    logits, one `eval` per token, so all three implementations follow one rule. It also
    tokenizes, with llama.cpp's own tokenizer."""
    name = LLAMA_CPP

    def __init__(self, path, n_ctx, threads=None):
        import llama_cpp

        self.llama_cpp = llama_cpp
        threads = threads or min(os.cpu_count() or 1, 8)
        with _LlamaCppLog(llama_cpp) as log:
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                    n_threads=threads, n_threads_batch=threads, type_k=int(GGMLType.F32),
                    type_v=int(GGMLType.F32), seed=0, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise ValueError(log.error_summary() or str(exc)) from None

    def close(self):
        self.llm.close()

    def tokenize(self, text):
        # add_bos=True is llama.cpp's add_special: BOS/EOS as the GGUF's add_bos/eos_token say.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _eval_from(self, ids, start):
        """Evaluate ids[start:] after ids[:start] are in the cache; returns their logits. (Setting
        n_tokens is what llama-cpp-python's reset() does for a llama model: start 0 is a reset.)"""
        self.llm.n_tokens = start
        self.llm.eval(ids[start:])
        return np.array(self.llm.scores[start:len(ids)], dtype=np.float32)

    def logits(self, ids):
        return self._eval_from(list(ids), 0)

    def last_logits(self, ids, cached):
        return self._eval_from(ids, cached)[-1]


class _LlamaCppLog:
    """Collect llama.cpp's log lines while loading, so a failed load can say why (llama-cpp-python
    only raises 'Failed to load model from file'; the reason, e.g. 'invalid n_rot', is logged)."""

    def __init__(self, llama_cpp):
        self.llama_cpp = llama_cpp
        self.lines = []

    def __enter__(self):
        lines = self.lines

        @self.llama_cpp.llama_log_callback
        def callback(level, text, user_data):
            lines.append(text.decode("utf-8", "replace"))

        self._callback = callback   # ctypes callbacks must outlive their registration
        self.llama_cpp.llama_log_set(callback, None)
        return self

    def __exit__(self, *exc):
        from llama_cpp import _logger
        self.llama_cpp.llama_log_set(_logger.llama_log_callback, None)
        return False

    def error_summary(self):
        text = "".join(self.lines)
        errors = [line.strip() for line in text.splitlines()
                  if any(word in line.lower() for word in ("error", "failed", "invalid", "exception"))]
        return "; ".join(dict.fromkeys(errors))[:500]
