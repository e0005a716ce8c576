"""X window dumps (XWD) to PNG, in pure Python: ``struct`` and ``zlib``, no imaging library.

Xvfb started with ``-fbdir DIR`` keeps its screen in ``DIR/Xvfb_screen0``, an XWD file that
it updates in place; ``xwd -root`` writes the same format for any X server.  Both are read
here: the big-endian header, the colormap, then the pixels in the server's byte order.
Screens of 8 bits per pixel (a colormap: a PNG palette) and of 32 bits per pixel with 8-bit
channels (TrueColor at depth 24) are encoded; other formats raise :class:`XwdError`.
Plain code, no pytest.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from typing import Optional

from pytest_services.exceptions import XwdError

#: The XWD header: 25 big-endian 32-bit fields, then the window name.
_HEADER = struct.Struct(">25I")
_COLOR = struct.Struct(">IHHHBx")
XWD_VERSION = 7
Z_PIXMAP = 2
LSB_FIRST = 0
#: zlib level for the PNG: screens are mostly flat colours, which the fastest level packs well.
COMPRESSION = 1


@dataclass
class Screen:
    """A decoded XWD image: its size, and its pixels as PNG rows (without filter bytes)."""

    width: int
    height: int
    #: 2 (RGB, 3 bytes a pixel) or 3 (palette, 1 byte a pixel) -- PNG colour types.
    color_type: int
    rows: list[bytes]
    palette: bytes = b""

    def png(self, level: int = COMPRESSION) -> bytes:
        """The image as a PNG file."""
        packer = zlib.compressobj(level)
        data = b"".join(packer.compress(b"\0" + row) for row in self.rows) + packer.flush()
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, self.color_type, 0, 0, 0)
        chunks = [_chunk(b"IHDR", header)]
        if self.palette:
            chunks.append(_chunk(b"PLTE", self.palette))
        chunks += [_chunk(b"IDAT", data), _chunk(b"IEND", b"")]
        return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def read_xwd(data: bytes) -> Screen:
    """Decode an XWD image (a file of Xvfb's ``-fbdir``, or what ``xwd`` prints)."""
    if len(data) < _HEADER.size:
        raise XwdError(f"not an XWD image: {len(data)} bytes, shorter than its header")
    (size, version, pixmap_format, depth, width, height, _, byte_order, _, _, _, bits,
     line, visual, red, green, blue, _, _, colors, *_) = _HEADER.unpack_from(data)  # fmt: skip
    if version != XWD_VERSION or pixmap_format != Z_PIXMAP:
        raise XwdError(f"not a ZPixmap XWD image of version 7 (version {version})")
    start = size + colors * _COLOR.size
    if width == 0 or height == 0 or line < width * bits // 8:
        raise XwdError(f"an XWD image of {width}x{height} with {line} bytes a line")
    if len(data) < start + line * height:
        raise XwdError(f"the XWD image is cut short: {len(data)} of {start + line * height} bytes")
    if bits == 8:
        return _palette_screen(data, size, colors, start, width, height, line)
    if bits == 32 and all(_byte_aligned(mask) for mask in (red, green, blue)):
        return _true_color_screen(
            data,
            start,
            width,
            height,
            line,
            [_byte_index(m, byte_order) for m in (red, green, blue)],
        )
    raise XwdError(
        f"cannot encode a screen of depth {depth} with {bits} bits per pixel (visual class "
        f"{visual}): screenshots need depth 8 or 24"
    )


def _palette_screen(
    data: bytes, size: int, colors: int, start: int, width: int, height: int, line: int
) -> Screen:
    palette = bytearray(256 * 3)
    for pixel, red, green, blue in (
        _COLOR.unpack_from(data, size + index * _COLOR.size)[:4] for index in range(colors)
    ):
        if pixel < 256:
            palette[pixel * 3 : pixel * 3 + 3] = bytes((red >> 8, green >> 8, blue >> 8))
    rows = [data[offset : offset + width] for offset in range(start, start + line * height, line)]
    return Screen(width, height, 3, rows, bytes(palette))


def _true_color_screen(
    data: bytes, start: int, width: int, height: int, line: int, channels: list[int]
) -> Screen:
    """Pick the three colour bytes of each 4-byte pixel with extended slices (C speed)."""
    if line == width * 4:
        source = data[start : start + line * height]
    else:  # lines padded past the last pixel: drop the padding first
        source = b"".join(
            data[offset : offset + width * 4]
            for offset in range(start, start + line * height, line)
        )
    rgb = bytearray(width * height * 3)
    for position, channel in enumerate(channels):
        rgb[position::3] = source[channel::4]
    step = width * 3
    return Screen(width, height, 2, [bytes(rgb[i : i + step]) for i in range(0, len(rgb), step)])


def _byte_aligned(mask: int) -> bool:
    return mask in (0xFF, 0xFF00, 0xFF0000, 0xFF000000)


def _byte_index(mask: int, byte_order: int) -> int:
    """Where the channel of ``mask`` sits among a 32-bit pixel's four bytes."""
    index = (mask.bit_length() - 8) // 8
    return index if byte_order == LSB_FIRST else 3 - index


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def capture_png(display: int, framebuffer: Optional[str] = None, timeout: float = 10) -> bytes:
    """The whole screen of ``display`` as a PNG: read from Xvfb's ``framebuffer`` file
    (``-fbdir``) when given, else dumped by ``xwd -root`` (Debian package ``x11-apps``)."""
    if framebuffer is not None:
        with open(framebuffer, "rb") as screen:
            return read_xwd(screen.read()).png()
    xwd = shutil.which("xwd")
    if xwd is None:
        raise XwdError("xwd is not installed: apt-get install x11-apps")
    result = subprocess.run(
        [xwd, "-root", "-silent", "-display", f":{display}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode:
        message = result.stderr.decode(errors="replace").strip()
        raise XwdError(
            f"xwd -root -display :{display} exited with code {result.returncode}: {message}"
        )
    return read_xwd(result.stdout).png()
