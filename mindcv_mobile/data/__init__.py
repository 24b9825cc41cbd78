"""Data box: datasets (ImageFolder, CIFAR-10), transforms, loaders, and the digits tree."""
from .dataset import (CIFAR10_CLASSES, DATASET_READERS, IMAGE_EXTENSIONS, class_names,
                      create_dataset, scan_image_folder)
from .digits import write_digits_imagefolder
from .loader import create_loader
from .transforms import (AUTO_AUGMENT_POLICIES, DATASET_INPUTS, INTERPOLATIONS,
                         create_transforms)

__all__ = [
    "create_dataset", "class_names", "scan_image_folder", "create_transforms", "create_loader",
    "write_digits_imagefolder", "DATASET_READERS", "DATASET_INPUTS", "INTERPOLATIONS",
    "AUTO_AUGMENT_POLICIES", "IMAGE_EXTENSIONS", "CIFAR10_CLASSES",
]
