"""Training: a small :class:`Trainer` with Adam (AMSGrad), progress bars, history, checkpoints and exact resume.

Data sources (:mod:`mmvae_lite.batches`): anything with a ``batches(batch_size, shuffle=...,
generator=..., device=...)`` method (the datasets of :mod:`mmvae_lite.data`), a tensor or dict of
tensors with the examples on the first axis, or any re-iterable of batches, such as a
``torch.utils.data.DataLoader`` with the default collate over the package's datasets:
:func:`~mmvae_lite.batches.model_batch` turns each batch (a dict, a tensor, or the tuples/lists that
collate makes of ``(data, label)`` items) into what the model takes.

Determinism: the data order of epoch ``e`` comes from a generator seeded by ``(seed, e)`` and the
global torch RNG (latent samples) is saved in every checkpoint, so training 2 epochs equals
training 1, saving, loading and training 1 more.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
import torch.nn as nn

from .batches import Batch, batch_rows, iterate_batches, model_batch, num_batches
from .runtime import (HeapTrimmer, available_devices, progress_enabled, seed_everything,  # noqa: F401 (re-exported)
                      select_device)
from .checks import check_int
from .checkpoint import (FORMAT, VERSION, CheckpointError, load_weights, model_differences, model_info,
                         optimizer_differences, parameter_differences, read_checkpoint, snapshot_name,
                         training_differences)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if hasattr(torch.nn.utils, "get_total_norm"):          # torch >= 2.6: fused
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))


def make_adam(params: list[torch.Tensor], lr: float = 1e-3, amsgrad: bool = True) -> torch.optim.Adam:
    """Adam (AMSGrad by default, as the paper), using the fused single-kernel update where this torch
    supports it for these parameters (CPU since torch 2.4, CUDA): the same update rule, about 3x faster
    than the per-parameter loop for the MNIST-SVHN networks on CPU. Falls back to the default otherwise."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, amsgrad=amsgrad, fused=True)
    except (RuntimeError, TypeError, ValueError):   # older torch, or a device / dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, amsgrad=amsgrad)


class NonFiniteError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the message names the step and the term."""


def atomic_save(obj: Any, path: "str | Path") -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a directory; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"cannot save to {path}: a parent of it is a file, not a folder") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@dataclass
class EpochRecord:
    epoch: int
    train: float
    test: Optional[float]
    seconds: float


@dataclass
class History:
    """Per-epoch records of the objective on train (running mean) and test (no-grad estimate)."""

    records: list[EpochRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> EpochRecord:
        return self.records[i]

    @property
    def train(self) -> list[float]:
        return [r.train for r in self.records]

    @property
    def test(self) -> list[Optional[float]]:
        return [r.test for r in self.records]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(r.__dict__) for r in self.records]

    def to_frame(self):  # pandas is a dependency of the package
        import pandas as pd
        columns = ["epoch", "train", "test", "seconds"]
        return pd.DataFrame(self.to_dicts(), columns=columns).set_index("epoch")


class Trainer:
    """Maximise ``objective(model, batch, K)`` with Adam (AMSGrad, lr 1e-3 by default, as in the paper).

    Args:
        model: a :class:`~mmvae_lite.models.VAE` or :class:`~mmvae_lite.models.MultimodalVAE`.
        objective: a function ``(model, batch, K) -> scalar`` (see :mod:`mmvae_lite.objectives`).
        K: importance samples per modality during training.
        eval_objective / eval_K: the test-set estimate reported each epoch (default: ``objective``).
        device: chosen once here (``None``: cuda > mps > cpu); the model is moved to it.
        bf16: autocast the forward pass to bfloat16 (CUDA only; ignored with a warning elsewhere).
        progress: show tqdm bars (``tqdm.auto``: a widget in notebooks, text in terminals); default on
            unless the environment variable ``MMVAE_LITE_PROGRESS`` is ``0``.
        verbose: print one line per epoch.
        checkpoint: a path; the state is saved there atomically after every epoch.
        warmup_steps: raise the learning rate linearly over the first ``warmup_steps`` steps (step k
            runs at ``lr * (k + 1) / warmup_steps``; ``torch.optim.lr_scheduler.LinearLR``); 0, the
            paper's choice: none. Adam's first steps move every weight by about ``lr`` whatever the
            size of its gradient; on a fresh model or a warm start they switch off (ReLU) a quarter to
            a half of the MNIST encoder's units for good, which a warm-up mostly avoids
            (results/README.md measures it, and :func:`~mmvae_lite.evaluation.dead_units` counts them).
        snapshots: also keep a copy of the checkpoint of every epoch beside it, ``epochNN.pt``
            (``epoch01.pt`` ...): the snapshots of a run's time-to-coherence curve
            (:func:`mmvae_lite.reference.coherence_curve`).
        trim_heap: on CPU, return fragmented heap memory to the OS after steps that grew the
            resident size by more than 128 MB (:class:`HeapTrimmer`; glibc only).
        check_every: how often (in steps) :meth:`fit` makes the host wait for the device to confirm
            that the loss and the gradients are finite. ``None``: every step on CPU, where the check
            costs nothing; every 50 steps on an accelerator, where each check is a host-device
            synchronisation that keeps the host from queueing the next kernels while the device
            works. Between checks the objective is summed on the device. A non-finite step is
            then reported up to ``check_every - 1`` steps late, by its own epoch and step number;
            the checkpoint is never written past it. :meth:`train_step` always checks its step.
    """

    def __init__(self, model: nn.Module, objective: Callable[..., torch.Tensor], *, K: int = 1, lr: float = 1e-3,
                 amsgrad: bool = True, batch_size: int = 128, seed: int = 1,
                 eval_objective: Optional[Callable[..., torch.Tensor]] = None, eval_K: Optional[int] = None,
                 device: "str | torch.device | None" = None, bf16: bool = False, progress: Optional[bool] = None,
                 verbose: bool = True, checkpoint: "str | Path | None" = None,
                 config: Optional[Mapping[str, Any]] = None, trim_heap: bool = True,
                 check_every: Optional[int] = None, snapshots: bool = False, warmup_steps: int = 0) -> None:
        if not callable(objective):
            raise TypeError(f"objective must be a function (model, batch, K) -> value, e.g. mmvae_lite.objectives.elbo"
                            f" or get_objective({objective!r}); got {type(objective).__name__}")
        if eval_objective is not None and not callable(eval_objective):
            raise TypeError(f"eval_objective must be a function (model, batch, K) -> value or None; "
                            f"got {type(eval_objective).__name__}")
        check_int(K, "K", 1, what="importance samples per modality")
        check_int(batch_size, "batch_size", 1, what="examples per step")
        if eval_K is not None:
            check_int(eval_K, "eval_K", 1, what="importance samples of the test estimate, or None for K")
        check_int(seed, "seed", None, what="the seed of the data order")
        check_int(warmup_steps, "warmup_steps", 0, what="steps of linear learning-rate warm-up (0: none)")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0 (the paper: 1e-3), got {lr!r}")
        if check_every is not None:
            check_int(check_every, "check_every", 1, what="or None for the device's default")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a VAE or MultimodalVAE), got {type(model).__name__}")
        self.device = select_device(device)
        self.check_every = check_every or (1 if self.device.type == "cpu" else 50)
        # steps not yet checked: (epoch, step, (loss finite, gradient finite), objective value), all on the device
        self._pending: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        self.model = model.to(self.device)
        self.objective, self.K = objective, int(K)
        self.eval_objective, self.eval_K = eval_objective or objective, int(eval_K or K)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.lr, self.amsgrad = float(lr), bool(amsgrad)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"the model ({type(model).__name__}) has no trainable parameters")
        self.optimizer = make_adam(params, lr=lr, amsgrad=amsgrad)
        self.warmup_steps = int(warmup_steps)
        # step k (from 0) runs at lr * (k + 1) / warmup_steps, then at lr
        self.scheduler = (torch.optim.lr_scheduler.LinearLR(self.optimizer, start_factor=1 / self.warmup_steps,
                                                            total_iters=max(self.warmup_steps - 1, 1))
                          if self.warmup_steps else None)
        self.bf16 = bf16 and self.device.type == "cuda"
        if bf16 and not self.bf16:
            import warnings
            warnings.warn("bf16 autocast is only used on CUDA; training in float32", stacklevel=2)
        if progress is None:   # MMVAE_LITE_PROGRESS=0 turns bars off (the book's CI build sets it)
            progress = progress_enabled()
        self.progress, self.verbose = progress, verbose
        # on CPU, hand fragmented heap memory back after steps that grew it (see HeapTrimmer)
        self.heap = HeapTrimmer() if (trim_heap and self.device.type == "cpu") else None
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if self.checkpoint is not None and self.checkpoint.is_dir():
            raise ValueError(f"checkpoint must be a file path, and {self.checkpoint} is a directory "
                             f"(e.g. give {self.checkpoint / 'checkpoint.pt'})")
        if snapshots and self.checkpoint is None:
            raise ValueError("snapshots=True keeps copies of the checkpoint: give checkpoint= a file path too")
        self.snapshots = bool(snapshots)
        self.config = dict(config) if config is not None else {}
        self.epoch = 0
        self.step = 0
        self.history = History()

    # -- one step -------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self, batch: Batch) -> float:
        """One optimiser step on a batch; returns the objective's value (checked finite at once)."""
        return self._step(batch, check=True).item()

    def _step(self, batch: Batch, check: bool) -> torch.Tensor:
        """One optimiser step; returns the objective's value as a detached 0-d tensor on the device.

        With ``check`` a non-finite loss or gradient raises at once (two host-device
        synchronisations); without it the two finiteness flags are kept on the device for
        :meth:`_check_pending`, and the step never waits for the device.
        """
        batch = model_batch(batch, self.model)
        if batch_rows(batch) == 0:
            raise ValueError("train_step: an empty batch (0 examples)")
        self.model.train()
        with self._autocast():
            value = self.objective(self.model, batch, self.K)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"the objective {getattr(self.objective, '__name__', self.objective)!r} must return a "
                            f"0-d tensor (the batch mean of the bound, to maximise), got {got}")
        loss = -value
        if check and not torch.isfinite(loss):
            raise self._loss_error(loss.item(), self.epoch + 1, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # one fused norm over all gradients; only if it is non-finite do we look for the culprit
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        total = _total_norm(grads)
        value = value.detach()
        if check:
            if not torch.isfinite(total):
                bad = [n for n, p in self.model.named_parameters()
                       if p.grad is not None and not torch.isfinite(p.grad).all()] or ["?"]
                raise self._grad_error(self.epoch + 1, self.step, f" in parameter '{bad[0]}' ({len(bad)} affected).")
        else:
            flags = torch.stack([torch.isfinite(loss), torch.isfinite(total)])
            self._pending.append((self.epoch + 1, self.step, flags, value))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        if self.heap is not None:
            self.heap.after_step()
        return value

    def _loss_error(self, value: float, epoch: int, step: int, late: str = "") -> NonFiniteError:
        return NonFiniteError(f"non-finite objective ({value}) at epoch {epoch}, step {step}: "
                              f"term '{getattr(self.objective, '__name__', self.objective)}'.{late} "
                              f"The last checkpoint was left untouched.")

    @staticmethod
    def _grad_error(epoch: int, step: int, detail: str) -> NonFiniteError:
        return NonFiniteError(f"non-finite gradient at epoch {epoch}, step {step}{detail} "
                              f"The last checkpoint was left untouched.")

    def _check_pending(self) -> None:
        """Raise :class:`NonFiniteError` for the first unchecked step whose loss or gradient was not finite."""
        if not self._pending:
            return
        flags = torch.stack([f for _, _, f, _ in self._pending]).cpu()      # (steps, 2): one synchronisation
        pending, self._pending = self._pending, []
        if bool(flags.all()):
            return
        i = int((~flags.all(dim=1)).nonzero()[0, 0])
        epoch, step, _, value = pending[i]
        later = len(pending) - 1 - i
        late = (f" (found {later} step{'s' if later != 1 else ''} later: finiteness is checked every {self.check_every} "
                f"steps on {self.device.type}; the parameters were updated since, Trainer(check_every=1) stops at "
                f"the step itself and names the parameter)")
        if not bool(flags[i, 0]):
            raise self._loss_error(value.item(), epoch, step, late)
        raise self._grad_error(epoch, step, f".{late}")

    @torch.no_grad()
    def evaluate(self, data: Any, K: Optional[int] = None, batch_size: Optional[int] = None) -> float:
        """The mean of ``eval_objective`` over ``data`` (no gradients, model in eval mode)."""
        if data is None:
            raise ValueError("evaluate: no data given (a dataset, a dict of tensors or a DataLoader)")
        if K is not None:
            check_int(K, "K", 1, what="importance samples per modality, or None for eval_K")
        if batch_size is not None:
            check_int(batch_size, "batch_size", 1, what="examples per batch, or None for the trainer's")
        self.model.eval()
        total, n = 0.0, 0
        gen = torch.Generator().manual_seed(0)
        for batch in iterate_batches(data, batch_size or self.batch_size, shuffle=False, generator=gen,
                                     device=self.device):
            batch = model_batch(batch, self.model)
            b = batch_rows(batch)
            if b == 0:
                continue
            with self._autocast():
                total += float(self.eval_objective(self.model, batch, K or self.eval_K)) * b
            n += b
        if n == 0:
            raise ValueError(f"evaluate: the data ({type(data).__name__}) has no examples")
        return total / n

    # -- epochs ---------------------------------------------------------------------------------
    def _bar(self, it: Iterable, total: Optional[int], desc: str):
        if not self.progress:
            return it
        from tqdm.auto import tqdm
        return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def fit(self, train: Any, epochs: int, test: Any = None) -> History:
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues where it stopped).

        Raises ``ValueError`` for empty training data or ``epochs`` below the epochs already done, and
        :class:`NonFiniteError` for a non-finite step or test value (neither recorded nor checkpointed).
        """
        check_int(epochs, "epochs", 1, what="the total number of epochs to reach")
        if epochs < self.epoch:
            raise ValueError(f"epochs={epochs} is fewer than the {self.epoch} epochs this trainer has done: "
                             f"epochs counts the total (a resumed trainer continues up to it)")
        if train is None:
            raise ValueError("fit: no training data given (a dataset, a dict of tensors or a DataLoader)")
        if num_batches(train, self.batch_size) == 0:
            raise ValueError(f"fit: the training data ({type(train).__name__}) has no examples")
        while self.epoch < epochs:
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            acc = torch.float32 if self.device.type == "mps" else torch.float64   # MPS has no float64
            running, count = torch.zeros((), dtype=acc, device=self.device), 0
            eager = self.check_every == 1
            bar = self._bar(iterate_batches(train, self.batch_size, True, gen, self.device),
                            num_batches(train, self.batch_size), f"epoch {self.epoch + 1}/{epochs}")
            try:
                for batch in bar:
                    running += self._step(batch, check=eager)   # summed on the device: no synchronisation
                    count += 1
                    if len(self._pending) >= self.check_every:
                        self._check_pending()
                    if (self.progress and count % max(10, self.check_every) == 0
                            and hasattr(bar, "set_postfix")):
                        bar.set_postfix(objective=f"{running.item() / count:.1f}")
                self._check_pending()
            finally:
                self._pending = []
            if count == 0:
                raise ValueError(f"fit: the training data ({type(train).__name__}) yielded no batches")
            running = running.item()
            test_value = self.evaluate(test) if test is not None else None
            if test_value is not None and not math.isfinite(test_value):
                name = getattr(self.eval_objective, "__name__", self.eval_objective)
                raise NonFiniteError(f"non-finite test objective ({test_value}) after epoch {self.epoch + 1}: "
                                     f"term '{name}' (K={self.eval_K}). Not recorded; the last checkpoint was "
                                     f"left untouched.")
            self.epoch += 1
            rec = EpochRecord(self.epoch, running / max(count, 1), test_value, time.perf_counter() - t0)
            self.history.records.append(rec)
            if self.verbose:
                msg = f"epoch {rec.epoch:3d}  train {rec.train:10.2f}"
                msg += f"  test {rec.test:10.2f}" if rec.test is not None else ""
                print(msg + f"  ({rec.seconds:.1f} s)", flush=True)
            if self.checkpoint is not None:
                self.save(self.checkpoint)
                if self.snapshots:
                    shutil.copyfile(self.checkpoint, self.checkpoint.with_name(snapshot_name(self.epoch)))
        return self.history

    # -- checkpoints ----------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The training settings a checkpoint records (compared, with a warning, on :meth:`load`)."""
        def name(f: Any) -> str:   # stable across processes: a partial by its function and keywords
            if isinstance(f, functools.partial):
                return f"{name(f.func)}({', '.join(f'{k}={v!r}' for k, v in f.keywords.items())})"
            return str(getattr(f, "__name__", f))
        return {"objective": name(self.objective), "K": self.K, "eval_objective": name(self.eval_objective),
                "eval_K": self.eval_K, "batch_size": self.batch_size, "seed": self.seed, "lr": self.lr,
                "amsgrad": self.amsgrad, "warmup_steps": self.warmup_steps}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: see :mod:`mmvae_lite.checkpoint` for its keys (format version 1)."""
        state = {
            "format": FORMAT, "version": VERSION,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "step": self.step, "history": self.history.to_dicts(),
            "torch_rng": torch.get_rng_state(), "config": self.config,
            "model_info": model_info(self.model), "trainer": self.settings(),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, path: "str | Path") -> Path:
        """Save model, optimiser, epoch, history and RNG state atomically."""
        return atomic_save(self.state_dict(), path)

    def load(self, path: "str | Path") -> "Trainer":
        """Restore a :meth:`save` d state (``weights_only=True``: no code is unpickled).

        Everything is checked before the model or the optimiser is touched: the file is a readable
        trainer checkpoint of a known version; its experiment and model kind (MMVAE, MVAE, VAE),
        modalities, parameter names and shapes and optimiser state fit this trainer. A refusal is a
        :class:`~mmvae_lite.checkpoint.CheckpointError` naming the file and what differs. Training
        settings that differ (objective, K, batch size, seed, lr) only warn: resuming is then not exact,
        and the optimiser keeps the checkpoint's learning rate. Bare weights:
        :func:`~mmvae_lite.checkpoint.load_weights`.
        """
        state = read_checkpoint(path, map_location=self.device)
        path = Path(path)
        problems = (model_differences(state, self.model, self.config)
                    + parameter_differences(state["model"], self.model)
                    + optimizer_differences(state["optimizer"], self.optimizer))
        if problems:
            raise CheckpointError(f"{path} does not fit this trainer:\n  " + "\n  ".join(problems))
        try:
            epoch, step = int(state["epoch"]), int(state["step"])
            history = History([EpochRecord(**r) for r in state["history"]])
            rng = state["torch_rng"].cpu()
        except (TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: malformed epoch/step/history/RNG entries ({e})") from None
        differ = training_differences(state, self.settings())
        if differ:
            warnings.warn(f"{path} was trained with other settings ({'; '.join(differ)}): resuming is not exact",
                          stacklevel=2)
        if state["version"] == 0 and self.verbose:
            print(f"note: {path} is a version-0 checkpoint (written before checkpoints carried a version); "
                  f"loaded, and saved as version {VERSION} from now on")
        backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and isinstance(state.get("scheduler"), dict):
                self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as e:   # checked above; never leave a half-loaded model
            self.model.load_state_dict(backup)
            raise CheckpointError(f"{path} could not be loaded into this trainer: {str(e).splitlines()[0]}") from None
        self.epoch, self.step, self.history = epoch, step, history
        torch.set_rng_state(rng)
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        if not self.config and state.get("config"):
            self.config = dict(state["config"])
        return self

    def load_model(self, path: "str | Path") -> "Trainer":
        """Load only the model's weights (a bare ``state_dict`` or a checkpoint's model); see
        :func:`~mmvae_lite.checkpoint.load_weights`. Optimiser, epoch and history are unchanged."""
        load_weights(self.model, path)
        return self


__all__ = ["Trainer", "History", "EpochRecord", "NonFiniteError", "CheckpointError", "select_device",
           "available_devices", "seed_everything", "iterate_batches", "model_batch", "load_weights", "atomic_save"]
