# sdinfra web UI STAND-IN (TEST ONLY; not AUTOMATIC1111's stable-diffusion-webui).
# launch.py of v1.10.1 (82a973c): the launcher's module-level names, and main() preparing the
# environment unless --skip-prepare-environment, then start().
from modules import launch_utils

args = launch_utils.args
prepare_environment = launch_utils.prepare_environment
start = launch_utils.start


def main():
    # launch.py main(): dump_sysinfo exits; --skip-prepare-environment skips the checks.
    if args.dump_sysinfo:
        print("sysinfo is not kept by the stand-in")
        raise SystemExit(0)
    if not args.skip_prepare_environment:
        prepare_environment()
    start()


if __name__ == "__main__":
    main()
