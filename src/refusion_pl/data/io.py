"""The one image reader and the one image writer of the product.

Everything that touches image files goes through :func:`read_image` / :func:`write_image`, so 16-bit scaling,
EXIF orientation, alpha, ICC profiles and atomic writes are handled once, here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from refusion_pl.files import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
#: Largest image (width * height) read by default: a 12000x8000 photo passes, a decompression bomb does not.
#: Override per call (``max_pixels=``) or process-wide with the ``REFUSION_MAX_IMAGE_PIXELS`` variable.
MAX_IMAGE_PIXELS = int(os.environ.get("REFUSION_MAX_IMAGE_PIXELS", 120_000_000))

_EXIF_ORIENTATION = 0x0112
_PIL_LOCK = threading.Lock()
_alpha_warned = False


class DataError(ValueError):
    """Bad data or data settings; the message names the culprit (file, folder, key, value, counts)."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`write_image` needs to give an output the input's depth, colour profile and metadata."""

    path: str
    format: str  # "PNG", "JPEG", "TIFF", "WEBP", ...
    bit_depth: int  # 8 or 16
    height: int  # after EXIF orientation
    width: int
    source_channels: int  # colour channels in the file, alpha excluded
    had_alpha: bool
    orientation: int  # EXIF orientation found in the file (already applied to the pixels)
    icc_profile: bytes | None = None
    exif: bytes | None = None  # with orientation reset to 1, so writing it back does not rotate twice


# ----------------------------------------------------------------------------------------------- reading


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Let our own limit decide: lift PIL's bomb check only when ours is the larger one."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is None or 2 * pil_limit >= max_pixels:
        yield
        return
    with _PIL_LOCK:
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with _pil_pixel_limit(max_pixels), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image too large: {path} is above the limit of {max_pixels} pixels ({exc}) (decompression bomb "
            "guard; raise it with max_pixels= or REFUSION_MAX_IMAGE_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: not a readable image ({exc})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise DataError(
            f"image too large: {path} is {w}x{h} = {w * h} pixels, above the limit of {max_pixels} "
            "(decompression bomb guard; raise it with max_pixels= or REFUSION_MAX_IMAGE_PIXELS)"
        )
    return im


def _png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from the PNG IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24], head[25]


def _bit_depth(im: Image.Image, path: Path) -> int:
    if im.format == "PNG":
        return 16 if _png_header(path)[0] == 16 else 8
    if im.mode.startswith("I;16") or im.mode == "I":
        return 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return 16 if max(bits) == 16 else 8
    return 8


def _decode_png16(path: Path, im: Image.Image) -> np.ndarray | None:
    """Full-precision 16-bit PNG (PIL truncates 16-bit RGB to 8 bits); None when kornia-rs cannot."""
    mode = {0: "mono", 2: "rgb", 6: "rgba"}.get(_png_header(path)[1])
    decode = getattr(_kornia_rs_io(), "decode_image_png_u16", None)
    if mode is None or decode is None:
        return None
    w, h = im.size
    return np.asarray(decode(path.read_bytes(), (h, w), mode))


def _kornia_rs_io() -> object:
    try:
        import kornia_rs

        return kornia_rs.io
    except (ImportError, AttributeError):
        return object()


def _decode_tiff16(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        axes = page.axes
    if axes.startswith("S") and arr.ndim == 3:  # planar (C, H, W)
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _decode_8bit(im: Image.Image) -> np.ndarray:
    """Decode through PIL into uint8 / uint16 / float arrays, alpha kept (dropped later, once)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("L" if im.mode == "1" else "RGB")
    elif im.mode in ("RGBa", "La", "PA"):
        im = im.convert("RGBA")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("RGB")
    return np.asarray(im)


def _to_float(arr: np.ndarray, bit_depth: int) -> torch.Tensor:
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype.kind == "f":
        scale = 1.0
    else:  # uint16 / int32 from 16-bit files
        scale = 65535.0 if bit_depth == 16 or arr.max(initial=0) > 255 else 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=False)).permute(2, 0, 1)
    return (t / scale).clamp_(0.0, 1.0)


def _drop_alpha(img: torch.Tensor, path: Path) -> tuple[torch.Tensor, bool]:
    global _alpha_warned
    if img.shape[0] not in (2, 4):
        return img, False
    if not _alpha_warned:
        _alpha_warned = True
        warnings.warn(
            f"dropping the alpha channel of {path} (and of any further image, without another warning)",
            UserWarning,
            stacklevel=3,
        )
    return img[:-1], True


def _orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF orientation (same result as PIL.ImageOps.exif_transpose)."""
    ops = {
        2: lambda x: x.flip(-1),
        3: lambda x: x.flip(-1, -2),
        4: lambda x: x.flip(-2),
        5: lambda x: x.transpose(-1, -2),
        6: lambda x: torch.rot90(x, -1, (-2, -1)),
        7: lambda x: x.transpose(-1, -2).flip(-1, -2),
        8: lambda x: torch.rot90(x, 1, (-2, -1)),
    }
    op = ops.get(orientation)
    return op(img).contiguous() if op else img


def _convert_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    if img.shape[0] == channels:
        return img
    if channels == 3 and img.shape[0] == 1:
        return img.expand(3, -1, -1).contiguous()
    if channels == 1 and img.shape[0] == 3:
        from kornia.color import rgb_to_grayscale

        return rgb_to_grayscale(img)
    raise DataError(f"cannot convert {img.shape[0]} channels to {channels}")


def _metadata(im: Image.Image) -> tuple[int, bytes | None, bytes | None]:
    """(orientation, ICC profile, EXIF bytes with orientation reset to 1)."""
    try:
        exif = im.getexif()
    except Exception:  # broken EXIF must not make a good image unreadable
        return 1, im.info.get("icc_profile"), None
    orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
    exif_bytes = None
    if im.format == "TIFF":
        # A TIFF's "EXIF" is its own first IFD: size, bit depth and sample format of *this* file. Written into
        # another file it overrides that file's structure (a float TIFF gave an unreadable 8-bit one).
        return orientation, im.info.get("icc_profile") or None, None
    if len(exif):
        if orientation != 1:
            exif[_EXIF_ORIENTATION] = 1
        with contextlib.suppress(Exception):
            exif_bytes = exif.tobytes()
    return orientation, im.info.get("icc_profile") or None, exif_bytes


def read_image(
    path: str | os.PathLike[str], channels: int = 3, max_pixels: int | None = None
) -> tuple[torch.Tensor, ImageInfo]:
    """Read an image as float32 ``[C, H, W]`` in [0, 1] (16-bit files / 65535), upright, alpha dropped.

    Raises :class:`DataError` naming the file when it is missing, unreadable, truncated or too large.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    im = _open(path, limit)
    try:
        fmt = im.format or path.suffix.lstrip(".").upper()
        depth = _bit_depth(im, path)
        orientation, icc, exif = _metadata(im)
        arr = _decode(im, path, fmt, depth)
    except DataError:
        raise
    except Exception as exc:  # truncated / corrupt data surfaces from deep inside the decoders
        raise DataError(f"cannot read image {path}: corrupt or truncated ({exc})") from None
    finally:
        im.close()
    img, had_alpha = _drop_alpha(_to_float(arr, depth), path)
    src_channels = img.shape[0]
    img = _convert_channels(_orient(img, orientation), channels)
    info = ImageInfo(
        path=str(path),
        format=fmt,
        bit_depth=depth,
        height=img.shape[1],
        width=img.shape[2],
        source_channels=src_channels,
        had_alpha=had_alpha,
        orientation=orientation,
        icc_profile=icc,
        exif=exif,
    )
    return img, info


def _decode(im: Image.Image, path: Path, fmt: str, depth: int) -> np.ndarray:
    if depth == 16 and fmt == "PNG":
        arr = _decode_png16(path, im)
        if arr is not None:
            return arr
        log.warning("reading %s through PIL: this 16-bit PNG kind may lose precision", path)
    if depth == 16 and fmt == "TIFF":
        return _decode_tiff16(path)
    im.load()
    return _decode_8bit(im)


def image_size(path: str | os.PathLike[str], max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) after EXIF orientation, from the header only (cheap; no pixel decoding)."""
    path = Path(path)
    im = _open(path, MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels))
    try:
        w, h = im.size
        orientation, _, _ = _metadata(im)
    finally:
        im.close()
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def verify_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> tuple[int, int]:
    """Cheap integrity check (header, PNG chunk CRCs, JPEG end marker, others decoded); returns (height, width).

    Catches the common truncated / corrupt files before training without decoding every pixel.
    """
    path = Path(path)
    size = image_size(path, max_pixels)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with Image.open(path) as im:
                im.verify()
        elif suffix in (".jpg", ".jpeg"):
            _check_jpeg_end(path)
        else:  # TIFF, WebP, BMP: no cheap structural check, decode them
            with Image.open(path) as im:
                im.load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read image {path}: corrupt or truncated ({exc})") from None
    return size


def _check_jpeg_end(path: Path) -> None:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        n = f.tell()
        f.seek(max(0, n - 4096))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        raise DataError(f"cannot read image {path}: truncated JPEG (no end-of-image marker)")


# ----------------------------------------------------------------------------------------------- writing


def _to_array(tensor: torch.Tensor, bit_depth: int) -> np.ndarray:
    t = tensor.detach()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise DataError(
            f"write_image expects a [C,H,W] tensor with 1 or 3 channels, got {tuple(tensor.shape)}"
        )
    peak = 65535.0 if bit_depth == 16 else 255.0
    arr = (t.float().cpu().nan_to_num(0.0).clamp(0, 1) * peak).round()
    arr = arr.permute(1, 2, 0).numpy().astype(np.uint16 if bit_depth == 16 else np.uint8)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _encode_png16(arr: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """16-bit PNG (PIL cannot write 16-bit colour): IHDR, iCCP, eXIf, IDAT, IEND."""
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    rows = arr.astype(">u2").reshape(h, w * ch).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0 if ch == 1 else 2, 0, 0, 0))]
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
_PIL_FORMATS |= {".webp": "WEBP", ".bmp": "BMP"}


def _write_payload(
    f, arr: np.ndarray, fmt: str, bit_depth: int, icc: bytes | None, exif: bytes | None
) -> None:
    if bit_depth == 16 and fmt == "PNG":
        f.write(_encode_png16(arr, icc, exif))
    elif bit_depth == 16 and fmt == "TIFF":
        import tifffile

        photometric = "minisblack" if arr.ndim == 2 else "rgb"
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric=photometric, compression="zlib", iccprofile=icc)
        f.write(buf.getbuffer())
    else:
        kwargs: dict[str, object] = {}
        if icc and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
            kwargs["icc_profile"] = icc
        if exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
            kwargs["exif"] = exif
        if fmt in ("JPEG", "WEBP"):
            kwargs["quality"] = 95
        if fmt == "JPEG":
            kwargs["subsampling"] = 0  # restored detail should not be thrown away by chroma subsampling
        Image.fromarray(arr).save(f, format=fmt, **kwargs)


def write_image(
    path: str | os.PathLike[str],
    tensor: torch.Tensor,
    bit_depth: int = 8,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Path:
    """Write a ``[C,H,W]`` (or ``[1,C,H,W]``) image in [0, 1] atomically; the format follows the suffix.

    16-bit is honoured for PNG and TIFF (other formats fall back to 8-bit with a warning); ICC and EXIF are kept
    where the format allows. Written through :func:`refusion_pl.files.atomic_write` (temporary file, fsync,
    rename), so a crash never leaves a half-written image behind.
    """
    path = Path(path)
    fmt = _PIL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"cannot write {path}: unknown image suffix, use one of {', '.join(_PIL_FORMATS)}")
    if bit_depth not in (8, 16):
        raise DataError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt not in ("PNG", "TIFF"):
        warnings.warn(
            f"{fmt} cannot hold 16 bits per channel: writing {path} as 8-bit", UserWarning, stacklevel=2
        )
        bit_depth = 8
    arr = _to_array(tensor, bit_depth)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            _write_payload(handle, arr, fmt, bit_depth, icc_profile, exif)

    return atomic_write(path, write)
