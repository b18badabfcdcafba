"""Names of the image types that tables, figures and rating sessions share.

An *image type* is ``3T``, ``7T`` or the ``model_name`` of a trained model (notebook 02: ``unet``,
``gan-unet``, ``unet-nodiag``, ...). Every module and notebook that shows one to a reader takes its name from
:func:`display_name`, so a table and a figure never spell the same model two ways.
"""

from __future__ import annotations

#: display names of the image types (model names are the ``model_name`` of notebook 02)
IMAGE_TYPE_NAMES = {
    "3T": "3T", "7T": "7T", "unet": "U-Net", "gan-unet": "GAN U-Net", "unet-nodiag": "U-Net nodiag",
    "gan-unet-nodiag": "GAN U-Net nodiag", "vnet": "V-Net", "watnet": "WATNet",
    "unet-mv-nodiag": "U-Net multi-view nodiag", "unet-mv-nodiag-axial": "U-Net multi-view nodiag, axial view",
}


def display_name(image_type: str) -> str:
    """The name figures and tables use for an image type (``gan-unet`` -> ``GAN U-Net``)."""
    return IMAGE_TYPE_NAMES.get(image_type, image_type)


def display_order(names) -> list:
    """``names`` (image types or their display names) in the order of :data:`IMAGE_TYPE_NAMES` (3T, the paper's
    models, the baselines, the multi-view variants, 7T), names it does not know after them in their given order."""
    known = {n: i for i, n in enumerate(IMAGE_TYPE_NAMES)}
    known.update({d: i for i, d in enumerate(IMAGE_TYPE_NAMES.values())})
    listed = list(dict.fromkeys(names))
    return sorted(listed, key=lambda n: (known.get(n, len(known)), listed.index(n)))
