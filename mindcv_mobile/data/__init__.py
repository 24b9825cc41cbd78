"""Data box: datasets (ImageFolder, CIFAR-10), image files, transforms, loaders, and the digits tree."""
from .cifar import CIFAR10_CLASSES
from .dataset import DATASET_READERS, class_names, create_dataset
from .digits import write_digits_imagefolder
from .image_files import IMAGE_EXTENSIONS, pil_to_rgb_uint8, read_image
from .image_folder import is_split_folder, scan_image_folder
from .loader import create_loader
from .transforms import AUTO_AUGMENT_POLICIES, DATASET_INPUTS, INTERPOLATIONS, create_transforms

__all__ = [
    "create_dataset", "class_names", "scan_image_folder", "create_transforms", "create_loader",
    "write_digits_imagefolder", "read_image", "pil_to_rgb_uint8", "DATASET_READERS", "DATASET_INPUTS",
    "INTERPOLATIONS", "AUTO_AUGMENT_POLICIES", "IMAGE_EXTENSIONS", "CIFAR10_CLASSES", "is_split_folder",
]
