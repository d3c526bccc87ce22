"""inventories/home.yml as a pyinfra inventory: pyinfra inventories/home_yaml.py deploy/site.py"""

from roles.inventory import from_yaml

globals().update(from_yaml(__file__, "home.yml"))
