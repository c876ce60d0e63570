#!/usr/bin/env bash
# Builds `hashtale --features cuda` on a machine without a GPU or a system CUDA toolkit.
#
#   scripts/build_cuda.sh            # release binary in $CUDA_TARGET_DIR/release/hashtale
#   scripts/build_cuda.sh --check    # compile and link the tests too (what CI runs)
#
# The toolkit comes from PyPI's CUDA 13.0 wheels in one venv ($CUDA_VENV): nvcc, nvvm and the
# crt headers compile candle's kernels to PTX (for CUDA_COMPUTE_CAP, default 90: H100/H200);
# cudart, cuBLAS, cuRAND and NVRTC are linked. 13.0 matches the lent GPU machines' CUDA 13.0
# driver and is within what cudarc 0.19 knows. The driver library is not in any wheel: the
# link uses a stub `libcuda.so` (soname libcuda.so.1) made from the `cu*` names cudarc binds,
# and the real driver is loaded when the binary runs on a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_VENV="${CUDA_VENV:-/var/tmp/hashtale-cuda-venv}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-/var/tmp/hashtale-cuda-target}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
CU=13.0.88

if [ ! -x "$CUDA_VENV/bin/nvcc-ok" ]; then
  python3 -m venv "$CUDA_VENV"
  "$CUDA_VENV/bin/pip" install -q \
    "nvidia-cuda-nvcc==$CU" "nvidia-nvvm==$CU" "nvidia-cuda-crt==$CU" \
    "nvidia-cuda-runtime==$CU" "nvidia-cuda-nvrtc==$CU" "nvidia-cuda-cccl==13.0.85" \
    "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35"
  printf '#!/bin/sh\n' > "$CUDA_VENV/bin/nvcc-ok" && chmod +x "$CUDA_VENV/bin/nvcc-ok"
fi
ROOT="$("$CUDA_VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
export CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT" PATH="$ROOT/bin:$PATH"
nvcc --version | tail -2

# Unversioned names for the linker (the wheels ship only libcudart.so.13 and kin), and the
# driver stub.
LINK="$CARGO_TARGET_DIR/cuda-link"
mkdir -p "$LINK"
for lib in "$ROOT"/lib/lib*.so.*; do
  base="$(basename "$lib")"
  ln -sf "$lib" "$LINK/${base%%.so.*}.so"
done
cargo fetch --quiet
CUDARC="$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.* | head -1)"
grep -rhoE '\bpub (unsafe )?fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys" \
  | sed -E 's/.*fn //' | sort -u | sed 's/.*/void &(void) {}/' > "$LINK/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK/libcuda.so" "$LINK/cuda_stub.c"
echo "libcuda stub: $(wc -l < "$LINK/cuda_stub.c") driver functions"

export LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LINK"
if [ "${1:-}" = "--check" ]; then
  # Compile and link only: there is no GPU here to run anything on.
  cargo build --features cuda --workspace --all-targets
else
  cargo build --release --features cuda
  echo "built $CARGO_TARGET_DIR/release/hashtale"
fi
