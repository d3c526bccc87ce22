# Settings for every host of inventories/home.py (a host's own data wins).
ssh_user = "sd"
_sudo = True

docker_users = ["sd"]  # root-equivalent on each host: see the README's security notes
rocm_users = ["sd"]
webui_timezone = "Asia/Jakarta"
