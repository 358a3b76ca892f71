"""The loss curve as a PNG, drawn with NumPy and written with zlib: no plotting library needed.

Train loss is a black line, val loss red squares, against the iteration; light grey lines mark
every whole nat of loss so the curve can be read without axis labels.

PNG layout (RFC 2083): the 8-byte signature, then chunks of uint32 length (big-endian), 4-byte
type, data, uint32 CRC-32 of type + data: IHDR (width, height, bit depth 8, colour type 2 = RGB,
compression 0, filter 0, interlace 0), one IDAT holding the zlib-compressed rows (each row
prefixed with filter byte 0), and an empty IEND.
"""

import struct
import zlib

import numpy as np

from formats.atomic import atomic_write

WIDTH, HEIGHT, MARGIN = 640, 360, 24
BLACK, RED, GREY, FRAME = (0, 0, 0), (220, 30, 30), (225, 225, 225), (150, 150, 150)


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb):
    """(H, W, 3) uint8 -> PNG bytes."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def draw_loss_curve(records):
    """(HEIGHT, WIDTH, 3) uint8 image of the `loss` and `val_loss` fields of the log records."""
    train = [(r["iter"], r["loss"]) for r in records if "loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    points = train + val
    if not points:
        return image
    iters = np.array([p[0] for p in points], np.float64)
    losses = np.array([p[1] for p in points], np.float64)
    x0, x1 = iters.min(), max(iters.max(), iters.min() + 1)
    y0, y1 = losses.min(), max(losses.max(), losses.min() + 1e-3)

    def to_pixels(it, loss):
        col = MARGIN + (np.asarray(it) - x0) / (x1 - x0) * (WIDTH - 2 * MARGIN - 1)
        row = HEIGHT - MARGIN - 1 - (np.asarray(loss) - y0) / (y1 - y0) * (HEIGHT - 2 * MARGIN - 1)
        return np.rint(row).astype(int), np.rint(col).astype(int)

    for whole in range(int(np.ceil(y0)), int(np.floor(y1)) + 1):
        row, _ = to_pixels(x0, whole)
        image[row, MARGIN:WIDTH - MARGIN] = GREY
    image[[MARGIN, HEIGHT - MARGIN], MARGIN:WIDTH - MARGIN] = FRAME
    image[MARGIN:HEIGHT - MARGIN, [MARGIN, WIDTH - MARGIN]] = FRAME
    if len(train) > 1:
        # A polyline: sample each segment densely enough that no pixel column is skipped.
        it, loss = np.array(train, np.float64).T
        dense = np.linspace(0, len(it) - 1, 4 * WIDTH)
        rows, cols = to_pixels(np.interp(dense, np.arange(len(it)), it), np.interp(dense, np.arange(len(it)), loss))
        image[rows, cols] = BLACK
    for it, loss in val:
        row, col = to_pixels(it, loss)
        image[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3] = RED
    return image


def write_loss_curve(records, path):
    """Draw the records' loss curve and write it to `path` atomically."""
    with atomic_write(path) as f:
        f.write(encode_png(draw_loss_curve(records)))
