"""decode.open_image: every accepted format, every limit, every awkward colour mode."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.kit import badimages, imagegen

# -- limits ----------------------------------------------------------------------
BOMBS = {
    "png-100000x100000": badimages.png_dimension_bomb,
    "jpeg-65000x65000": badimages.jpeg_dimension_bomb,
    "tiff-8192-tiles": badimages.tiff_tile_bomb,
    "png-7000x6000": lambda: badimages.png_dimension_bomb(7000, 6000),  # just over 40 M
}

_PEAK_PROBE = """
import json, resource, sys
from shotstamp_service.http.errors import STATUS
from shotstamp_service.matching.decode import DecodeLimits, ImageRejected, open_image
out = []
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    try:
        open_image(data, DecodeLimits())
        status = 200
    except ImageRejected as exc:
        status = STATUS[exc.reason]
    out.append([status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss])
print(json.dumps(out))
"""


def test_decompression_bombs_get_413_before_any_pixel_is_allocated(tmp_path):
    """In a fresh process, so that its peak RSS is this test's alone."""
    files = []
    for name, build in [("baseline", lambda: imagegen.jpeg(1, (256, 256))), *BOMBS.items()]:
        files.append(tmp_path / name)
        files[-1].write_bytes(build())
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_PROBE, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (_, baseline), *bombs = json.loads(result.stdout)
    for name, (status, peak_kib) in zip(BOMBS, bombs, strict=True):
        assert status == 413, name
        # Each bomb would need 100 MB to 30 GB; the peak did not move.
        assert peak_kib - baseline < 15_000, (name, peak_kib - baseline)


