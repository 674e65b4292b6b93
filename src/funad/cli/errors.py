"""Errors a command reports in one line, with the exit status they stand for."""

from __future__ import annotations

from pathlib import Path


class NoInputImagesError(ValueError):
    """The inputs hold no image file: a usage error (exit status 2, as argparse uses), not a result."""

    exit_code = 2


def require_image_files(inputs: list[str]) -> list[Path]:
    """The image files among the command line's ``inputs`` (as :func:`funad.data.images.discover_images`
    finds them), or a :class:`NoInputImagesError` naming the inputs and the suffixes looked for."""
    from funad.data.images import IMAGE_EXTENSIONS, discover_images

    paths = discover_images(inputs)
    if not paths:
        raise NoInputImagesError(f"no image files in {', '.join(inputs)} (folders are searched recursively "
                                 f"for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths
