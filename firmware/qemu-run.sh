#!/usr/bin/env bash
# Runs a firmware ELF in QEMU as a Cortex-M4 on the MPS2 AN386 board image.
#
#   qemu-run.sh ELF
#
# `-icount shift=6` ties QEMU's virtual clock to the instruction count (one
# instruction = 64 ns), so the CMSDK APB timer (25 MHz) ticks 40 ns per tick:
# instructions = ticks * 40 / 64. The programs do that sum themselves.
# Semihosting file I/O is relative to the current directory.
#
# The programs print their report as text on stderr; defmt log frames go to
# stdout and are decoded with `defmt-print` when it is installed (otherwise
# they are dropped). QEMU spins forever when its output pipe closes, so it
# always runs under `timeout` (QEMU_TIMEOUT seconds, default 900).
#
# The tests build the same QEMU line with `qemu_command` in
# tests/common/firmware.rs: keep the two alike.
set -euo pipefail
elf=${1:?usage: qemu-run.sh ELF}
qemu=(timeout --foreground -k 5 "${QEMU_TIMEOUT:-900}"
      qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic
      -semihosting-config enable=on,target=native -icount shift=6
      -kernel "$elf")
if command -v defmt-print >/dev/null; then
    "${qemu[@]}" | defmt-print -e "$elf"
else
    echo "qemu-run.sh: defmt-print not installed, dropping defmt log frames" \
         "(cargo install defmt-print)" >&2
    "${qemu[@]}" >/dev/null
fi
