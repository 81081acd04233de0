"""Datasets: the data contract, the built-in sets, image folders, ``.npz`` files and downloads."""

from lamina.data.base import DATASETS as DATASETS
from lamina.data.base import Dataset as Dataset
from lamina.data.base import Preprocess as Preprocess
from lamina.data.base import Split as Split
from lamina.data.base import build_dataset as build_dataset
from lamina.data.builtin import cache_dir as cache_dir
from lamina.data.download import download as download
from lamina.data.download import sha256_file as sha256_file
from lamina.data.idx import read_idx as read_idx
from lamina.data.images import load_image as load_image
from lamina.data.images import load_image_folder as load_image_folder
from lamina.data.images import load_npz as load_npz
from lamina.data.info import describe as describe
from lamina.data.info import sample_grid as sample_grid
from lamina.data.sources import dataset_status as dataset_status
from lamina.data.sources import fetch as fetch
from lamina.data.sources import load as load
