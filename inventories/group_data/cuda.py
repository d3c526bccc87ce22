# Settings for the cuda hosts of inventories/home.py.
accelerator = "cuda"
