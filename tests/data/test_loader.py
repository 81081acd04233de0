"""The device-resident loader and batched augmentations, against per-example references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lamina.data.augment import Augment, _crop_gather, _crop_grouped, cutout, random_flip, random_translate
from lamina.data.base import Preprocess, Split
from lamina.data.gpu_loader import DeviceLoader, TorchLoader, make_loader


def _split(n: int = 50) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 1, 6, 6), generator=g, dtype=torch.uint8), torch.arange(n) % 3)


def test_translate_equals_pad_and_crop_per_example():
    x = torch.randint(0, 256, (16, 2, 7, 9), dtype=torch.uint8)
    out = random_translate(x, 2, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # replay the same offsets
    dy = torch.randint(0, 5, (16, 1), generator=g)
    dx = torch.randint(0, 5, (16, 1), generator=g)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        a, b = int(dy[i]), int(dx[i])
        assert torch.equal(out[i], padded[i, :, a : a + 7, b : b + 9])


def test_gather_crop_equals_grouped_crop():
    xp = torch.randint(0, 256, (32, 3, 9, 10), dtype=torch.uint8)
    dy, dx = torch.randint(0, 3, (32, 1)), torch.randint(0, 4, (32, 1))
    assert torch.equal(_crop_gather(xp, dy, dx, 7, 7), _crop_grouped(xp, dy, dx, 7, 7))


def test_flip_and_cutout():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    flipped = random_flip(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    n_flipped = sum(torch.equal(f, x[i % 2].flip(-1)) for i, f in enumerate(flipped))
    assert 10 < n_flipped < 90  # about half
    cut = cutout(torch.ones(64, 1, 12, 12), 4, torch.Generator().manual_seed(0))
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at borders


def test_each_example_once_per_epoch_and_reproducible():
    split = _split()
    kw = dict(batch_size=8, device=torch.device("cpu"), preprocess=Preprocess(scale=255.0), shuffle=True, seed=3)
    a = DeviceLoader(split, **kw)
    ys = torch.cat([y for _, y in a])
    assert len(ys) == 50 and a.epoch == 1
    epoch0 = [x for x, _ in DeviceLoader(split, **kw)]
    again = [x for x, _ in DeviceLoader(split, **kw)]
    assert all(torch.equal(p, q) for p, q in zip(epoch0, again, strict=True))
    assert not torch.equal(torch.cat(epoch0), torch.cat([x for x, _ in a]))  # epoch 1 differs from epoch 0


def test_resume_mid_epoch_gives_the_same_batches():
    split = _split()
    aug = Augment(translate=1, flip=True, cutout=2)
    kw = dict(batch_size=8, device=torch.device("cpu"), preprocess=Preprocess(scale=255.0), shuffle=True,
              drop_last=True, augment=aug, seed=5)
    full = DeviceLoader(split, **kw)
    full.set_epoch(2)
    batches = list(full)
    part = DeviceLoader(split, **kw)
    part.set_epoch(2)
    it = iter(part)
    next(it), next(it)
    state = part.state_dict()
    resumed = DeviceLoader(split, **kw)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(batches) - 2
    for (x1, y1), (x2, y2) in zip(batches[2:], rest, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_torch_loader_yields_what_the_device_loader_yields():
    split = _split()
    kw = dict(batch_size=8, device=torch.device("cpu"), preprocess=Preprocess(scale=255.0, mean=(0.5,), std=(0.25,)),
              shuffle=True, augment=Augment(translate=1, flip=True), seed=1)
    for (x1, y1), (x2, y2) in zip(DeviceLoader(split, **kw), TorchLoader(split, **kw), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_eval_loader_is_ordered_and_normalised():
    split = _split(10)
    pre = Preprocess(scale=255.0, mean=(0.5,), std=(0.25,))
    loader = make_loader(split, kind="auto", batch_size=4, device=torch.device("cpu"), preprocess=pre, train=False,
                         augment=Augment(translate=2))
    x = torch.cat([b for b, _ in loader])
    assert torch.allclose(x, (split.x.float() / 255 - 0.5) / 0.25)
    assert isinstance(loader, DeviceLoader) and len(loader) == 3
