"""trainer/plot.py: the loss-curve PNG decodes as the image that was drawn."""

import struct
import zlib

import numpy as np

from trainer.plot import HEIGHT, WIDTH, draw_loss_curve, encode_png, write_loss_curve


def decode_png(data):
    """Minimal reader for what encode_png writes: RGB8, filter 0 on every row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trips_pixels():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb)


def test_curve_has_train_line_and_val_points(tmp_path):
    records = [{"iter": i, "loss": 5.0 - 3.0 * i / 100} for i in range(1, 101)]
    records[49]["val_loss"] = 3.7
    records[99]["val_loss"] = 2.4
    path = tmp_path / "loss.png"
    write_loss_curve(records, path)
    image = decode_png(path.read_bytes())
    assert image.shape == (HEIGHT, WIDTH, 3)
    black = np.all(image == 0, axis=2)
    red = np.all(image == (220, 30, 30), axis=2)
    assert black.sum() > WIDTH // 2 and red.sum() == 2 * 25
    # falling loss: the line's first columns sit higher (smaller row) than its last ones
    rows, cols = np.nonzero(black)
    assert rows[cols == cols.min()].mean() < rows[cols == cols.max()].mean()
    np.testing.assert_array_equal(image, draw_loss_curve(records))
