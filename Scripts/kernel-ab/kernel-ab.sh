#!/bin/bash
# Paired A/B of the decode kernels: this tree's Sources/CChimeraKernels (A) against another git
# revision's (B), in one process (dev-time only; see pairs.c for the measurements).
#
#   Scripts/kernel-ab/kernel-ab.sh REVISION sequence qwen2 q8_0 [reps]   (GAP_US=g: g µs before each product)
#   Scripts/kernel-ab/kernel-ab.sh REVISION matrix 2048 5632 f16 [reps]
#   Scripts/kernel-ab/kernel-ab.sh REVISION attention 14 2 840 24 [reps]
#   Scripts/kernel-ab/kernel-ab.sh REVISION gemm 729 4304 1152 [reps] [threads]
#   Scripts/kernel-ab/kernel-ab.sh REVISION sequence-attention 577 16 64 [reps]
#
# B/A above 1 means B is faster. Needs clang and a CPU with AVX-512 for the AVX-512 kernels.
# Both sides are handed the same chk_matvec_part arrays: `sequence` and `matrix` need a B from the
# commit that gave the struct its `bias` (2026-12-01) or later.
# Both sides are compiled as the package compiles them (-O3, no -march=native: the kernels carry
# their own target attributes, and -march=native changed clang's register allocation — a micro-kernel
# unrolled here ran faster, and spilled accumulators in the package's build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
revision=${1:?usage: kernel-ab.sh REVISION sequence|matrix|attention|gemm|sequence-attention ...}; shift
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/B"
git -C "$root" archive "$revision" Sources/CChimeraKernels | tar -x -C "$work/B"
B="$work/B/Sources/CChimeraKernels" A="$root/Sources/CChimeraKernels"
# B's objects with every global symbol they define renamed B_* (references between them follow).
for f in kernels elementwise gemm; do clang -O3 -I "$B/include" -I "$B" -c "$B/$f.c" -o "$work/B_$f.o"; done
nm --defined-only -g "$work"/B_*.o | awk 'NF == 3 {print $3 " B_" $3}' | sort -u > "$work/rename"
for f in kernels elementwise gemm; do objcopy --redefine-syms="$work/rename" "$work/B_$f.o"; done
clang -O3 -I "$A/include" -I "$A" "$here/pairs.c" "$A"/kernels.c "$A"/elementwise.c "$A"/gemm.c "$work"/B_*.o \
    -lm -lpthread -o "$work/pairs"
"$work/pairs" "$@"
