# sdinfra STAND-IN for PyTorch (TEST ONLY): answers what status tooling and the web UI's
# launcher ask of torch, from the devices the container really has. The image's backend (the
# torch build a real image installs: +cpu, +rocm5.6 or +cu121) is SDINFRA_BACKEND, which the
# real Dockerfile sets too.
import glob
import os

__version__ = "2.1.2+standin"
_BACKEND = os.environ.get("SDINFRA_BACKEND", "cpu")


class version:
    # torch.version.hip is set in ROCm builds, torch.version.cuda in CUDA builds.
    hip = "5.6.31061-standin" if _BACKEND == "rocm" else None
    cuda = "12.1" if _BACKEND == "cuda" else None


def _devices():
    if _BACKEND == "rocm":
        # ROCm's runtime opens /dev/kfd and a DRM render node: without both HIP finds no GPU.
        return os.path.exists("/dev/kfd") and bool(glob.glob("/dev/dri/renderD*"))
    if _BACKEND == "cuda":
        # The NVIDIA container runtime puts these nodes into a container given a GPU.
        return os.path.exists("/dev/nvidiactl") and bool(glob.glob("/dev/nvidia[0-9]*"))
    return False


class cuda:
    @staticmethod
    def is_available():
        return _devices()

    @staticmethod
    def device_count():
        return 1 if _devices() else 0
