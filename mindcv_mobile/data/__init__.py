"""Data box: datasets (ImageFolder, CIFAR-10/100, MNIST) and their downloads, image files,
transforms, loaders, and the digits tree."""

from .auto_augment import AUTO_AUGMENT_POLICIES
from .cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from .dataset import DATASET_DOWNLOADS, DATASET_READERS, class_names, create_dataset, download_dataset
from .digits import write_digits_imagefolder
from .image_files import IMAGE_EXTENSIONS
from .image_folder import is_split_folder, load_index, pil_to_rgb_uint8, read_image, scan_image_folder
from .loader import create_loader
from .mnist import MNIST_CLASSES
from .transforms import DATASET_INPUTS, INTERPOLATIONS, create_transforms

__all__ = [
    "create_dataset",
    "class_names",
    "scan_image_folder",
    "load_index",
    "create_transforms",
    "create_loader",
    "write_digits_imagefolder",
    "read_image",
    "pil_to_rgb_uint8",
    "DATASET_READERS",
    "DATASET_INPUTS",
    "INTERPOLATIONS",
    "AUTO_AUGMENT_POLICIES",
    "IMAGE_EXTENSIONS",
    "CIFAR10_CLASSES",
    "is_split_folder",
    "CIFAR100_CLASSES",
    "MNIST_CLASSES",
    "DATASET_DOWNLOADS",
    "download_dataset",
]
