#!/bin/sh
# sdinfra STAND-IN for AMD's amdgpu-install 5.3.50300-1 (TEST ONLY; not AMD software).
# Appends its arguments (one line) to /var/log/amdgpu-install.args, then "installs" ROCm by
# copying stand-in rocminfo/rocm-smi to /opt/rocm-5.3.0 (symlinked as /opt/rocm).  It adds no
# apt sources and installs no kernel module; /var/lib/amdgpu-install-standin/state says what the
# real installer would have done.  SDINFRA_STANDIN_ROOT (tests only) prefixes every path.
set -eu
R="${SDINFRA_STANDIN_ROOT:-}"
mkdir -p "$R/var/log"
printf '%s\n' "$*" >> "$R/var/log/amdgpu-install.args"

ALL_USECASES="dkms graphics multimedia workstation rocm rocmdev amf lrt opencl openclsdk hip hiplibsdk mllib mlsdk"
ROCM_USECASES="rocm rocmdev lrt opencl openclsdk hip hiplibsdk mllib mlsdk"
usecases=""
dkms=yes
action=install
for a in "$@"; do
    case "$a" in
        --usecase=*) usecases=$(printf '%s' "${a#--usecase=}" | tr ',' ' ') ;;
        --usecase)
            echo "E: Command line option --usecase is not understood in combination with the other options" >&2
            exit 100 ;;
        --no-dkms) dkms=no ;;
        --list-usecase) action=list ;;
        --uninstall) action=uninstall ;;
        -h|--help) action=help ;;
        *) ;;  # -y, --rocmrelease=..., --no-32, --accept-eula ...: recorded only
    esac
done

case "$action" in
help)
    echo "Usage: amdgpu-install [options...] (sdinfra stand-in: records its arguments)"
    echo "  --usecase=USECASE[,...]  --list-usecase  --no-dkms  --uninstall  -y"
    exit 0 ;;
list)
    echo "If --usecase option is not present, the default selection is \"graphics,opencl,hip\""
    echo "Available use cases:"
    for u in $ALL_USECASES; do echo "- $u"; done
    exit 0 ;;
uninstall)
    rm -rf "$R/opt/rocm-5.3.0" "$R/opt/rocm" "$R/var/lib/amdgpu-install-standin"
    echo "amdgpu-install (sdinfra stand-in): removed"
    exit 0 ;;
esac

[ -n "$usecases" ] || usecases="graphics opencl hip"
for u in $usecases; do
    case " $ALL_USECASES " in
        *" $u "*) ;;
        *) echo "ERROR: Unsupported use case: $u" >&2; exit 1 ;;
    esac
done
rocm=no
for u in $usecases; do
    case " $ROCM_USECASES " in *" $u "*) rocm=yes ;; esac
done
if [ "$rocm" = yes ]; then
    rm -rf "$R/opt/rocm-5.3.0"
    mkdir -p "$R/opt"
    cp -a "$R/usr/share/amdgpu-install-standin/rocm-5.3.0" "$R/opt/rocm-5.3.0"
    ln -sfn rocm-5.3.0 "$R/opt/rocm"
fi
mkdir -p "$R/var/lib/amdgpu-install-standin"
{
    # Unquoted on purpose: split into words, so one comma stands between use cases.
    # shellcheck disable=SC2086
    echo "usecases=$(echo $usecases | tr ' ' ',')"
    echo "dkms=$dkms"
    echo "rocm=$rocm"
} > "$R/var/lib/amdgpu-install-standin/state"
echo "amdgpu-install (sdinfra stand-in): use cases $usecases; kernel module (dkms): $dkms; ROCm user space: $rocm"
