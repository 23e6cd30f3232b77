#!/bin/bash
# Paired A/B of the decode kernels: this tree's Sources/CChimeraKernels (A) against another git
# revision's (B), in one process (dev-time only; see pairs.c for the measurements).
#
#   Scripts/kernel-ab/kernel-ab.sh REVISION sequence qwen2 q8_0 [reps]
#   Scripts/kernel-ab/kernel-ab.sh REVISION matrix 2048 5632 f16 [reps]
#   Scripts/kernel-ab/kernel-ab.sh REVISION attention 14 2 840 24 [reps]
#
# B/A above 1 means B is faster. Needs clang and a CPU with AVX-512 for the AVX-512 kernels.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
revision=${1:?usage: kernel-ab.sh REVISION sequence|matrix|attention ...}; shift
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/B"
git -C "$root" archive "$revision" Sources/CChimeraKernels | tar -x -C "$work/B"
B="$work/B/Sources/CChimeraKernels" A="$root/Sources/CChimeraKernels"
# Every function the public headers declare, renamed in B's objects.
grep -ho '[a-z_]*chk_[a-z0-9_]*(' "$B"/include/*.h | tr -d '(' | grep '^chk_' | sort -u | awk '{print "#define " $1 " B_" $1}' > "$work/rename.h"
for f in kernels elementwise gemm; do
    clang -O3 -march=native -include "$work/rename.h" -I "$B/include" -I "$B" -c "$B/$f.c" -o "$work/B_$f.o"
done
clang -O3 -march=native -I "$A/include" -I "$A" "$here/pairs.c" "$A"/kernels.c "$A"/elementwise.c "$A"/gemm.c "$work"/B_*.o \
    -lm -lpthread -o "$work/pairs"
"$work/pairs" "$@"
