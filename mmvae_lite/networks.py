"""Encoders and decoders of the paper's appendix F (Table 6), plus a 64x64 RGB image CNN.

Conventions shared by every network here:

* an **encoder** maps data of shape ``(*lead, *event)`` to ``(loc, raw_scale)``, both
  ``(*lead, L)``; ``raw_scale`` is unconstrained and turned into a scale by the modality's
  :func:`~mmvae_lite.distributions.positive_scale` rule;
* a **decoder** maps latents ``(*lead, L)`` to likelihood parameters ``(*lead, *params)``;
* ``lead`` is any number of sample/batch dimensions, e.g. ``(K, B)`` or ``(M, K, B)``: convolutional
  networks fold them into one batch dimension and unfold them afterwards.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

FAST_PATHS = True
"""Performance switch for the CPU: run the image decoders' transposed-convolution stacks through
:func:`upconv_stack` (mathematically identical, faster formulations; see there). ``False`` runs the
plain ``nn.Sequential``; ``bench/numerics.py`` checks both give the same bound."""


def _fold(x: torch.Tensor, event_dims: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (which wants exactly one batch dim) to ``x`` with arbitrary leading dims."""
    lead = x.shape[: x.dim() - event_dims]
    y = fn(x.reshape(-1, *x.shape[x.dim() - event_dims:]))
    return y.reshape(*lead, *y.shape[1:])


class Encoder(nn.Module):
    """Base class: subclasses set ``event_shape`` and implement ``_body`` (one batch dim)."""

    event_shape: tuple[int, ...]
    float_input: bool = False   # True: takes floats of its parameters' dtype (checked); False: not declared

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x)
        out = _fold(x, len(self.event_shape), self._body)  # (*lead, 2, L)
        return out[..., 0, :], out[..., 1, :]

    def _body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        """A clear error, naming the encoder, for input of the wrong shape or dtype (cheap: no data read)."""
        name, event = type(self).__name__, tuple(self.event_shape)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() < len(event) + 1 or tuple(x.shape[x.dim() - len(event):]) != event:
            raise ValueError(f"{name}: expected input of shape (*batch, {', '.join(map(str, event))}), got {tuple(x.shape)}")
        if not self.float_input:
            return
        want = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        if x.dtype != want and not (x.is_floating_point() and autocast_enabled(x.device.type)):
            hint = "x.float() / 255 (images are floats in [0, 1])" if x.dtype == torch.uint8 else f"x.to({want})"
            raise TypeError(f"{name}: expected {want} input (the dtype of its parameters), got {x.dtype}; convert with {hint}")


class Decoder(nn.Module):
    """Base class: subclasses implement ``_body`` mapping ``(N, L)`` to ``(N, *params)``.

    ``row_sparse_backward`` (performance only, exact): subclasses whose ``_body`` treats rows
    independently and deterministically (no batch norm, no dropout) set it to skip, in backward,
    the latents whose output gradient is exactly zero. See :class:`_RowSparseRecompute`.
    """

    row_sparse_backward: bool = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if (self.row_sparse_backward and FAST_PATHS and torch.is_grad_enabled() and z.device.type == "cpu"
                and not _autocast_on()):
            return _fold(z, 1, self._body_row_sparse)
        return _fold(z, 1, self._body)

    def _body(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _body_row_sparse(self, z: torch.Tensor) -> torch.Tensor:
        params = tuple(p for p in self.parameters() if p.requires_grad)
        if not (z.requires_grad or params):
            return self._body(z)
        stats = self.__dict__.get("_grad_rows")
        if stats is None:
            stats = self.__dict__["_grad_rows"] = _GradRowStats()
        if stats.predict_sparse():
            return _RowSparseRecompute.apply(z, self._body, stats, *params)
        y = self._body(z)
        if y.requires_grad:
            y.register_hook(stats.observe_grad)
        return y


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is active for this device type (any torch version)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _autocast_on() -> bool:
    """Whether CPU autocast is active (the recompute in backward would not see it, so skip the fast path)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


SPARSE_BACKWARD_BELOW = 0.6
"""Use :class:`_RowSparseRecompute` when, at the previous step, fewer than this fraction of a
decoder's latents received a nonzero gradient (break-even is about 0.7: the recompute costs one
extra gradient-free forward pass)."""


class _GradRowStats:
    """The fraction of a decoder's rows (latents) that received a nonzero gradient at its last backward."""

    __slots__ = ("fraction",)

    def __init__(self) -> None:
        self.fraction: "float | None" = None

    def predict_sparse(self) -> bool:
        return self.fraction is not None and self.fraction < SPARSE_BACKWARD_BELOW

    def observe(self, nonzero_rows: int, rows: int) -> None:
        self.fraction = nonzero_rows / max(rows, 1)

    def observe_grad(self, g: torch.Tensor) -> None:
        self.observe(int(g.reshape(g.shape[0], -1).ne(0).any(1).sum()), g.shape[0])


class _RowSparseRecompute(torch.autograd.Function):
    """``y = body(z)`` row by row, differentiated only for the rows whose output gradient is nonzero.

    Performance only; the gradients are those of ``body`` up to float summation order. Under the
    DReG / IWAE objectives the gradient reaching decoder output row ``(m, k, b)`` is the normalised
    importance weight ``w~`` of that sample times a finite factor, and with K = 30 samples of a
    trained MNIST-SVHN model about 60% of the ``w~`` underflow to exactly 0.0 in float32 (log-weight
    gaps of hundreds of nats). Those rows add exact zeros to every parameter and latent gradient,
    so differentiating them is wasted work. Forward runs ``body`` without saving activations; backward
    re-runs it with gradients on the nonzero rows only and returns zeros for the others. Chosen
    per step from the previous step's observed fraction (:data:`SPARSE_BACKWARD_BELOW`), so dense
    objectives (ELBO, K = 1, an untrained model) keep the ordinary single pass. It also lowers the
    peak memory, since activations are kept only for the recomputed rows during backward.
    """

    @staticmethod
    def forward(ctx, z, body, stats, *params):
        ctx.body, ctx.stats = body, stats
        ctx.save_for_backward(z, *params)
        return body(z)

    @staticmethod
    def backward(ctx, g):
        z, *params = ctx.saved_tensors
        need_z, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[3:]
        idx = g.reshape(g.shape[0], -1).ne(0).any(1).nonzero().squeeze(1)
        ctx.stats.observe(idx.numel(), g.shape[0])
        if idx.numel() == 0:
            return (torch.zeros_like(z) if need_z else None, None, None,
                    *[torch.zeros_like(p) if n else None for p, n in zip(params, need_p)])
        dense = idx.numel() == g.shape[0]
        z_sel = (z if dense else z.index_select(0, idx)).detach().requires_grad_(need_z)
        with torch.enable_grad():
            y = ctx.body(z_sel)
        wrt = ([z_sel] if need_z else []) + [p for p, n in zip(params, need_p) if n]
        grads = list(torch.autograd.grad(y, wrt, g if dense else g.index_select(0, idx), allow_unused=True))
        gz = None
        if need_z:
            gz = grads.pop(0)
            if not dense:
                gz = torch.zeros_like(z).index_copy_(0, idx, gz)
        gp = [(grads.pop(0) if n else None) for n in need_p]
        gp = [torch.zeros_like(p) if (n and g_ is None) else g_ for p, n, g_ in zip(params, need_p, gp)]
        return (gz, None, None, *gp)


# --------------------------------------------------------------------------------------------
# Fast paths for the transposed-convolution decoders (performance only; parameters, state_dict
# and results are those of the plain nn.Sequential, up to float rounding).
# --------------------------------------------------------------------------------------------
def _is_plain_upconv(m: nn.ConvTranspose2d) -> bool:
    return m.groups == 1 and m.dilation == (1, 1) and m.output_padding == (0, 0) and m.padding_mode == "zeros"


def _upconv_from_vector(m: nn.ConvTranspose2d, z: torch.Tensor) -> torch.Tensor:
    """``m(z[:, :, None, None])`` for a padding-0 transposed conv of a 1x1 input: a linear map L -> C*kh*kw.

    oneDNN runs this layer at a few GFLOP/s (a 1x1 "image"); one ``addmm`` does the same products.
    The weight is laid out so the result is channels-last, the layout the next layers want.
    """
    C, (kh, kw) = m.out_channels, m.kernel_size
    w = m.weight.permute(0, 2, 3, 1).reshape(m.in_channels, kh * kw * C)       # (L, kh, kw, C)
    y = torch.addmm(m.bias.repeat(kh * kw), z, w) if m.bias is not None else z @ w
    return y.view(z.shape[0], kh, kw, C).permute(0, 3, 1, 2)                    # (N, C, kh, kw), NHWC memory


_SUBPIXEL_TAPS = torch.tensor([[2, 0], [3, 1]])   # [output phase p][window row dy] -> kernel row (k=4, s=2, p=1)


def _upconv_subpixel(m: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for kernel 4, stride 2, padding 1, as a 2x2 convolution to 4*Cout channels plus a pixel shuffle.

    Output pixel (2r+1+p, 2c+1+q) of the transposed convolution is the sum over the 2x2 input window
    at (r, c) (zero-padded by 1) of input * weight[..., 2+p-2dy, 2+q-2dx]: the same products, so the
    same math. oneDNN's transposed convolution is slow for few output channels (3 RGB planes: about
    3 GFLOP/s here), while a 2x2 convolution to 12 channels runs several times faster. The border
    windows compute one extra output ring, cropped afterwards ((H+1)^2 / H^2 = 1.13x the products at
    H = 16), so this is used only for the last, few-channel layer.
    """
    w = m.weight                                                                   # (Cin, Cout, 4, 4)
    t = _SUBPIXEL_TAPS.to(w.device)
    wk = w[:, :, t[:, :, None, None], t[None, None, :, :]]                         # (Cin, Cout, p, dy, q, dx)
    wk = wk.permute(1, 2, 4, 0, 3, 5).reshape(4 * m.out_channels, m.in_channels, 2, 2)
    b = m.bias.repeat_interleave(4) if m.bias is not None else None
    y = F.conv2d(x, wk, b, padding=1)                                              # (N, 4 Cout, H+1, W+1)
    n, _, h1, w1 = y.shape
    # pixel shuffle (channel co*4 + 2p + q -> pixel (2r+p, 2c+q)) as one copy into contiguous NCHW
    y = y.view(n, m.out_channels, 2, 2, h1, w1).permute(0, 1, 4, 2, 5, 3).reshape(n, m.out_channels, 2 * h1, 2 * w1)
    return y[:, :, 1:-1, 1:-1]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Image batches for the CNN encoders in channels-last layout on CPU (oneDNN's faster layout: about
    1.2x for the SVHN encoder's forward + backward here); unchanged elsewhere or with fast paths off."""
    if FAST_PATHS and x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def upconv_stack(net: nn.Sequential, z: torch.Tensor) -> torch.Tensor:
    """``net(z[:, :, None, None])`` for an image decoder stack (transposed convs and activations), faster on CPU.

    With :data:`FAST_PATHS` on a CPU tensor: the first layer (1x1 -> kxk) is a matrix product, the
    middle layers run channels-last (oneDNN's faster layout for these shapes), and a last layer with
    at most 4 output channels uses :func:`_upconv_subpixel`. The result is a contiguous tensor, the
    same values as the plain path up to float rounding. Anything else falls back to the plain path.
    """
    if not (FAST_PATHS and z.device.type == "cpu" and z.dim() == 2 and isinstance(net[0], nn.ConvTranspose2d)
            and _is_plain_upconv(net[0]) and net[0].padding == (0, 0)):
        return net(z[:, :, None, None])
    h = _upconv_from_vector(net[0], z)
    last = max(i for i, m in enumerate(net) if isinstance(m, nn.ConvTranspose2d))
    for i, m in enumerate(net):
        if i == 0:
            continue
        if (i == last and isinstance(m, nn.ConvTranspose2d) and _is_plain_upconv(m) and m.out_channels <= 4
                and m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)):
            h = _upconv_subpixel(m, h)
        else:
            h = m(h)
    return h.contiguous()


class ConvEncoder(Encoder):
    """A CNN encoder: subclasses set ``body`` (conv stack), ``heads`` (conv to 2L channels at 1x1)
    and ``latent_dim``."""

    float_input = True

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(_channels_last(x))).view(-1, 2, self.latent_dim)


class UpconvDecoder(Decoder):
    """A transposed-convolution decoder: subclasses set ``net`` (applied to the latent as a 1x1 image)."""

    row_sparse_backward = True   # rows independent: see Decoder

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return upconv_stack(self.net, z)   # = self.net(z[:, :, None, None]), faster on CPU


# --------------------------------------------------------------------------------------------
# MNIST: Table 6(a), an MLP with 400 hidden units.
# --------------------------------------------------------------------------------------------
class MNISTEncoder(Encoder):
    """1x28x28 -> FC 400 ReLU -> (FC L, FC L)."""

    event_shape = (1, 28, 28)
    float_input = True

    def __init__(self, latent_dim: int, hidden: int = 400) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(inplace=True))
        self.heads = nn.Linear(hidden, 2 * latent_dim)  # both heads in one matmul
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class MNISTDecoder(Decoder):
    """L -> FC 400 ReLU -> FC 784 Sigmoid, reshaped to 1x28x28 (mean of the pixel likelihood)."""

    row_sparse_backward = True   # rows independent: see Decoder

    def __init__(self, latent_dim: int, hidden: int = 400, eps: float = 1e-6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 784))
        self.eps = eps

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        # The authors clamp the mean to [eta, 1 - eta]; the clamp is kept for checkpoint fidelity.
        return torch.sigmoid(self.net(z)).clamp(self.eps, 1 - self.eps).view(-1, 1, 28, 28)


# --------------------------------------------------------------------------------------------
# SVHN: Table 6(b), a 4-layer CNN with 32-64-128 channels and 4x4 convolutional heads.
# --------------------------------------------------------------------------------------------
class SVHNEncoder(ConvEncoder):
    """3x32x32 -> conv 32, 64, 128 (4x4, stride 2) -> two 4x4 conv heads of L channels."""

    event_shape = (3, 32, 32)

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, base, 4, 2, 1), nn.ReLU(inplace=True),             # 16x16
            nn.Conv2d(base, base * 2, 4, 2, 1), nn.ReLU(inplace=True),      # 8x8
            nn.Conv2d(base * 2, base * 4, 4, 2, 1), nn.ReLU(inplace=True),  # 4x4
        )
        self.heads = nn.Conv2d(base * 4, 2 * latent_dim, 4, 1, 0)           # 1x1
        self.latent_dim = latent_dim


class SVHNDecoder(UpconvDecoder):
    """L -> upconv 128 (4x4) -> 64 -> 32 -> 3 channels (stride 2) -> Sigmoid: 3x32x32."""

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, base * 4, 4, 1, 0), nn.ReLU(inplace=True),  # 4x4
            nn.ConvTranspose2d(base * 4, base * 2, 4, 2, 1), nn.ReLU(inplace=True),    # 8x8
            nn.ConvTranspose2d(base * 2, base, 4, 2, 1), nn.ReLU(inplace=True),        # 16x16
            nn.ConvTranspose2d(base, 3, 4, 2, 1), nn.Sigmoid(),                        # 32x32
        )


# --------------------------------------------------------------------------------------------
# CUB image features: Table 6(c), MLPs on 2048-d ResNet-101 features.
# --------------------------------------------------------------------------------------------
def _mlp(sizes: Sequence[int], act: type[nn.Module] = nn.ELU, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class FeatureEncoder(Encoder):
    """2048 -> FC 1024 ELU -> 512 ELU -> 256 ELU -> (FC L, FC L)."""

    float_input = True

    def __init__(self, latent_dim: int, in_dim: int = 2048, hidden: Sequence[int] = (1024, 512, 256)) -> None:
        super().__init__()
        self.event_shape = (in_dim,)
        self.body = _mlp([in_dim, *hidden])
        self.heads = nn.Linear(hidden[-1], 2 * latent_dim)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x)).view(-1, 2, self.latent_dim)


class FeatureDecoder(Decoder):
    """L -> FC 256 ELU -> 512 ELU -> 1024 ELU -> FC 2048 (features are unbounded: no squashing)."""

    row_sparse_backward = True   # rows independent: see Decoder

    def __init__(self, latent_dim: int, out_dim: int = 2048, hidden: Sequence[int] = (256, 512, 1024)) -> None:
        super().__init__()
        self.net = _mlp([latent_dim, *hidden, out_dim], last_act=False)

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# --------------------------------------------------------------------------------------------
# CUB sentences: Table 6(d), a CNN over the (T x E) word-embedding matrix.
# --------------------------------------------------------------------------------------------
class SentenceEncoder(Encoder):
    """Token ids (T=32) -> embedding (E) -> 2-D conv stack of Table 6(d) -> two 4x4 conv heads.

    Table 6 prints a 256-d embedding, but its conv stack reduces a 32 x E matrix to 1x1 only for
    E = 128, which is what the authors' code uses; ``emb_dim`` defaults to 128 for that reason.
    The decoder's output layer is tied to this embedding (as in the authors' code).
    """

    def __init__(self, latent_dim: int, vocab_size: int, max_len: int = 32, emb_dim: int = 128,
                 base: int = 32, pad_idx: int = 0) -> None:
        super().__init__()
        if max_len != 32 or emb_dim != 128:
            raise ValueError("the Table 6(d) conv stack needs max_len=32 and emb_dim=128")
        self.event_shape = (max_len,)
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_idx)
        c = base
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),                      # 16x64
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),              # 8x32
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(inplace=True),          # 4x16
            nn.Conv2d(4 * c, 8 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),   # 4x8
            nn.Conv2d(8 * c, 16 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(16 * c), nn.ReLU(inplace=True),  # 4x4
        )
        self.heads = nn.Conv2d(16 * c, 2 * latent_dim, 4, 1, 0)
        self.latent_dim = latent_dim

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x.long()).unsqueeze(1)
        return self.heads(self.body(e)).view(-1, 2, self.latent_dim)


class SentenceDecoder(Decoder):
    """L -> transposed conv stack of Table 6(d) -> 32 x 128 -> logits over the vocabulary (32 x V)."""

    def __init__(self, latent_dim: int, vocab_size: int, max_len: int = 32, emb_dim: int = 128,
                 base: int = 32) -> None:
        super().__init__()
        c = base
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 16 * c, 4, 1, 0), nn.BatchNorm2d(16 * c), nn.ReLU(inplace=True),          # 4x4
            nn.ConvTranspose2d(16 * c, 8 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),  # 4x8
            nn.ConvTranspose2d(8 * c, 4 * c, (1, 4), (1, 2), (0, 1)), nn.BatchNorm2d(4 * c), nn.ReLU(inplace=True),   # 4x16
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),                  # 8x32
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),                          # 16x64
            nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.ReLU(inplace=True),                                                 # 32x128
        )
        self.to_vocab = nn.Linear(emb_dim, vocab_size)
        self.max_len, self.emb_dim = max_len, emb_dim

    def tie(self, embedding: nn.Embedding) -> None:
        """Share the output projection with the encoder's word embedding (authors' ``tie_modules``)."""
        self.to_vocab.weight = embedding.weight

    def _body(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z[:, :, None, None]).view(-1, self.max_len, self.emb_dim)
        return self.to_vocab(h)


# --------------------------------------------------------------------------------------------
# 64x64 RGB images (CUB raw images or their stand-in): a DCGAN-style CNN.
# --------------------------------------------------------------------------------------------
class Image64Encoder(ConvEncoder):
    """3x64x64 -> conv base, 2b, 4b, 8b (4x4, stride 2) -> two 4x4 conv heads."""

    event_shape = (3, 64, 64)

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(4):  # 32, 16, 8, 4
            layers += [nn.Conv2d(c_in, base * 2 ** i, 4, 2, 1), nn.ReLU(inplace=True)]
            c_in = base * 2 ** i
        self.body = nn.Sequential(*layers)
        self.heads = nn.Conv2d(c_in, 2 * latent_dim, 4, 1, 0)
        self.latent_dim = latent_dim


class Image64Decoder(UpconvDecoder):
    """L -> upconv 8b (4x4) -> 4b -> 2b -> b -> 3 (stride 2) -> Sigmoid: 3x64x64."""

    def __init__(self, latent_dim: int, base: int = 32) -> None:
        super().__init__()
        chans = [base * 8, base * 4, base * 2, base]
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[0], 4, 1, 0), nn.ReLU(inplace=True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters() if p.requires_grad}.values())


__all__ = [
    "Encoder", "Decoder", "MNISTEncoder", "MNISTDecoder", "SVHNEncoder", "SVHNDecoder",
    "FeatureEncoder", "FeatureDecoder", "SentenceEncoder", "SentenceDecoder",
    "Image64Encoder", "Image64Decoder", "count_parameters",
]
