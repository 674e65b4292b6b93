"""Where an image lies on the square backbone input: preprocessing draws it there and maps are cut back from it.

Plain arithmetic, so that preprocessing (PIL, no torch), the maps (torch) and the ONNX runtime
(neither) share one rule.
"""

from __future__ import annotations


def content_box(width: int, height: int, size: int, keep_aspect: bool) -> tuple[int, int, int, int]:
    """Where an image of ``width`` x ``height`` lies on the square input of side ``size``: (top, rows, left, columns).

    ``keep_aspect``: scaled so that its longer side fills the square and centred (letterboxed);
    otherwise stretched over the whole square.
    """
    if not keep_aspect:
        return 0, size, 0, size
    scale = size / max(width, height)
    rows, columns = max(1, round(height * scale)), max(1, round(width * scale))
    return (size - rows) // 2, rows, (size - columns) // 2, columns
