r"""Converts pytorch-fid's FID Inception weights to the .npz that dpgen-jax loads.

pytorch-fid ships the TF 2015-12-05 Inception graph ported to PyTorch as a state_dict
of `pytorch_fid.inception.fid_inception_v3()`, `pt_inception-2015-12-05-6726825d.pth`.
This script maps every conv weight (OIHW -> HWIO) and BatchNorm (weight, bias,
running_mean, running_var -> scale, bias, mean, var) to the flat keys of
`dpgen_jax.models.inception_weights`, drops `fc.*` (pool3 features do not use it), and
checks the result with `load_inception_params` before reporting success.

  python experiments/convert_pytorch_fid_weights.py \
      --input pt_inception-2015-12-05-6726825d.pth --output fid_inception.npz

`--self-test` needs no download: it builds pytorch-fid's network with random weights
(random BatchNorm statistics included), converts them, and compares pytorch-fid's
features (its own resize and 2x-1 included) with `inception_feature_fn` on the same
random images at 28x28x1, 32x32x3, 299x299x3 and 360x360x3 (a downscale), printing the
largest absolute difference. `--reference pytorch_fid` uses the installed pytorch-fid
package (which imports torchvision); `--reference plain` uses the re-creation below in
plain torch.nn, for when torchvision cannot be imported (PyPI's CUDA torchvision beside
a CPU torch fails with "operator torchvision::nms does not exist"; importing it with
`sys.modules['torchvision._meta_registrations'] = types.ModuleType('stub')` set first
works around that, as only the pure-Python model code is needed); `auto` tries
pytorch-fid, then plain.

Needs torch (not a dependency of dpgen-jax) plus jax and flax. Run from a checkout:
the repository root is put on sys.path.
"""

import argparse
import os
import re
import sys
import tempfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dpgen_jax.models import inception  # pylint: disable=g-import-not-at-top
from dpgen_jax.models import inception_weights  # pylint: disable=g-import-not-at-top

_BN_LEAVES = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean',
              'running_var': 'var'}
# pytorch_fid.inception.InceptionV3 (the wrapper) names the same layers by position.
_WRAPPER_BLOCKS = (
    ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3'),
    ('Conv2d_3b_1x1', 'Conv2d_4a_3x3'),
    ('Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b', 'Mixed_6c',
     'Mixed_6d', 'Mixed_6e'),
    ('Mixed_7a', 'Mixed_7b', 'Mixed_7c'),
)


def _module_path(torch_key: str) -> str | None:
  """'Mixed_5b.branch1x1.conv.weight' -> 'Mixed_5b/branch1x1/conv/weight', or None."""
  key = torch_key.removeprefix('module.')  # saved from nn.DataParallel
  match = re.match(r'blocks\.(\d+)\.(\d+)\.(.*)', key)
  if match:
    block, index, rest = int(match[1]), int(match[2]), match[3]
    key = f'{_WRAPPER_BLOCKS[block][index]}.{rest}'
  if key.startswith(('fc.', 'AuxLogits.')) or key.endswith('num_batches_tracked'):
    return None
  return key.replace('.', '/')


def convert_state_dict(state_dict: dict) -> dict[str, np.ndarray]:
  """pytorch-fid FID Inception state_dict -> flat float32 arrays in the .npz scheme."""
  flat = {}
  for torch_key, tensor in state_dict.items():
    path = _module_path(torch_key)
    if path is None:
      continue
    module, kind, leaf = path.rsplit('/', 2)
    value = tensor.detach().cpu().numpy().astype(np.float32)
    if kind == 'conv' and leaf == 'weight' and value.ndim == 4:
      flat[f'{module}/conv/kernel'] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == 'bn' and leaf in _BN_LEAVES:
      flat[f'{module}/bn/{_BN_LEAVES[leaf]}'] = value
    else:
      raise ValueError(f'unexpected key in the state_dict: {torch_key!r}')
  return flat


def convert_file(input_path: str, output_path: str) -> None:
  state_dict = torch.load(input_path, map_location='cpu', weights_only=True)
  if isinstance(state_dict, dict) and 'state_dict' in state_dict:
    state_dict = state_dict['state_dict']
  flat = convert_state_dict(state_dict)
  inception_weights.save_flat_npz(flat, output_path)
  inception.load_inception_params(output_path)  # raises on any missing/odd key
  count = sum(v.size for v in flat.values())
  print(f'wrote {output_path}: {len(flat)} arrays, {count:,} numbers; '
        'load_inception_params accepts it')


# ---- plain-torch re-creation of pytorch-fid's fid_inception_v3 (self-test only) ----


class _Conv(nn.Module):
  """torchvision BasicConv2d: conv (no bias) -> BN(eps=1e-3) -> ReLU."""

  def __init__(self, cin, cout, kernel, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _pool_same(x, kind):
  if kind == 'max':
    return F.max_pool2d(x, 3, stride=1, padding=1)
  return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _A(nn.Module):

  def __init__(self, cin, pool_features):
    super().__init__()
    self.branch1x1 = _Conv(cin, 64, 1)
    self.branch5x5_1 = _Conv(cin, 48, 1)
    self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = _Conv(cin, 64, 1)
    self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
    self.branch_pool = _Conv(cin, pool_features, 1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_pool_same(x, 'avg'))], 1)


class _B(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3 = _Conv(cin, 384, 3, stride=2)
    self.branch3x3dbl_1 = _Conv(cin, 64, 1)
    self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        F.max_pool2d(x, 3, stride=2)], 1)


class _C(nn.Module):

  def __init__(self, cin, c7):
    super().__init__()
    self.branch1x1 = _Conv(cin, 192, 1)
    self.branch7x7_1 = _Conv(cin, c7, 1)
    self.branch7x7_2 = _Conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = _Conv(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = _Conv(cin, c7, 1)
    self.branch7x7dbl_2 = _Conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = _Conv(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = _Conv(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = _Conv(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = _Conv(cin, 192, 1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f'branch7x7dbl_{i}')(bd)
    return torch.cat([self.branch1x1(x), b7, bd,
                      self.branch_pool(_pool_same(x, 'avg'))], 1)


class _D(nn.Module):

  def __init__(self, cin):
    super().__init__()
    self.branch3x3_1 = _Conv(cin, 192, 1)
    self.branch3x3_2 = _Conv(192, 320, 3, stride=2)
    self.branch7x7x3_1 = _Conv(cin, 192, 1)
    self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f'branch7x7x3_{i}')(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                      F.max_pool2d(x, 3, stride=2)], 1)


class _E(nn.Module):

  def __init__(self, cin, pool):
    super().__init__()
    self.pool = pool
    self.branch1x1 = _Conv(cin, 320, 1)
    self.branch3x3_1 = _Conv(cin, 384, 1)
    self.branch3x3_2a = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = _Conv(cin, 448, 1)
    self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = _Conv(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = _Conv(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = _Conv(cin, 192, 1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return torch.cat([
        self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
        self.branch_pool(_pool_same(x, self.pool))], 1)


class PlainFIDInception(nn.Module):
  """pytorch-fid's InceptionV3(output_blocks=[3]) forward, state_dict keys included."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
    self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
    self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
    self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
    self.Mixed_6a = _B(288)
    self.Mixed_6b, self.Mixed_6c = _C(768, 128), _C(768, 160)
    self.Mixed_6d, self.Mixed_6e = _C(768, 160), _C(768, 192)
    self.Mixed_7a = _D(768)
    self.Mixed_7b, self.Mixed_7c = _E(1280, 'avg'), _E(2048, 'max')

  def forward(self, x):  # x: (N, 3, H, W) in [0, 1]
    x = 2 * F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False) - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
    x = F.max_pool2d(x, 3, stride=2)
    for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b', '7c'):
      x = getattr(self, f'Mixed_{name}')(x)
    return x.mean(dim=(2, 3))


def _pytorch_fid_reference():
  """(features(x), net) from the installed pytorch-fid, without its download.

  `features` is pytorch-fid's own InceptionV3 wrapper (resize, 2x-1, pool3) around
  `net`, a random-weight `fid_inception_v3()` whose state_dict the converter reads.
  """
  from pytorch_fid import inception as pfi  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  net = torchvision.models.inception_v3(
      weights=None, aux_logits=False, num_classes=1008, init_weights=False)
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  original = pfi.fid_inception_v3
  pfi.fid_inception_v3 = lambda: net  # the wrapper would download the real weights
  try:
    wrapper = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
  finally:
    pfi.fid_inception_v3 = original
  return (lambda x: wrapper(x)[0][:, :, 0, 0]), net


def _randomize(net: nn.Module, seed: int) -> None:
  """He-scaled convs and non-trivial BN so activations stay O(1) through 94 layers."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=gen)
                            * (2.0 / fan_in) ** 0.5)
      elif isinstance(module, nn.BatchNorm2d):
        c = module.num_features
        module.weight.copy_(0.5 + torch.rand(c, generator=gen))
        module.bias.copy_(0.2 * torch.randn(c, generator=gen))
        module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
        module.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def self_test(reference: str, seed: int = 0, tolerance: float = 1e-3) -> int:
  """Returns 0 if JAX and torch features agree to `tolerance` (relative to the max)."""
  if reference in ('auto', 'pytorch_fid'):
    try:
      torch_features, net = _pytorch_fid_reference()
      reference = 'pytorch_fid'
    except (ImportError, RuntimeError) as e:
      if reference == 'pytorch_fid':
        raise
      print(f'pytorch-fid unavailable ({type(e).__name__}: {e}); using plain torch')
      reference = 'plain'
  if reference == 'plain':
    net = PlainFIDInception()
    torch_features = net
  print(f'reference: {reference}')
  _randomize(net, seed)
  net.eval()

  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'fid_inception.npz')
    inception_weights.save_flat_npz(convert_state_dict(net.state_dict()), path)
    variables = inception.load_inception_params(path)
  features = inception.inception_feature_fn(variables, batch_size=4)

  rng = np.random.default_rng(seed)
  worst = 0.0
  for size, channels in ((28, 1), (32, 3), (299, 3), (360, 3)):
    images = rng.uniform(size=(4, size, size, channels)).astype(np.float32)
    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2)).expand(-1, 3, -1, -1)
    with torch.no_grad():
      expected = torch_features(nchw.contiguous()).numpy()
    got = features(images)
    diff = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    worst = max(worst, diff / scale)
    print(f'{size}x{size}x{channels}: max|jax - torch| = {diff:.3e} '
          f'(max|feature| = {scale:.3e}, relative {diff / scale:.1e})')
  ok = worst <= tolerance
  print(f'self-test {"passed" if ok else "FAILED"}: worst relative difference '
        f'{worst:.1e} (tolerance {tolerance:.0e})')
  return 0 if ok else 1


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input', help="pytorch-fid's pt_inception-2015-12-05-*.pth")
  parser.add_argument('--output', help='the .npz to write')
  parser.add_argument('--self-test', action='store_true',
                      help='compare with torch on random weights; needs no files')
  parser.add_argument('--reference', choices=('auto', 'pytorch_fid', 'plain'),
                      default='auto', help='the torch network --self-test compares to')
  args = parser.parse_args()
  if args.self_test:
    return self_test(args.reference)
  if not args.input or not args.output:
    parser.error('--input and --output are required (or use --self-test)')
  if not os.path.isfile(args.input):
    parser.error(f'no such file: {args.input}')
  convert_file(args.input, args.output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
