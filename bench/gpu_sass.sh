#!/usr/bin/env bash
# The device's own ptxas on the generated kernels at the real shapes:
#   bench/gpu_sass.sh QUAMBAC OUT [LIKE...]      (LIKE defaults to: mamba2-2.7b mamba-2.8b mamba2-8b)
# For each LIKE, a one-layer synthesized model (vocabulary 8192) compiled to W4A8 and W8A8; its
# plan's PTX for sm_90 (`quambac cuda source --arch sm_90`) built by the toolkit's ptxas (the
# version the driver's JIT has, unlike the NVRTC the tests use) and read by `quambac cuda sass`
# (its cuobjdump listing): any kernel that uses a load before its dependency wait is listed. The
# registers and spills ptxas reports go to OUT/sass-LIKE-TARGET.txt. Exit status 1 when a kernel
# is listed.
set -uo pipefail
Q=$1; OUT=$2; shift 2
likes=("$@")
[ ${#likes[@]} -eq 0 ] && likes=(mamba2-2.7b mamba-2.8b mamba2-8b)
export PATH="/usr/local/cuda/bin:$PATH" LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if ! command -v ptxas >/dev/null || ! command -v cuobjdump >/dev/null; then
  echo "gpu_sass: no ptxas / cuobjdump here: skipped"
  exit 0
fi
mkdir -p "$OUT/sass"
ptxas --version | tail -1
listed=0
for like in "${likes[@]}"; do
  "$Q" synth --like "$like" --layers 1 --vocab 8192 -o "$OUT/sass/$like" >/dev/null || { echo "synth $like failed"; listed=1; continue; }
  for t in w4a8 w8a8; do
    base=$OUT/sass/$like-$t
    "$Q" compile "$OUT/sass/$like" --target "h100-$t" --no-gptq --calib-samples 1 --calib-len 16 -o "$base.qmb" >/dev/null 2>&1 &&
      "$Q" cuda source "$base.qmb" -o "$base.cu" --arch sm_90 2>/dev/null &&
      ptxas -arch=sm_90 -v "$base.ptx" -o "$base.cubin" > "$OUT/sass-$like-$t.txt" 2>&1 || { echo "building $like $t failed"; listed=1; continue; }
    cuobjdump -sass "$base.cubin" > "$base.sass" && "$Q" cuda sass "$base.sass" || listed=1
  done
done
exit $listed
