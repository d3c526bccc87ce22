# Settings for the rocm hosts of inventories/home.py.
accelerator = "rocm"
