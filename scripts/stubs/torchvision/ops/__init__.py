"""torchvision.ops stand-in: the names ComfyUI 0.30 imports at start-up (SAM3, RT-DETR and BiRefNet code). None of
them is used by HunyuanVideo or Magic141; calling one says so instead of computing something wrong."""


def _unavailable(name):
    def op(*args, **kwargs):
        raise NotImplementedError(f"torchvision stand-in: torchvision.ops.{name} is not available on this test host")

    op.__name__ = name
    return op


roi_align = _unavailable("roi_align")
nms = _unavailable("nms")
deform_conv2d = _unavailable("deform_conv2d")
box_convert = _unavailable("box_convert")


def __getattr__(name):
    raise AttributeError(f"torchvision stand-in: 'torchvision.ops.{name}' is not available")
