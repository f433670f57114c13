from enum import Enum

import torch


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(tensor, mean, std, inplace=False):
    mean, std = (torch.as_tensor(v, dtype=tensor.dtype, device=tensor.device) for v in (mean, std))
    mean, std = (v.view(-1, 1, 1) if v.ndim == 1 else v for v in (mean, std))
    return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    if isinstance(size, int) or len(size) != 2 or max_size is not None:
        raise NotImplementedError("torchvision stand-in: resize needs an explicit [h, w]")
    mode = InterpolationMode(interpolation).value
    if mode not in ("nearest", "nearest-exact", "bilinear", "bicubic"):
        raise NotImplementedError(f"torchvision stand-in: resize mode {mode}")
    x = img if img.ndim >= 4 else img.unsqueeze(0)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    kw = {"align_corners": False, "antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    y = torch.nn.functional.interpolate(x, size=list(size), mode=mode, **kw)
    y = y.reshape(*lead, *y.shape[-3:])
    return y if img.ndim >= 4 else y.squeeze(0)


def pil_to_tensor(pic):
    """[C, H, W] uint8 tensor of a PIL image (imported by transformers 5 once it sees a torchvision)."""
    import numpy as np

    array = np.array(pic, copy=True)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def rotate(*args, **kwargs):
    raise NotImplementedError("torchvision stand-in: rotate is not available")


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: 'torchvision.transforms.functional.{name}' is not available")
