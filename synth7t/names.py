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
}


def display_name(image_type: str) -> str:
    """The name figures and tables use for an image type (``gan-unet`` -> ``GAN U-Net``)."""
    return IMAGE_TYPE_NAMES.get(image_type, image_type)
