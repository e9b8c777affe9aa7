"""The ``%`` text header that Prophesee RAW and DAT files start with.

Format source: Prophesee's Metavision documentation, pages "RAW File Format"
and "DAT File Format" (docs.prophesee.ai). Each header line is ``% key value``.
Keys read here:

- ``evt 2.0`` / ``evt 3.0``, or ``format EVT2;height=H;width=W``: the RAW encoding;
- ``geometry WxH``, ``Width W`` / ``Height H``, or the ``format`` line: the sensor size;
- ``plugin_name``: the camera plugin, which implies the sensor size of older
  files that give no geometry (see :data:`PLUGIN_SENSOR_SIZES`);
- ``end``: an optional last header line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from ._base import camera_size, read_text_header

#: Sensor sizes implied by Metavision HAL plugin names, for RAW files without a
#: geometry line. Gen3 and Gen3.1 are VGA sensors, Gen4.1 and IMX636 are HD,
#: GenX320 is 320x320.
PLUGIN_SENSOR_SIZES = {
    "gen3": (640, 480),
    "gen31": (640, 480),
    "gen41": (1280, 720),
    "imx636": (1280, 720),
    "genx320": (320, 320),
}


def read_percent_header(file: BinaryIO, path: Path) -> tuple[dict[str, str], int, bool]:
    """Return the ``%`` header as a key-to-value dict, the offset after it, and whether the file ended inside it.

    Keys are lower-cased. A repeated key keeps its last value.
    """
    lines, offset, cut_off = read_text_header(file, path, b"%", end_line="% end")
    fields: dict[str, str] = {}
    for line in lines:
        body = line[1:].strip()
        if not body:
            continue
        key, _, value = body.partition(" ")
        fields[key.lower()] = value.strip()
    return fields, offset, cut_off


def raw_encoding(fields: dict[str, str]) -> str | None:
    """Return ``"evt2"``, ``"evt3"`` or another ``evt…`` name the header declares, else None."""
    if "evt" in fields:
        return "evt" + fields["evt"].replace(".0", "").replace(".", "")
    if "format" in fields:
        name = fields["format"].split(";", 1)[0].strip().lower()
        return name or None
    return None


def header_sensor_size(fields: dict[str, str]) -> tuple[tuple[int, int] | None, str | None]:
    """Return the sensor size ``(width, height)`` the header gives and the key it came from, else (None, None)."""
    if "geometry" in fields:
        match = re.fullmatch(r"(\d+)\s*x\s*(\d+)", fields["geometry"])
        if match:
            return (int(match.group(1)), int(match.group(2))), "geometry"
    if "format" in fields:
        options = dict(
            part.split("=", 1) for part in fields["format"].split(";")[1:] if "=" in part
        )
        if options.get("width", "").isdigit() and options.get("height", "").isdigit():
            return (int(options["width"]), int(options["height"])), "format"
    if fields.get("width", "").isdigit() and fields.get("height", "").isdigit():
        return (int(fields["width"]), int(fields["height"])), "width/height"
    if "plugin_name" in fields:
        size = camera_size(fields["plugin_name"], PLUGIN_SENSOR_SIZES)
        if size is not None:
            return size, "plugin_name"
    return None, None
