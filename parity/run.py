"""One verify run: open MODEL (and the ckpt), build every implementation the request allows, run
the prompts through each, and collect the rows into a Report."""

import importlib
import itertools

from models import open_checkpoint, open_model
from parity import LLAMA_CPP, NUMPY, SENTENCEPIECE, TRANSFORMERS, checks, thresholds, tokenizers
from parity.backends import FAILURES, LlamaCppBackend, NumpyBackend, TorchBackend, TransformersBackend
from parity.prompts import FULL_CONTEXT, GREEDY_TOKENS, greedy_prompt, prompt_texts
from parity.report import Report

# The most positions a run checks: Llama 2's own context. A header may declare 2^31, and llama.cpp
# allocates its KV cache for the n_ctx it is given; the full-context prompt would hold as many ids.
CHECKED_CONTEXT = 4096


def run_verify(model_path, ckpt_path=None, use_llama_cpp=False, tokenizer_path=None, threads=None):
    """Build every implementation that the arguments allow, run the prompts and return a Report.

    Raises ValueError (the CLI's exit status 2) for requests that cannot run at all: a missing
    package asked for, a dtype without thresholds, nothing to compare. A file that fails to load
    in one implementation is a failed `load` check, not an error: a broken export is exactly what
    this command exists to report.
    """
    model_file = open_model(model_path)
    dtype = thresholds.file_dtype(model_file.dtypes)
    notes = []
    use_transformers = _transformers_runs(model_file, notes)
    _check_request(model_file, dtype, ckpt_path, use_llama_cpp, use_transformers)
    ckpt_file = open_checkpoint(ckpt_path) if ckpt_path is not None else None
    # The context every implementation runs in: the trained model's, else the one MODEL declares,
    # checked up to CHECKED_CONTEXT positions.
    declared = ckpt_file.spec.max_seq_len if ckpt_file is not None else model_file.context
    max_seq_len = min(declared, CHECKED_CONTEXT)
    if declared > max_seq_len:
        notes.append(f"the model declares a context of {declared} positions; checked up to {max_seq_len}")
    spm_bytes = tokenizers.sentencepiece_model(tokenizer_path, ckpt_file, model_file)
    tokenizer = tokenizers.our_tokenizer(model_file, tokenizer_path, ckpt_file, notes)
    if tokenizer is None and not spm_bytes:
        raise ValueError(f"{model_file.path}: no tokenizer: pass --tokenizer (a .model or tokenizer.bin)")

    backends, rows = _backends(model_file, ckpt_file, dtype, use_llama_cpp, use_transformers, max_seq_len,
                               threads)
    llama = {b.name: b for b in backends}.get(LLAMA_CPP)
    try:
        encoders = tokenizers.encoders(spm_bytes, tokenizer, llama, notes)
        encode = encoders.get(NUMPY) or encoders.get(SENTENCEPIECE)     # ours, where there is one
        texts = prompt_texts(encode, max_seq_len)
        rows += checks.tokenizer_checks(texts, encoders, dtype)
        if len(backends) < 2:
            notes.append("fewer than two implementations loaded: no logits or greedy comparison")
        else:
            for prompt, text in texts.items():
                rows += _prompt_checks(backends, prompt, encode(text), max_seq_len, dtype)
    finally:
        for backend in backends:
            backend.close()
    return Report(model_file.path, dtype, _file_args(model_file), [b.name for b in backends], rows, notes)


def _transformers_runs(model_file, notes):
    """Whether transformers runs MODEL: a Hugging Face folder, with torch and transformers
    importable. When a folder's are not, `notes` names the package that failed and why."""
    if model_file.kind != "hf":
        return False
    for package in ("torch", "transformers"):
        try:
            importlib.import_module(package)
        except ImportError as exc:
            notes.append(f"{package} cannot be imported ({exc}): transformers did not run the folder")
            return False
    return True


def _file_args(model_file):
    """MODEL's own ModelArgs for the report's header, whatever the ckpt's (a mismatched ckpt is
    the config row's to report); None when its stored values do not make a model."""
    try:
        return model_file.spec
    except ValueError:
        return None


def _check_request(model_file, dtype, ckpt_path, use_llama_cpp, use_transformers):
    """ValueError (exit status 2) for a request that cannot run at all."""
    if thresholds.missing(dtype):
        raise ValueError(f"{model_file.path}: no verify thresholds for {', '.join(thresholds.missing(dtype))} "
                         f"(have {', '.join(thresholds.VS_TORCH)})")
    if use_llama_cpp and model_file.kind != "gguf":
        raise ValueError(f"--llama-cpp: {model_file.path} is {model_file.kind.described}; llama.cpp reads GGUF "
                         f"only: `llama2-scratch export {model_file.path} --to gguf -o MODEL.gguf`, then "
                         "`verify MODEL.gguf --llama-cpp`")
    if use_llama_cpp:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ValueError("--llama-cpp: the llama_cpp package is not installed "
                             "(pip install llama-cpp-python==0.3.36)") from None
    if ckpt_path is None and not use_llama_cpp and not use_transformers:
        raise ValueError("nothing to compare MODEL with: pass --ckpt CKPT (the trained model) "
                         "and/or --llama-cpp (a GGUF), or install transformers (a Hugging Face folder)")
    if ckpt_path is not None or model_file.kind == "ckpt":
        try:
            import torch  # noqa: F401
        except ImportError:
            where = "--ckpt" if ckpt_path is not None else model_file.path
            raise ValueError(f"{where}: reading a ckpt.pt needs torch (pip install -e '.[train]')") from None


def _backends(model_file, ckpt_file, dtype, use_llama_cpp, use_transformers, max_seq_len, threads):
    """(the implementations that loaded, reference first: torch, NumPy, transformers, llama.cpp;
    their rows).

    torch failing to build is an error (the ckpt itself is broken); NumPy, transformers and
    llama.cpp failing to load MODEL is a failed `load` row."""
    backends, rows = [], []
    if ckpt_file is not None:
        backends.append(TorchBackend(ckpt_file.spec, ckpt_file.weights(), threads))
        rows.append(checks.config_check(model_file, ckpt_file.spec, dtype))
    loaders = [(NUMPY, lambda: NumpyBackend(model_file))]
    if use_transformers:
        loaders.append((TRANSFORMERS, lambda: TransformersBackend(model_file.path, threads)))
    if use_llama_cpp:
        loaders.append((LLAMA_CPP, lambda: LlamaCppBackend(model_file.path, max_seq_len, threads)))
    for name, load in loaders:
        try:
            backends.append(load())
            rows.append(checks.load_check(name, dtype))
        except ValueError as exc:
            rows.append(checks.load_check(name, dtype, str(exc)))
    return backends, rows


def _prompt_checks(backends, prompt, ids, max_seq_len, dtype):
    """Logits rows on the prompt's first max_seq_len ids; greedy rows on a shorter start that
    leaves room to continue (none for the full-context prompt, none where no pair is gated on
    it: a lossy dtype)."""
    names = [b.name for b in backends]
    logits, failed = _each(backends, lambda b: b.logits(ids[:max_seq_len]))
    rows = checks.logits_checks(prompt, names, logits, failed, dtype)
    del logits                                          # (T, V) each: one prompt's worth at a time
    gated = any(thresholds.for_pair(dtype, ref, cand).greedy is not None
                for ref, cand in itertools.combinations(names, 2))
    if prompt != FULL_CONTEXT and gated:
        start = greedy_prompt(ids, max_seq_len)
        n = min(GREEDY_TOKENS, max_seq_len - len(start))
        continuations, failed = _each(backends, lambda b: b.greedy(start, n))
        rows += checks.greedy_checks(prompt, names, continuations, failed, dtype)
    return rows


def _each(backends, call):
    """({name: call(backend)} for the backends that ran, {name: 'name failed: reason'} for those
    that raised one of backends.FAILURES): the one place an implementation's failure is caught."""
    results, failed = {}, {}
    for backend in backends:
        try:
            results[backend.name] = call(backend)
        except FAILURES as exc:
            failed[backend.name] = f"{backend.name} failed: {exc}"
    return results, failed
