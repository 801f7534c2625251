"""PhaseConvTranspose: PyTorch's ConvTranspose2d (and Flax's nn.ConvTranspose with
`init.torch_conv_transpose`) computed as one stride-1 convolution per output phase, with
a custom VJP of matrix products and shifted slices. XLA:CPU computes the gradient of a
transposed convolution with respect to its kernel as a doubly dilated convolution, which
made the DCGAN generator's backward pass 4 times slower (docs/benchmarks.md); the
parameters, initialisation and outputs are those of nn.ConvTranspose (tested).
"""

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from dpgen_jax.models import init


def _phase_taps(kernel: int, stride: int, padding: int) -> list[list[tuple[int, int]]]:
  """For each output phase r (outputs o = s*m + r) of a PyTorch ConvTranspose(k, s, p):
  the (tap a, input offset d) pairs with out[s*m + r] = sum_a x[m + d] W_torch[a].

  Input pixel i sends x_i W_torch[a] to output s*i - p + a, so a tap serves phase r
  when a = r + p (mod s), from input i = m + (r + p - a) / s. Within a phase the
  offsets are consecutive integers (a steps by s).
  """
  return [[(a, (r + padding - a) // stride) for a in range(kernel)
           if (a - r - padding) % stride == 0] for r in range(stride)]


def _phase_geometry(size: int, kernel: int, stride: int, padding: int):
  """(output size, outputs per phase M, taps per phase, left pad, right pad) of one axis."""
  out = (size - 1) * stride - 2 * padding + kernel
  m = -(-out // stride)
  phases = _phase_taps(kernel, stride, padding)
  offsets = [d for taps in phases for _, d in taps] or [0]
  left = max(0, -min(offsets))
  right = max(0, m - 1 + max(offsets) - (size - 1))
  return out, m, phases, left, right


def _interleave(phase_outputs, geometry_h, geometry_w):
  """phase_outputs[rh][rw] (B, Mh, Mw, O) -> (B, Ho, Wo, O) with out[s m + r] = phase r."""
  (out_h, m_h, _, _, _), (out_w, m_w, _, _, _) = geometry_h, geometry_w
  rows = [jnp.stack(row, axis=3) for row in phase_outputs]  # (B, Mh, Mw, sw, O)
  full = jnp.stack(rows, axis=2)  # (B, Mh, sh, Mw, sw, O)
  b, o = full.shape[0], full.shape[-1]
  full = full.reshape(b, m_h * len(phase_outputs), m_w * len(phase_outputs[0]), o)
  return full[:, :out_h, :out_w]


def _deconv_by_taps(x, w_torch, strides, padding):
  """Every input pixel times every tap in one matmul, then each output phase is a sum of
  shifted slices of those products. Exact transposed-conv FLOPs; its gradients are
  matmuls and slices."""
  b, h, w, c = x.shape
  kh, kw, _, o = w_torch.shape
  gh = _phase_geometry(h, kh, strides[0], padding[0])
  gw = _phase_geometry(w, kw, strides[1], padding[1])
  flat = w_torch.transpose(2, 0, 1, 3).reshape(c, kh * kw * o)
  taps = (x.reshape(b * h * w, c) @ flat).reshape(b, h, w, kh, kw, o)
  taps = jnp.pad(taps, ((0, 0), gh[3:5], gw[3:5], (0, 0), (0, 0), (0, 0)))
  out = []
  for phase_h in gh[2]:
    row = []
    for phase_w in gw[2]:
      acc = jnp.zeros((b, gh[1], gw[1], o), x.dtype)
      for a, dh in phase_h:
        for c_, dw in phase_w:
          acc = acc + taps[:, dh + gh[3]:dh + gh[3] + gh[1], dw + gw[3]:dw + gw[3] + gw[1], a, c_]
      row.append(acc)
    out.append(row)
  return _interleave(out, gh, gw)


def _deconv_by_convs(x, w_torch, strides, padding):
  """One stride-1 VALID convolution per output phase (sub-kernel of that phase's taps),
  then interleaved: no product tensor is materialised (the faster forward when the
  layer has many output channels)."""
  b, h, w, _ = x.shape
  kh, kw, _, o = w_torch.shape
  gh = _phase_geometry(h, kh, strides[0], padding[0])
  gw = _phase_geometry(w, kw, strides[1], padding[1])
  xp = jnp.pad(x, ((0, 0), gh[3:5], gw[3:5], (0, 0)))
  out = []
  for phase_h in gh[2]:
    row = []
    for phase_w in gw[2]:
      if not phase_h or not phase_w:
        row.append(jnp.zeros((b, gh[1], gw[1], o), x.dtype))
        continue
      # Offsets ascending (taps descending), so the sub-kernel is a correlation.
      th = sorted(phase_h, key=lambda t: t[1])
      tw = sorted(phase_w, key=lambda t: t[1])
      sub = w_torch[jnp.array([a for a, _ in th])][:, jnp.array([a for a, _ in tw])]
      start_h, start_w = th[0][1] + gh[3], tw[0][1] + gw[3]
      window = xp[:, start_h:start_h + gh[1] + len(th) - 1,
                  start_w:start_w + gw[1] + len(tw) - 1]
      row.append(jax.lax.conv_general_dilated(window, sub, (1, 1), "VALID",
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")))
    out.append(row)
  return _interleave(out, gh, gw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _phase_deconv(x, w_torch, strides, padding, conv_forward):
  if conv_forward:
    return _deconv_by_convs(x, w_torch, strides, padding)
  return _deconv_by_taps(x, w_torch, strides, padding)


def _phase_deconv_fwd(x, w_torch, strides, padding, conv_forward):
  return _phase_deconv(x, w_torch, strides, padding, conv_forward), (x, w_torch)


def _phase_deconv_bwd(strides, padding, conv_forward, residuals, grad):
  del conv_forward  # both forwards compute the same function
  x, w_torch = residuals
  _, vjp = jax.vjp(lambda x, w: _deconv_by_taps(x, w, strides, padding), x, w_torch)
  return vjp(grad)


_phase_deconv.defvjp(_phase_deconv_fwd, _phase_deconv_bwd)


class PhaseConvTranspose(nn.ConvTranspose):
  """`nn.ConvTranspose` (2-D, PyTorch-style explicit padding) by output phases.

  Same parameters ('kernel' (kh, kw, in, out), 'bias'), initialisation and outputs as
  the `nn.ConvTranspose` of `init.torch_conv_transpose`.
  A stride-s transposed convolution is s*s ordinary convolutions, one per output phase
  (out[s m + r]), each using only the taps of its phase; their outputs are interleaved.
  The forward runs those stride-1 convolutions (or, for layers with few output channels
  or a 1x1 input, the matmul-and-slices form), and the backward is always the gradient
  of the matmul-and-slices form (`_deconv_by_taps`): matmuls and slices only (XLA:CPU's
  gradient of an lhs-dilated convolution w.r.t. its kernel, i.e. of `nn.ConvTranspose`,
  is ~30x slower). Measured on one CPU core, batch 1024, the width-32 MNIST generator:
  forward 0.10 s and forward + backward 0.43 s, against 0.16 s and 1.7-2.6 s for the
  previous implementation (every tap added into the output with interior padding).
  """

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    if inputs.ndim != 4 or self.transpose_kernel or isinstance(self.padding, str):
      raise ValueError("PhaseConvTranspose supports NHWC inputs with explicit padding")
    kh, kw = self.kernel_size
    strides = tuple(self.strides or (1, 1))
    (lo_h, hi_h), (lo_w, hi_w) = self.padding
    if lo_h != hi_h or lo_w != hi_w or max(lo_h - (kh - 1), lo_w - (kw - 1)) > 0:
      raise ValueError(f"PhaseConvTranspose needs PyTorch-style padding, got {self.padding}")
    kernel = self.param("kernel", self.kernel_init, (kh, kw, inputs.shape[-1], self.features),
                        self.param_dtype)
    torch_padding = (kh - 1 - lo_h, kw - 1 - lo_w)
    conv_forward = self.features >= 8 and inputs.shape[1] * inputs.shape[2] > 1
    # PyTorch's kernel is the Flax kernel flipped spatially (see init.py).
    out = _phase_deconv(inputs, kernel[::-1, ::-1], strides, torch_padding, conv_forward)
    if self.use_bias:
      out = out + self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    return out


def deconv(features: int, kernel: int, stride: int, padding: int,
            name: str) -> PhaseConvTranspose:
  """`init.torch_conv_transpose` (same init and semantics), computed by PhaseConvTranspose."""
  m = init.torch_conv_transpose(features, kernel, stride, padding)
  return PhaseConvTranspose(features=m.features, kernel_size=m.kernel_size, strides=m.strides,
                            padding=m.padding, use_bias=m.use_bias, kernel_init=m.kernel_init,
                            bias_init=m.bias_init, name=name)


# Normalisation of the generator's hidden layers (dpgan.g_norm).
