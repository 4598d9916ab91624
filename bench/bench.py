"""Time one training step (forward + backward + Adam) or IWAE-K evaluation, and print one JSON line.

    python -m bench.bench --config mnist-svhn-paper --objective m_dreg_stratified --K 30 --steps 5 --warmup 1
    python -m bench.bench --impl authors ...          # the authors' code, from $MMVAE_AUTHORS_SRC (their src/)
    python -m bench.bench --impl multivae ...         # MultiVae's MMVAE (bench/multivae.py, $MMVAE_MULTIVAE_PATH)
    python -m bench.bench --eval --eval-K 1000 --eval-pairs 32   # IWAE-1000, seconds per 1000 pairs

One process measures one implementation, so ``peak_rss_mb`` (``ru_maxrss``) is that implementation's
peak. ``rss_before_mb`` is the resident size after imports, model and data are set up, so
``peak_rss_mb - rss_before_mb`` is the memory the steps themselves added (the two codes import
different libraries: the authors' modules pull in torchvision, nltk, matplotlib, seaborn, pandas).

Data are synthetic tensors of the right shapes and range (uniform in [0, 1]): SVHN is not
available offline here, and the speed of these networks does not depend on pixel values.

``cpu_utilisation`` is process CPU time / (wall time x threads) over the timed steps; well below
1 means other processes competed for the cores and the timing is pessimistic.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import time
import types
from typing import Any, Callable, Optional

import torch

CONFIGS = {
    # name: (experiment, preset) of mmvae_lite.config; the authors' model has the same networks
    "mnist-svhn-paper": ("mnist-svhn", "paper"),
    "mnist-svhn-quick": ("mnist-svhn", "quick"),
}

# our objective -> the authors' function in src/objectives.py
AUTHORS_OBJECTIVES = {
    "m_dreg_stratified": "m_dreg_looser",   # the paper's configuration
    "m_iwae_stratified": "m_iwae_looser",
    "m_dreg_mixture": "m_dreg",
    "m_iwae_mixture": "m_iwae",
    "m_elbo_is": "m_elbo",                  # importance-sampled ELBO (their m_elbo always uses K=1)
}

FIELDS = ("implementation", "mode", "config", "objective", "K", "batch", "samples_per_s", "step_s_median",
          "step_s", "peak_rss_mb", "rss_before_mb", "threads", "device", "torch", "python")


# ---------------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------------
def rss_now_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    from mmvae_lite.runtime import _statm_rss_mb   # the reading the Trainer's HeapTrimmer uses
    try:
        return _statm_rss_mb()
    except (OSError, ValueError, AttributeError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 2**10


def after_setup() -> dict[str, Any]:
    """Mark the end of setup: the resident size now, the peak so far, then restart the peak count.

    Linux only (``/proc/self/clear_refs`` = 5 resets the high-water mark that ``ru_maxrss`` reads),
    so the final ``peak_rss_mb`` is the peak *while the steps ran* (what stays resident from setup
    included), not a transient of imports or data loading. Elsewhere the peak counts from the start.
    """
    out = {"rss_before_mb": rss_now_mb(), "setup_peak_mb": peak_rss_mb()}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        out["peak_reset"] = True
    except OSError:
        out["peak_reset"] = False
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_batch(batch: int, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"mnist": torch.rand(batch, 1, 28, 28, generator=g, dtype=dtype),
            "svhn": torch.rand(batch, 3, 32, 32, generator=g, dtype=dtype)}


def real_batch(batch: int, seed: int, root: Optional[str] = None, split: str = "test") -> dict[str, torch.Tensor]:
    """``batch`` MNIST-SVHN pairs from :mod:`mmvae_lite.data` (real MNIST; SVHN, or its stand-in if missing)."""
    from mmvae_lite import data
    ds = data.load_mnist_svhn(split, root=root, subset=batch, seed=seed, verbose=False)
    return next(iter(ds.batches(batch, shuffle=False)))


def make_batch(args: argparse.Namespace, batch: int) -> dict[str, torch.Tensor]:
    """The timed batch, already on ``args.device`` (data movement is not part of a step)."""
    b = synthetic_batch(batch, args.seed + 1) if args.data == "synthetic" else real_batch(batch, args.seed, args.data_root)
    return {k: v.to(args.device) for k, v in b.items()}


def batch_feed(args: argparse.Namespace) -> Callable[[], dict[str, torch.Tensor]]:
    """What each training step consumes: the one timed batch or, with ``--stream``, the next batch of
    shuffled MNIST-SVHN *training* pairs (the first steps of a real run; all on the device up front)."""
    if not args.stream:
        b = make_batch(args, args.batch)
        return lambda: b
    from mmvae_lite import data
    n = (args.warmup + args.steps) * args.batch
    ds = data.load_mnist_svhn("train", root=args.data_root, subset=n, seed=args.seed, verbose=False)
    batches = [{k: v.to(args.device) for k, v in b.items()} for b in ds.batches(args.batch, shuffle=False)]
    it = iter(batches * 2)   # the FLOP-counting step after the timed ones takes one more
    return lambda: next(it)


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{torch.device(device).type} ({cpu_name()})"


def load_state(model, path: Optional[str]) -> None:
    """Load an mmvae_lite state_dict (e.g. from ``python -m bench.pretrain``) into our model."""
    if path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def authors_state_from_ours(ours: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Invert :func:`mmvae_lite.official.convert_official_state_dict` (MNIST-SVHN): our weights in their layout."""
    from mmvae_lite.official import _keys_read, _mnist_svhn_rules
    out = {k: v.clone() for k, v in template.items()}
    for key, rule in _mnist_svhn_rules().items():
        theirs = _keys_read(rule, template)
        sizes = [template[k].shape[0] for k in theirs] if len(theirs) > 1 else None
        parts = ours[key].split(sizes, 0) if sizes else [ours[key]]
        for k, part in zip(theirs, parts):
            out[k] = part.reshape(template[k].shape).clone()
    return out


def count_gflop(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn`` (forward and backward matmuls/convolutions, with torch's FLOP formulas).

    Counted on the work actually done, so the row-sparse backward's skipped rows are not counted.
    A bare dispatch mode over ``torch.utils.flop_counter.flop_registry``: ``FlopCounterMode`` itself
    also tracks modules with backward hooks, which ``autograd.grad`` inside a custom backward rejects.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            formula = flop_registry.get(func._overloadpacket)
            if formula is None:
                # without autograd (no_grad, inference mode) composite ops such as conv2d and linear
                # reach the mode whole: count the ops they decompose into, as FlopCounterMode does
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    with _Count() as counter:
        fn()
    return counter.total / 1e9


def peak_gflops(repeats: int = 10) -> dict[str, float]:
    """The attainable GFLOP/s of this machine for this workload's kind of arithmetic (the roofline's flat part).

    Times float32 oneDNN convolutions shaped like the paper networks' busiest layers, at a batch large
    enough to fill the cores, and a square GEMM; returns each rate and their maximum (``peak``).
    """
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    cases = {
        # SVHN encoder conv 2 (32 -> 64, k4 s2 p1, 16x16 -> 8x8), channels-last, batch 256
        "conv_32_64_k4s2": (lambda x, w: F.conv2d(x, w, stride=2, padding=1),
                            torch.randn(256, 32, 16, 16, generator=g).contiguous(memory_format=torch.channels_last),
                            torch.randn(64, 32, 4, 4, generator=g), 2 * 256 * 8 * 8 * 64 * 32 * 16),
        # SVHN decoder upconv 2 (64 -> 32, k4 s2 p1, 8x8 -> 16x16), channels-last, batch 256
        "upconv_64_32_k4s2": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1),
                              torch.randn(256, 64, 8, 8, generator=g).contiguous(memory_format=torch.channels_last),
                              torch.randn(64, 32, 4, 4, generator=g), 2 * 256 * 8 * 8 * 64 * 32 * 16),
        "gemm_2048": (torch.mm, torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g), 2 * 2048 ** 3),
    }
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, (fn, a, b, flops) in cases.items():
            for _ in range(3):
                fn(a, b)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(a, b)
                ts.append(time.perf_counter() - t0)
            out[name] = flops / min(ts) / 1e9
    out["peak"] = max(out.values())
    return out


def time_calls(fn: Callable[[], Any], steps: int, warmup: int) -> tuple[list[float], float, Any]:
    """Run ``fn`` warmup + steps times; per-call wall times of the timed calls and CPU utilisation.

    Per-call process CPU times are stored in ``time_calls.cpu_times``: on a shared machine with one
    thread, CPU seconds per step measure the work done, almost independent of how much of the CPU
    other processes took (with several threads they also count spin-waiting).
    """
    out = None
    for _ in range(warmup):
        out = fn()
    times, cpu_times = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    wall = time.perf_counter() - wall0
    util = (time.process_time() - cpu0) / max(wall * torch.get_num_threads(), 1e-9)
    time_calls.cpu_times = cpu_times
    return times, util, out


# ---------------------------------------------------------------------------------------------
# mmvae_lite
# ---------------------------------------------------------------------------------------------
def set_plain(plain: bool) -> None:
    """Turn mmvae_lite's CPU fast paths off (``plain=True``) or on: the 'plain fp32' reference."""
    from mmvae_lite import distributions, networks
    networks.FAST_PATHS = not plain
    distributions.FUSED_LIKELIHOOD = not plain


def build_ours(config: str, K: int, batch: int, objective: str, seed: int, gradient: str = "dreg"):
    from mmvae_lite import build_model, get_config
    experiment, preset = CONFIGS[config]
    cfg = get_config(experiment, preset, K=K, batch_size=batch, objective=objective, seed=seed, gradient=gradient)
    return cfg, build_model(cfg)


def maybe_compile(model, mode: Optional[str]) -> float:
    """``torch.compile`` each decoder and encoder body in place; returns nothing to time yet (lazy)."""
    if not mode:
        return 0.0
    for m in model.modalities.values():
        for net in (m.encoder, m.decoder):
            net._body = torch.compile(net._body, mode=None if mode == "default" else mode, dynamic=False)
    return 0.0


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from mmvae_lite.objectives import get_objective
    from mmvae_lite.training import Trainer
    set_plain(args.plain)
    cfg, model = build_ours(args.config, args.K, args.batch, args.objective, args.seed, args.gradient)
    load_state(model, args.state)
    maybe_compile(model, args.compile)
    tr = Trainer(model, get_objective(cfg.objective, cfg.gradient), K=cfg.K, lr=cfg.lr, amsgrad=cfg.amsgrad,
                 batch_size=cfg.batch_size, device=args.device, bf16=args.bf16, progress=False, verbose=False)
    feed = batch_feed(args)
    info: dict[str, Any] = after_setup()
    torch.manual_seed(args.seed)
    if args.compile:   # first call compiles: time it separately
        t0 = time.perf_counter()
        tr.train_step(feed())
        info["compile_s"] = time.perf_counter() - t0
    decoders = {name: m.decoder for name, m in model.modalities.items()}
    fractions: list[dict[str, Optional[float]]] = []

    def step():
        value = tr.train_step(feed())
        # the row-sparse backward's bookkeeping: fraction of each decoder's latents with a nonzero gradient
        fractions.append({n: getattr(d.__dict__.get("_grad_rows"), "fraction", None) for n, d in decoders.items()})
        return value

    times, util, value = time_calls(step, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=float(value), flop_fn=step,
                nonzero_grad_rows=[{n: None if f is None else round(f, 3) for n, f in d.items()}
                                   for d in fractions[args.warmup:]])
    return info


@torch.inference_mode()
def iwae_chunked(model, batch: dict[str, torch.Tensor], K: int, chunk: int, stratified: bool = False) -> torch.Tensor:
    """IWAE-K of each pair, memory bounded by ``chunk`` samples per modality at a time: shape (B,).

    Draws K samples from each expert in chunks (``objectives.moe_log_weights``), keeps only the
    (M, K, B) log weights and reduces them at the end. ``stratified=False`` is the mixture bound
    (eq. 5, one log-mean-exp over all M*K samples: the authors' ``m_iwae`` likelihood estimate);
    ``True`` is eq. 3.
    """
    from mmvae_lite.objectives import log_mean_exp, moe_log_weights
    lws = []
    for start in range(0, K, chunk):
        lws.append(moe_log_weights(model, batch, min(chunk, K - start))[0])
    lw = torch.cat(lws, 1)                                   # (M, K, B)
    return log_mean_exp(lw, 1).mean(0) if stratified else log_mean_exp(lw, (0, 1))


def run_ours_eval(args: argparse.Namespace) -> dict[str, Any]:
    set_plain(args.plain)
    _, model = build_ours(args.config, args.eval_K, args.batch, "m_iwae_mixture", args.seed)
    load_state(model, args.state)
    model.to(args.device).eval()
    data = make_batch(args, args.eval_pairs)
    info: dict[str, Any] = after_setup()
    torch.manual_seed(args.seed)

    def run():
        vals = []
        for i in range(0, args.eval_pairs, args.eval_batch):
            vals.append(iwae_chunked(model, {k: v[i:i + args.eval_batch] for k, v in data.items()},
                                     args.eval_K, args.eval_chunk))
        return torch.cat(vals).mean().item()

    times, util, value = time_calls(run, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=value, flop_fn=run)
    return info


# ---------------------------------------------------------------------------------------------
# The authors' code (never vendored: point MMVAE_AUTHORS_SRC at a checkout's src/ directory)
# ---------------------------------------------------------------------------------------------
def _stub_missing_modules() -> list[str]:
    """Inject empty stand-ins for third-party modules their imports need but this benchmark never uses."""
    stubbed = []

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    def unusable(*_a, **_k):
        raise RuntimeError("stubbed by bench.bench: not available in this environment")

    def stub_package(parent: str, child: str, names: tuple[str, ...]) -> None:
        sub = types.ModuleType(f"{parent}.{child}")
        for n in names:
            setattr(sub, n, unusable)
        pkg = types.ModuleType(parent)
        setattr(pkg, child, sub)
        sys.modules.update({parent: pkg, f"{parent}.{child}": sub})
        stubbed.append(parent)

    if missing("umap"):                       # vis.py: from umap import UMAP (only for plots)
        sys.modules["umap"] = types.SimpleNamespace(UMAP=unusable, __name__="umap")
        stubbed.append("umap")
    if missing("torchnet"):                   # dataset wrappers, only used by their data loaders
        stub_package("torchnet", "dataset", ("TensorDataset", "ResampleDataset"))
    if missing("nltk"):                       # datasets.py (CUB sentences)
        stub_package("nltk", "tokenize", ("sent_tokenize", "word_tokenize"))
    return stubbed


def build_authors(seed: int):
    src = os.environ.get("MMVAE_AUTHORS_SRC")
    if not src or not os.path.isfile(os.path.join(src, "objectives.py")):
        raise SystemExit("set MMVAE_AUTHORS_SRC to the src/ directory of a checkout of iffsid/mmvae")
    stubbed = _stub_missing_modules()
    sys.path.insert(0, os.path.abspath(src))
    import objectives as authors_objectives  # noqa: E402  (their module)
    from models.mmvae_mnist_svhn import MNIST_SVHN  # noqa: E402
    # main.py's arguments for the paper's MNIST-SVHN run
    params = argparse.Namespace(latent_dim=20, num_hidden_layers=1, learn_prior=True, llik_scaling=0.0)
    torch.manual_seed(seed)
    return authors_objectives, MNIST_SVHN(params), stubbed


def load_authors_state(model, path: Optional[str]) -> None:
    """Give their model the same weights as ours (their speed does not depend on them, but be fair)."""
    if path:
        ours = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(authors_state_from_ours(ours, model.state_dict()))


def run_authors(args: argparse.Namespace) -> dict[str, Any]:
    if args.objective not in AUTHORS_OBJECTIVES:
        raise SystemExit(f"no authors' counterpart for {args.objective!r}; choose one of {sorted(AUTHORS_OBJECTIVES)}")
    if args.objective == "m_elbo_is" and args.K != 1:
        raise SystemExit("the authors' m_elbo always draws K=1 sample; use --K 1")
    objs, model, stubbed = build_authors(args.seed)
    load_authors_state(model, args.state)
    model.to(args.device)
    objective = getattr(objs, AUTHORS_OBJECTIVES[args.objective])
    optimizer = torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-3, amsgrad=True)
    feed = batch_feed(args)
    info: dict[str, Any] = {**after_setup(), "authors_objective": objective.__name__,
                            "stubbed_modules": stubbed}
    torch.manual_seed(args.seed)

    def step():   # main.py's train(): zero_grad, loss = -objective, backward, step, loss.item()
        b = feed()
        model.train()
        optimizer.zero_grad()
        loss = -objective(model, [b["mnist"], b["svhn"]], K=args.K)
        loss.backward()
        optimizer.step()
        return loss.item() / args.batch   # they sum over the batch; report the per-example value

    times, util, value = time_calls(step, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=-value, flop_fn=step)
    return info


def run_authors_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Their report/calculate_likelihoods.py ``m_iwae``: one forward at K samples per batch of pairs."""
    objs, model, stubbed = build_authors(args.seed)
    from utils import log_mean_exp  # their utils
    load_authors_state(model, args.state)
    model.to(args.device).eval()
    b = make_batch(args, args.eval_pairs)
    info: dict[str, Any] = {**after_setup(), "stubbed_modules": stubbed}
    torch.manual_seed(args.seed)

    def m_iwae(x, K):
        qz_xs, px_zs, zss = model(x, K)
        lws = []
        for r, qz_x in enumerate(qz_xs):
            lpz = model.pz(*model.pz_params).log_prob(zss[r]).sum(-1)
            lqz_x = log_mean_exp(torch.stack([q.log_prob(zss[r]).sum(-1) for q in qz_xs]))
            lpx_z = [px_z.log_prob(x[d]).view(*px_z.batch_shape[:2], -1).mul(model.vaes[d].llik_scaling).sum(-1)
                     for d, px_z in enumerate(px_zs[r])]
            lws.append(lpz + torch.stack(lpx_z).sum(0) - lqz_x)
        return log_mean_exp(torch.cat(lws)).sum()

    @torch.no_grad()
    def run():
        total = 0.0
        for i in range(0, args.eval_pairs, args.eval_batch):
            total += m_iwae([b["mnist"][i:i + args.eval_batch], b["svhn"][i:i + args.eval_batch]], args.eval_K).item()
        return total / args.eval_pairs

    times, util, value = time_calls(run, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=value, flop_fn=run)
    return info


# ---------------------------------------------------------------------------------------------
# MultiVae (never vendored: see bench/multivae.py)
# ---------------------------------------------------------------------------------------------
def build_multivae(args: argparse.Namespace, objective: str):
    from bench import multivae
    model = multivae.build(args.seed, args.K, objective)
    if args.state:   # ours -> the authors' layout -> MultiVae's, so the three see the same weights
        ours = torch.load(args.state, map_location="cpu", weights_only=True)
        theirs = authors_state_from_ours(ours, multivae.authors_layout_template(model))
        model.load_state_dict(multivae.state_from_authors(theirs, model))
    return multivae, model.to(args.device)


def run_multivae(args: argparse.Namespace) -> dict[str, Any]:
    mv, model = build_multivae(args, args.objective)
    step = mv.train_step_fn(model, batch_feed(args))
    info: dict[str, Any] = {**after_setup(), "multivae_loss": model.model_config.loss}
    torch.manual_seed(args.seed)
    times, util, value = time_calls(step, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=value, flop_fn=step)
    return info


def run_multivae_eval(args: argparse.Namespace) -> dict[str, Any]:
    mv, model = build_multivae(args, "m_iwae_stratified")
    run = mv.eval_fn(model.eval(), make_batch(args, args.eval_pairs), args.eval_K, args.eval_batch, args.eval_chunk)
    info: dict[str, Any] = {**after_setup(), "multivae_eval": "compute_joint_nll_paper"}
    torch.manual_seed(args.seed)
    times, util, value = time_calls(run, args.steps, args.warmup)
    info.update(times=times, cpu_utilisation=util, objective_value=value, flop_fn=run)
    return info


RUNNERS = {  # implementation -> (train step, evaluation)
    "mmvae_lite": (run_ours, run_ours_eval),
    "authors": (run_authors, run_authors_eval),
    "multivae": (run_multivae, run_multivae_eval),
}


# ---------------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist-svhn-paper", choices=sorted(CONFIGS))
    p.add_argument("--objective", default="m_dreg_stratified")
    p.add_argument("--gradient", default="dreg", choices=["dreg", "stl"], help="DReG-family gradient (ours)")
    p.add_argument("--K", type=int, default=None, help="importance samples per modality (default: the config's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (or timed evaluation passes with --eval)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--impl", default="mmvae_lite", choices=["mmvae_lite", "authors", "multivae"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plain", action="store_true", help="mmvae_lite with its CPU fast paths off")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "mnist-svhn"],
                   help="synthetic uniform tensors, or test pairs from mmvae_lite.data (real MNIST; SVHN or its stand-in)")
    p.add_argument("--data-root", default=None, help="data directory for --data mnist-svhn (default: $MMVAE_LITE_DATA)")
    p.add_argument("--stream", action="store_true",
                   help="a new batch of MNIST-SVHN training pairs every step (a real run's first steps; implies --data mnist-svhn)")
    p.add_argument("--state", default=None,
                   help="model weights (an mmvae_lite state_dict, e.g. from bench.pretrain); given to every implementation")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   help="torch.compile encoder/decoder bodies (ours; optional mode, e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--eval", action="store_true", help="time IWAE-K estimation instead of a train step")
    p.add_argument("--eval-K", type=int, default=1000)
    p.add_argument("--eval-pairs", type=int, default=32, help="pairs timed; the result is scaled to 1000 pairs")
    p.add_argument("--eval-batch", type=int, default=None,
                   help="pairs per forward (default: 32 ours; 12000 // K for the authors, as their script)")
    p.add_argument("--eval-chunk", type=int, default=50, help="samples per modality per decoder call (ours and MultiVae's batch_size_K)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (timings on a GPU include a synchronisation per step)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (ours, CUDA only)")
    p.add_argument("--flops", action="store_true",
                   help="after timing, count the GFLOP of one more step (torch's FLOP formulas) and report GFLOP/s")
    p.add_argument("--peak", action="store_true",
                   help="only measure this machine's attainable GFLOP/s (convolutions like the networks', a GEMM)")
    p.add_argument("--out", default=None, help="also append the JSON line to this file")
    args = p.parse_args(argv)
    if args.stream:
        if args.eval:
            p.error("--stream times training steps; it does not apply to --eval")
        args.data = "mnist-svhn"
    experiment, preset = CONFIGS[args.config]
    from mmvae_lite import get_config
    cfg = get_config(experiment, preset)
    args.K = cfg.K if args.K is None else args.K
    args.batch = cfg.batch_size if args.batch is None else args.batch
    if args.eval_batch is None:
        args.eval_batch = max(1, 12000 // args.eval_K) if args.impl == "authors" else 32
    if args.eval_batch > args.eval_pairs:
        args.eval_batch = args.eval_pairs
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.peak:
        res = {"mode": "peak", "gflops": peak_gflops(), "threads": torch.get_num_threads(),
               "device": device_name("cpu"), "torch": torch.__version__}
        print(json.dumps(res), flush=True)
        return res
    t0 = time.perf_counter()
    info = RUNNERS[args.impl][1 if args.eval else 0](args)
    times = info.pop("times")
    flop_fn = info.pop("flop_fn", None)
    med = statistics.median(times)
    peak_mb = peak_rss_mb()   # before the (untimed) FLOP-counting step, which may use more memory
    if args.flops and flop_fn is not None:
        gflop = count_gflop(flop_fn)
        info.update(gflop_per_step=round(gflop, 3), gflops_achieved=round(gflop / med, 3))
    res: dict[str, Any] = {
        "implementation": args.impl, "mode": "eval" if args.eval else "train", "config": args.config,
        "objective": ("iwae_mixture" if args.eval else args.objective),
        "K": args.eval_K if args.eval else args.K,
        "batch": args.eval_batch if args.eval else args.batch,
    }
    if args.eval:
        res.update(pairs=args.eval_pairs, eval_s_median=med, s_per_1000_pairs=med * 1000 / args.eval_pairs,
                   samples_per_s=args.eval_pairs / med, step_s_median=med,
                   chunk=args.eval_K if args.impl == "authors" else args.eval_chunk)
    else:
        # a run's throughput is its total time (mean step) once steps differ; one fixed batch: the median
        res.update(samples_per_s=args.batch / (statistics.fmean(times) if args.stream else med), step_s_median=med,
                   step_s_mean=statistics.fmean(times))
    cpu_times = getattr(time_calls, "cpu_times", [])
    if cpu_times:
        cmed = statistics.median(cpu_times)
        res.update(cpu_s_median=cmed, samples_per_cpu_s=(args.eval_pairs if args.eval else args.batch) / cmed)
    res.update(step_s=[round(t, 4) for t in times], cpu_s=[round(t, 4) for t in cpu_times],
               peak_rss_mb=round(peak_mb, 1),
               gpu_peak_mb=(round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
                            if torch.device(args.device).type == "cuda" else None),
               rss_before_mb=round(info.pop("rss_before_mb"), 1), setup_peak_mb=round(info.pop("setup_peak_mb"), 1),
               threads=torch.get_num_threads(),
               device=device_name(args.device), torch=torch.__version__, python=platform.python_version(),
               plain=bool(args.plain), compile=args.compile, data=args.data, state=args.state, steps=args.steps, warmup=args.warmup,
               loadavg_before=load0, loadavg_after=os.getloadavg() if hasattr(os, "getloadavg") else None,
               total_s=round(time.perf_counter() - t0, 2))
    res.update(info)
    line = json.dumps(res)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return res


if __name__ == "__main__":
    main()
