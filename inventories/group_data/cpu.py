# Settings for the cpu hosts of inventories/home.py.
accelerator = "cpu"
